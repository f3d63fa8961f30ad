//! A newline line splitter for byte streams read in arbitrary pieces.
//!
//! [`LineSplitter::feed`] takes the next piece of the stream (a file read,
//! a TCP read) and returns a [`Lines`] cursor over the lines that piece
//! completes. A line is the bytes up to, not including, `\n`; with
//! [`CarriageReturn::Strip`] a `\r` right before the `\n` is removed too.
//!
//! # Memory and copies
//!
//! A line that lies inside the fed piece is returned as a slice of it. A
//! line that spans pieces is assembled in the splitter's buffer, which
//! holds at most `max_line_bytes` (+1 for a possible `\r`) bytes: the rest
//! of an overlong line is only counted, never stored.
//!
//! # Overlong lines
//!
//! A line longer than [`LineOptions::max_line_bytes`] (after the `\r` is
//! stripped) is handled by its [`Overlong`] policy once its newline
//! arrives: `Truncate` emits its first `max_line_bytes` bytes, once, with
//! [`Line::truncated`] set; `Drop` emits nothing. Both are counted
//! ([`LineSplitter::truncated_lines`], [`LineSplitter::dropped_lines`]).
//! Waiting for the newline keeps [`Line::end_offset`] a true line boundary.
//!
//! # Offsets
//!
//! The splitter counts every byte it consumes. [`Line::end_offset`] is the
//! stream offset just after the line's `\n` (or after the last byte, for
//! the final unterminated line of [`LineSplitter::finish`]), and
//! [`LineSplitter::resume_offset`] is the start of the line in progress:
//! reading again from there yields no line twice and loses none.
//!
//! # Stopping early
//!
//! A [`Lines`] cursor may be dropped before it returns `None`. The splitter
//! is then left exactly as if only the first [`Lines::consumed`] bytes of
//! the piece had been fed; the caller feeds the rest again later.

use memchr::memchr;

/// What to do with the `\r` of a `\r\n` line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CarriageReturn {
    /// Keep it as part of the line.
    Keep,
    /// Remove one `\r` right before the `\n` (and at the end of the final,
    /// unterminated line).
    #[default]
    Strip,
}

/// What to do with a line longer than the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlong {
    /// Emit the first `max_line_bytes` bytes once and discard the rest up
    /// to the next newline.
    #[default]
    Truncate,
    /// Discard the whole line.
    Drop,
}

/// Configuration of a [`LineSplitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineOptions {
    /// The longest line emitted, in bytes, without the line ending.
    pub max_line_bytes: usize,
    /// The policy for longer lines.
    pub overlong: Overlong,
    /// Whether a `\r` before the `\n` is stripped.
    pub carriage_return: CarriageReturn,
}

impl LineOptions {
    /// The default maximum line length: 1 MiB.
    pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            max_line_bytes: Self::DEFAULT_MAX_LINE_BYTES,
            overlong: Overlong::default(),
            carriage_return: CarriageReturn::default(),
        }
    }
}

/// One line handed out by a [`Lines`] cursor or [`LineSplitter::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line, without its line ending; at most `max_line_bytes` long.
    pub bytes: &'a [u8],
    /// The stream offset just after the line (after its `\n`).
    pub end_offset: u64,
    /// Whether the line was longer than the maximum and cut.
    pub truncated: bool,
}

/// Splits a byte stream, fed in arbitrary pieces, into lines.
///
/// See the [module docs](self) for the rules.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    options: LineOptions,
    /// The stored prefix of the line in progress: at most `stored_limit()`
    /// bytes.
    partial: Vec<u8>,
    /// Length of the line in progress so far (stored or not), without `\n`.
    line_len: u64,
    /// `partial` holds a line already handed out; clear it before reuse.
    partial_emitted: bool,
    /// Bytes consumed so far.
    offset: u64,
    truncated: u64,
    dropped: u64,
}

impl LineSplitter {
    /// A splitter at stream offset 0.
    pub fn new(options: LineOptions) -> Self {
        Self::starting_at(options, 0)
    }

    /// A splitter whose first byte is at stream offset `offset` (a file
    /// source resuming in the middle of a file).
    pub fn starting_at(options: LineOptions, offset: u64) -> Self {
        LineSplitter {
            options,
            partial: Vec::new(),
            line_len: 0,
            partial_emitted: false,
            offset,
            truncated: 0,
            dropped: 0,
        }
    }

    /// The options this splitter was made with.
    pub fn options(&self) -> &LineOptions {
        &self.options
    }

    /// Feeds the next piece of the stream; the returned cursor hands out
    /// the lines it completes.
    pub fn feed<'s, 'b>(&'s mut self, piece: &'b [u8]) -> Lines<'s, 'b> {
        Lines {
            splitter: self,
            piece,
            position: 0,
        }
    }

