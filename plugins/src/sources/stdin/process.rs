//! Standard input, shared by every `stdin` source the process starts.
//!
//! A reload that restarts a `stdin` source (its transforms changed) stops
//! the old source and starts a new one on the same input. Two things would
//! lose or split records at that seam, and [`SharedInput`] removes both:
//!
//! * tokio's `Stdin` reads on a blocking thread into a buffer of its own;
//!   dropping the handle drops what that read returned. The process keeps
//!   one handle ([`process_stdin`]) for its whole life instead.
//! * A source that stops holding half a line emits it as a record, and the
//!   next source starts mid-line. `SharedInput` therefore hands out whole
//!   lines only and keeps a trailing partial line for the next read, so a
//!   stopped source never holds one. The exceptions are a line longer than
//!   the reader's buffer (handed out in pieces) and the end of input (the
//!   last, unterminated line is handed out).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from the input at most per read.
const READ_BYTES: usize = 64 * 1024;

/// The reader of this process's standard input; every call returns a handle
/// to the same reader.
pub fn process_stdin() -> SharedInput<tokio::io::Stdin> {
    static STDIN: OnceLock<SharedInput<tokio::io::Stdin>> = OnceLock::new();
    STDIN
        .get_or_init(|| SharedInput::new(tokio::io::stdin()))
        .clone()
}

/// A line-preserving reader that outlives the sources reading it; clones
/// share the input and what was read from it. One source reads it at a time.
#[derive(Debug)]
pub struct SharedInput<R>(Arc<Mutex<Held<R>>>);

impl<R> Clone for SharedInput<R> {
    fn clone(&self) -> Self {
        SharedInput(self.0.clone())
    }
}

#[derive(Debug)]
struct Held<R> {
    input: R,
    /// Read from `input`, not yet handed out: `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    /// `input` returned end of file.
    ended: bool,
    scratch: Box<[u8]>,
}

impl<R> SharedInput<R> {
    pub(super) fn new(input: R) -> Self {
        SharedInput(Arc::new(Mutex::new(Held {
            input,
            buffer: Vec::new(),
            start: 0,
            ended: false,
            scratch: vec![0; READ_BYTES].into_boxed_slice(),
        })))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SharedInput<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let held = &mut *guard;
        let room = out.remaining();
        if room == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let pending = &held.buffer[held.start..];
            let window = &pending[..pending.len().min(room)];
            let take = if held.ended {
                window.len()
            } else if let Some(newline) = window.iter().rposition(|&b| b == b'\n') {
                newline + 1
            } else if pending.len() >= room {
                // A line longer than the caller's buffer: hand it out in pieces.
                room
            } else {
                0
            };
            if take > 0 || held.ended {
                out.put_slice(&pending[..take]);
                held.start += take;
                if held.start == held.buffer.len() {
                    held.buffer.clear();
                    held.start = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut held.scratch);
            ready!(Pin::new(&mut held.input).poll_read(cx, &mut read))?;
            let filled = read.filled().len();
            if filled == 0 {
                held.ended = true;
            } else {
                held.buffer.drain(..held.start);
                held.start = 0;
                held.buffer.extend_from_slice(&held.scratch[..filled]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_some(input: &mut SharedInput<tokio::io::DuplexStream>, size: usize) -> Vec<u8> {
        let mut buffer = vec![0; size];
        let n = input.read(&mut buffer).await.unwrap();
        buffer.truncate(n);
        buffer
    }

    #[tokio::test]
    async fn hands_out_whole_lines_and_keeps_the_partial_one_for_the_next_reader() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        let mut first = SharedInput::new(reader);
        writer.write_all(b"one\ntwo\nthr").await.unwrap();
        assert_eq!(read_some(&mut first, 100).await, b"one\ntwo\n");
        // The first reader stops; a second one on the same input goes on
        // where it stopped, with the whole third line.
        let mut second = first.clone();
        drop(first);
        writer.write_all(b"ee\nfour").await.unwrap();
        assert_eq!(read_some(&mut second, 100).await, b"three\n");
        drop(writer);
        assert_eq!(read_some(&mut second, 100).await, b"four");
        assert_eq!(read_some(&mut second, 100).await, b"");
    }

    #[tokio::test]
    async fn a_small_buffer_gets_the_whole_lines_that_fit_and_a_long_line_in_pieces() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        let mut input = SharedInput::new(reader);
        writer.write_all(b"ab\ncd\nefghijkl\n").await.unwrap();
        assert_eq!(read_some(&mut input, 7).await, b"ab\ncd\n");
        assert_eq!(read_some(&mut input, 4).await, b"efgh");
        assert_eq!(read_some(&mut input, 4).await, b"ijkl");
        assert_eq!(read_some(&mut input, 4).await, b"\n");
    }
}