    /// Ends the stream: returns the final line if the stream did not end
    /// with `\n` (subject to the same length rules), and resets the line in
    /// progress. The offset is kept, so the splitter may be fed again.
    pub fn finish(&mut self) -> Option<Line<'_>> {
        self.clear_emitted();
        if self.line_len == 0 {
            return None;
        }
        let closed = self.close_partial()?;
        Some(self.closed_line(closed))
    }

    /// Bytes consumed so far, plus the starting offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The stream offset where the line in progress starts: every line
    /// before it has been handed out (or dropped).
    pub fn resume_offset(&self) -> u64 {
        let pending = if self.partial_emitted {
            0
        } else {
            self.line_len
        };
        self.offset - pending
    }

    /// Bytes of the line in progress, stored or only counted.
    pub fn pending_bytes(&self) -> u64 {
        if self.partial_emitted {
            0
        } else {
            self.line_len
        }
    }

    /// Lines emitted cut to the maximum length so far.
    pub fn truncated_lines(&self) -> u64 {
        self.truncated
    }

    /// Lines discarded for being too long so far.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped
    }

    fn clear_emitted(&mut self) {
        if self.partial_emitted {
            self.partial.clear();
            self.partial_emitted = false;
        }
    }

    /// How many bytes of a line in progress are worth storing: the maximum,
    /// plus one for a `\r` that may turn out to precede the `\n`.
    fn stored_limit(&self) -> usize {
        match self.options.carriage_return {
            CarriageReturn::Keep => self.options.max_line_bytes,
            CarriageReturn::Strip => self.options.max_line_bytes.saturating_add(1),
        }
    }

    /// Appends a piece of the line in progress, storing only what fits.
    fn absorb(&mut self, bytes: &[u8]) {
        self.line_len += bytes.len() as u64;
        let room = self.stored_limit().saturating_sub(self.partial.len());
        if room > 0 && !(self.options.overlong == Overlong::Drop && self.overflowed()) {
            self.partial
                .extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
    }

    /// The line in progress is already longer than anything storable.
    fn overflowed(&self) -> bool {
        self.line_len > self.stored_limit() as u64
    }

    /// The length of the line's content once a trailing `\r` is stripped.
    fn content_len(&self, line: &[u8]) -> usize {
        match (self.options.carriage_return, line.last()) {
            (CarriageReturn::Strip, Some(b'\r')) => line.len() - 1,
            _ => line.len(),
        }
    }

    /// Closes the line assembled in `partial` (its end just consumed):
    /// returns the length to hand out and whether it was truncated, or
    /// `None` if the line is dropped. Resets the line in progress.
    fn close_partial(&mut self) -> Option<(usize, bool)> {
        let overflowed = self.overflowed();
        self.line_len = 0;
        let max = self.options.max_line_bytes;
        let content = if overflowed {
            usize::MAX
        } else {
            self.content_len(&self.partial)
        };
        if content <= max {
            self.partial_emitted = true;
            return Some((content, false));
        }
        match self.options.overlong {
            Overlong::Truncate => {
                self.truncated += 1;
                self.partial_emitted = true;
                Some((max, true))
            }
            Overlong::Drop => {
                self.dropped += 1;
                self.partial.clear();
                None
            }
        }
    }

    /// The line `close_partial` just closed.
    fn closed_line(&self, (len, truncated): (usize, bool)) -> Line<'_> {
        Line {
            bytes: &self.partial[..len],
            end_offset: self.offset,
            truncated,
        }
    }
}

/// The lines completed by one piece fed to a [`LineSplitter`].
///
/// Not an [`Iterator`]: a line may borrow the splitter's own buffer, so
/// each one lives until the next call of [`Lines::next`]. Use
/// `while let Some(line) = lines.next()`.
#[derive(Debug)]
#[must_use = "the lines are only split when `next` is called"]
pub struct Lines<'s, 'b> {
    splitter: &'s mut LineSplitter,
    piece: &'b [u8],
    position: usize,
}

impl Lines<'_, '_> {
    /// The next complete line, or `None` when the piece is used up (its
    /// unterminated tail is then kept in the splitter).
    #[allow(clippy::should_implement_trait)] // a lending cursor, see the type docs
    pub fn next(&mut self) -> Option<Line<'_>> {
        self.splitter.clear_emitted();
        loop {
            let rest = &self.piece[self.position..];
            if rest.is_empty() {
                return None;
            }
            let Some(newline) = memchr(b'\n', rest) else {
                self.splitter.absorb(rest);
                self.splitter.offset += rest.len() as u64;
                self.position = self.piece.len();
                return None;
            };
            self.position += newline + 1;
            self.splitter.offset += newline as u64 + 1;
            let piece_of_line = &rest[..newline];
            if self.splitter.line_len > 0 {
                // The line began in an earlier piece: assemble it.
                self.splitter.absorb(piece_of_line);
                match self.splitter.close_partial() {
                    Some(closed) => return Some(self.splitter.closed_line(closed)),
                    None => continue,
                }
            }
            // The whole line lies inside this piece: hand out a slice of it.
            let splitter = &mut *self.splitter;
            let content = splitter.content_len(piece_of_line);
            let max = splitter.options.max_line_bytes;
            if content <= max {
                return Some(Line {
                    bytes: &rest[..content],
                    end_offset: splitter.offset,
                    truncated: false,
                });
            }
            match splitter.options.overlong {
                Overlong::Truncate => {
                    splitter.truncated += 1;
                    return Some(Line {
                        bytes: &rest[..max],
                        end_offset: splitter.offset,
                        truncated: true,
                    });
                }
                Overlong::Drop => splitter.dropped += 1,
            }
        }
    }

    /// Bytes of the piece consumed so far.
    pub fn consumed(&self) -> usize {
        self.position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Collected = Vec<(Vec<u8>, u64, bool)>;
    /// Name, options, pieces, lines, (truncated, dropped).
    type Case<'a> = (&'a str, LineOptions, Vec<&'a [u8]>, Collected, (u64, u64));

    fn options(
        max_line_bytes: usize,
        overlong: Overlong,
        carriage_return: CarriageReturn,
    ) -> LineOptions {
        LineOptions {
            max_line_bytes,
            overlong,
            carriage_return,
        }
    }

    /// Feeds every piece, then finishes; returns all lines.
    fn run(splitter: &mut LineSplitter, pieces: &[&[u8]]) -> Collected {
        let mut out = Vec::new();
        for piece in pieces {
            let mut lines = splitter.feed(piece);
            while let Some(line) = lines.next() {
                out.push((line.bytes.to_vec(), line.end_offset, line.truncated));
            }
            assert_eq!(lines.consumed(), piece.len());
        }
        if let Some(line) = splitter.finish() {
            out.push((line.bytes.to_vec(), line.end_offset, line.truncated));
        }
        out
    }

    fn line(bytes: &str, end: u64) -> (Vec<u8>, u64, bool) {
        (bytes.as_bytes().to_vec(), end, false)
    }

    fn cut(bytes: &str, end: u64) -> (Vec<u8>, u64, bool) {
        (bytes.as_bytes().to_vec(), end, true)
    }

    #[test]
    fn splits_as_the_table_says() {
        use CarriageReturn::{Keep, Strip};
        use Overlong::{Drop, Truncate};
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("empty stream", options(8, Truncate, Strip), vec![], vec![], (0, 0)),
            ("one piece", options(8, Truncate, Strip), vec![b"a\nbb\n"], vec![line("a", 2), line("bb", 5)], (0, 0)),
            ("empty lines", options(8, Truncate, Strip), vec![b"\n\n"], vec![line("", 1), line("", 2)], (0, 0)),
            ("spanning", options(8, Truncate, Strip), vec![b"ab", b"c", b"d\ne"], vec![line("abcd", 5), line("e", 6)], (0, 0)),
            ("newline alone", options(8, Truncate, Strip), vec![b"ab", b"\n", b"\n"], vec![line("ab", 3), line("", 4)], (0, 0)),
            ("crlf stripped", options(8, Truncate, Strip), vec![b"a\r\nb\r", b"\nc\r"], vec![line("a", 3), line("b", 6), line("c", 8)], (0, 0)),
            ("crlf kept", options(8, Truncate, Keep), vec![b"a\r\nb\r", b"\n"], vec![line("a\r", 3), line("b\r", 6)], (0, 0)),
            ("only one cr stripped", options(8, Truncate, Strip), vec![b"a\r\r\n"], vec![line("a\r", 4)], (0, 0)),
            ("cr in the middle kept", options(8, Truncate, Strip), vec![b"a\rb\n"], vec![line("a\rb", 4)], (0, 0)),
            ("exactly max", options(3, Truncate, Strip), vec![b"abc\n"], vec![line("abc", 4)], (0, 0)),
            ("max plus stripped cr", options(3, Truncate, Strip), vec![b"ab", b"c\r", b"\n"], vec![line("abc", 5)], (0, 0)),
            ("max plus kept cr", options(3, Truncate, Keep), vec![b"abc\r\n"], vec![cut("abc", 5)], (1, 0)),
            ("truncated in piece", options(3, Truncate, Strip), vec![b"abcdef\nxy\n"], vec![cut("abc", 7), line("xy", 10)], (1, 0)),
            ("truncated spanning", options(3, Truncate, Strip), vec![b"ab", b"cdef", b"gh\nxy\n"], vec![cut("abc", 9), line("xy", 12)], (1, 0)),
            ("truncated with cr", options(3, Truncate, Strip), vec![b"abcd\r\n"], vec![cut("abc", 6)], (1, 0)),
            ("dropped in piece", options(3, Drop, Strip), vec![b"abcdef\nxy\n"], vec![line("xy", 10)], (0, 1)),
            ("dropped spanning", options(3, Drop, Strip), vec![b"ab", b"cdef", b"gh\nxy\n"], vec![line("xy", 12)], (0, 1)),
            ("final line", options(8, Truncate, Strip), vec![b"a\nbc"], vec![line("a", 2), line("bc", 4)], (0, 0)),
            ("final overlong truncated", options(2, Truncate, Strip), vec![b"abc"], vec![cut("ab", 3)], (1, 0)),
            ("final overlong dropped", options(2, Drop, Strip), vec![b"a\nabc"], vec![line("a", 2)], (0, 1)),
            ("zero max", options(0, Truncate, Strip), vec![b"\na\n"], vec![line("", 1), cut("", 3)], (1, 0)),
        ];
        for (name, options, pieces, expected, (truncated, dropped)) in cases {
            let mut splitter = LineSplitter::new(options);
            assert_eq!(run(&mut splitter, &pieces), expected, "{name}");
            assert_eq!(splitter.truncated_lines(), truncated, "{name}: truncated");
            assert_eq!(splitter.dropped_lines(), dropped, "{name}: dropped");
            let total: usize = pieces.iter().map(|p| p.len()).sum();
            assert_eq!(splitter.offset(), total as u64, "{name}: offset");
        }
    }

    #[test]
    fn lines_inside_the_piece_are_not_copied() {
        let piece = b"one\ntwo\n";
        let mut splitter = LineSplitter::new(LineOptions::default());
        let mut lines = splitter.feed(piece);
        let first = lines.next().expect("a line");
        assert!(std::ptr::eq(first.bytes.as_ptr(), piece.as_ptr()));
        let second = lines.next().expect("a line");
        assert!(std::ptr::eq(second.bytes.as_ptr(), piece[4..].as_ptr()));
    }

    #[test]
    fn memory_of_an_endless_line_stays_bounded() {
        let options = LineOptions {
            max_line_bytes: 100,
            ..LineOptions::default()
        };
        let mut splitter = LineSplitter::new(options);
        let piece = vec![b'x'; 4096];
        for _ in 0..256 {
            let mut lines = splitter.feed(&piece);
            assert!(lines.next().is_none());
        }
        assert_eq!(splitter.pending_bytes(), 256 * 4096);
        assert!(
            splitter.partial.capacity() <= 4096,
            "{}",
            splitter.partial.capacity()
        );
        assert!(splitter.partial.len() <= 101);
        let mut lines = splitter.feed(b"\n");
        let line = lines.next().expect("the truncated line");
        assert_eq!(line.bytes, &piece[..100]);
        assert!(line.truncated);
    }

    #[test]
    fn resume_offset_is_the_start_of_the_line_in_progress() {
        let mut splitter = LineSplitter::starting_at(LineOptions::default(), 1000);
        let mut lines = splitter.feed(b"abc\nde");
        assert_eq!(lines.next().map(|l| l.end_offset), Some(1004));
        assert!(lines.next().is_none());
        assert_eq!(splitter.offset(), 1006);
        assert_eq!(splitter.resume_offset(), 1004);
        let mut lines = splitter.feed(b"f\n");
        assert_eq!(
            lines.next().map(|l| (l.bytes.to_vec(), l.end_offset)),
            Some((b"def".to_vec(), 1008))
        );
        drop(lines);
        assert_eq!(splitter.resume_offset(), 1008);
        assert_eq!(splitter.pending_bytes(), 0);
    }

    #[test]
    fn a_cursor_dropped_early_leaves_the_rest_unconsumed() {
        let mut splitter = LineSplitter::new(LineOptions::default());
        {
            let mut lines = splitter.feed(b"x");
            assert!(lines.next().is_none());
        }
        let piece = b"a\nb\nc\n";
        let consumed = {
            let mut lines = splitter.feed(piece);
            assert_eq!(lines.next().map(|l| l.bytes.to_vec()), Some(b"xa".to_vec()));
            lines.consumed()
        };
        assert_eq!(consumed, 2);
        assert_eq!(splitter.offset(), 3);
        let rest = run(&mut splitter, &[&piece[consumed..]]);
        assert_eq!(rest, vec![line("b", 5), line("c", 7)]);
    }

    #[test]
    fn finish_resets_the_line_in_progress() {
        let mut splitter = LineSplitter::new(LineOptions::default());
        assert_eq!(run(&mut splitter, &[b"ab"]), vec![line("ab", 2)]);
        assert!(splitter.finish().is_none());
        assert_eq!(run(&mut splitter, &[b"c\n"]), vec![line("c", 4)]);
    }
}
