//! RFC 6587 octet-counting framing: `MSG-LEN SP MSG`, back to back.
//!
//! `MSG-LEN` is a decimal number without leading zeros (`NONZERO-DIGIT
//! *DIGIT`), and exactly that many bytes of message follow the space. The
//! decoder hands out each message as a [`Frame`]: a slice of the fed piece
//! when it lies inside it, otherwise assembled in a buffer that never grows
//! past [`OctetDecoder::max_frame_bytes`].
//!
//! # Tolerance
//!
//! Some senders end each frame with a newline that the count does not
//! cover. `\n` and `\r` *before* a length prefix are therefore skipped;
//! anything else out of place is an error.
//!
//! # Errors and resynchronisation
//!
//! Octet counting has no delimiter to find the next frame by, so the rule
//! is: resynchronise only where the stream itself says where the next
//! frame starts.
//!
//! * [`OctetError::FrameTooLarge`] is **not fatal**: the length is known,
//!   so the decoder reports the error, skips exactly that many bytes
//!   without storing them, and carries on with the next frame.
//! * A bad length prefix ([`OctetError::BadLength`],
//!   [`OctetError::MissingLength`], [`OctetError::LeadingZero`],
//!   [`OctetError::LengthOverflow`]) is **fatal**: where the next frame
//!   starts is unknown, and guessing (say, scanning for digits) would turn
//!   message text into frames. The decoder stays failed: every later
//!   [`OctetDecoder::feed`] reports the same error once and consumes
//!   nothing. The caller should close the connection.
//!
//! Check [`OctetError::is_fatal`] to tell them apart.

use thiserror::Error;

/// A framing error. See the [module docs](self) for which ones are fatal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OctetError {
    /// A byte other than a digit or the space ended the length prefix.
    #[error(
        "bad octet-counting frame: expected a digit or a space in the length prefix at stream offset {offset}, found byte 0x{byte:02x}"
    )]
    BadLength {
        /// The unexpected byte.
        byte: u8,
        /// Its stream offset.
        offset: u64,
    },
    /// A space came before any digit.
    #[error("bad octet-counting frame: the length prefix at stream offset {offset} has no digits")]
    MissingLength {
        /// Stream offset of the space.
        offset: u64,
    },
    /// The length starts with `0` (a zero length or zero padding).
    #[error(
        "bad octet-counting frame: the length prefix at stream offset {offset} starts with 0 (lengths are at least 1 and not zero-padded)"
    )]
    LeadingZero {
        /// Stream offset of the `0`.
        offset: u64,
    },
    /// The length prefix has more digits than any length could need.
    #[error(
        "bad octet-counting frame: the length prefix at stream offset {offset} is longer than {MAX_LENGTH_DIGITS} digits"
    )]
    LengthOverflow {
        /// Stream offset of the digit too many.
        offset: u64,
    },
    /// The frame is longer than the maximum; it is skipped.
    #[error(
        "octet-counting frame of {length} bytes at stream offset {offset} exceeds the maximum of {max} bytes; skipped"
    )]
    FrameTooLarge {
        /// The declared length.
        length: u64,
        /// The configured maximum.
        max: usize,
        /// Stream offset of the frame's first message byte.
        offset: u64,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside an octet-counting frame at stream offset {offset}")]
    Truncated {
        /// Stream offset of the end of the stream.
        offset: u64,
    },
}

impl OctetError {
    /// Whether the decoder has given up on the stream (see the module docs).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            OctetError::FrameTooLarge { .. } | OctetError::Truncated { .. }
        )
    }
}

/// The most digits a length prefix may have (`u64::MAX` has 20).
pub const MAX_LENGTH_DIGITS: u32 = 20;

/// One message handed out by a [`Frames`] cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message bytes (without the length prefix).
    pub bytes: &'a [u8],
    /// The stream offset just after the message.
    pub end_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading the length prefix; `digits == 0` before its first digit.
    Length { value: u64, digits: u32 },
    /// Reading a message of `length` bytes; what spans pieces is in `partial`.
    Body { length: usize },
    /// Skipping the rest of an oversized message.
    Skip { remaining: u64 },
    /// Gave up on the stream.
    Failed(OctetError),
}

const START: State = State::Length {
    value: 0,
    digits: 0,
};

/// Decodes an octet-counted stream fed in arbitrary pieces.
#[derive(Debug, Clone)]
pub struct OctetDecoder {
    max_frame_bytes: usize,
    state: State,
    partial: Vec<u8>,
    partial_emitted: bool,
    offset: u64,
    oversized: u64,
}

impl OctetDecoder {
    /// A decoder that accepts messages up to `max_frame_bytes` long.
    pub fn new(max_frame_bytes: usize) -> Self {
        OctetDecoder {
            max_frame_bytes,
            state: START,
            partial: Vec::new(),
            partial_emitted: false,
            offset: 0,
            oversized: 0,
        }
    }

    /// The longest message accepted.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Feeds the next piece of the stream; the returned cursor hands out
    /// the frames (and errors) it completes.
    pub fn feed<'s, 'b>(&'s mut self, piece: &'b [u8]) -> Frames<'s, 'b> {
        Frames {
            decoder: self,
            piece,
            position: 0,
            failure_reported: false,
        }
    }

    /// Ends the stream: an error if it ended inside a frame (or the decoder
    /// had failed). Resets the decoder to expect a new frame.
    pub fn finish(&mut self) -> Result<(), OctetError> {
        self.partial.clear();
        self.partial_emitted = false;
        let state = std::mem::replace(&mut self.state, START);
        match state {
            State::Length { digits: 0, .. } => Ok(()),
            State::Failed(error) => {
                self.state = State::Failed(error.clone());
                Err(error)
            }
            _ => Err(OctetError::Truncated {
                offset: self.offset,
            }),
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether a fatal error stopped the decoder.
    pub fn has_failed(&self) -> bool {
        matches!(self.state, State::Failed(_))
    }

    /// Frames skipped for exceeding the maximum so far.
    pub fn oversized_frames(&self) -> u64 {
        self.oversized
    }

    fn fail(&mut self, error: OctetError) -> OctetError {
        self.state = State::Failed(error.clone());
        error
    }
}

/// The frames completed by one piece fed to an [`OctetDecoder`].
///
/// A lending cursor like [`super::lines::Lines`]: use
/// `while let Some(frame) = frames.next()`. Dropped early, the decoder is
/// left as if only [`Frames::consumed`] bytes had been fed.
#[derive(Debug)]
#[must_use = "the frames are only decoded when `next` is called"]
pub struct Frames<'s, 'b> {
    decoder: &'s mut OctetDecoder,
    piece: &'b [u8],
    position: usize,
    failure_reported: bool,
}

impl Frames<'_, '_> {
    /// The next complete frame or error, or `None` when the piece is used
    /// up (or a fatal error has been reported).
    #[allow(clippy::should_implement_trait)] // a lending cursor, see the type docs
    pub fn next(&mut self) -> Option<Result<Frame<'_>, OctetError>> {
        let decoder = &mut *self.decoder;
        if decoder.partial_emitted {
            decoder.partial.clear();
            decoder.partial_emitted = false;
        }
        loop {
            let rest = &self.piece[self.position..];
            match decoder.state {
                State::Failed(ref error) => {
                    if self.failure_reported {
                        return None;
                    }
                    self.failure_reported = true;
                    return Some(Err(error.clone()));
                }
                _ if rest.is_empty() => return None,
                State::Length {
                    ref mut value,
                    ref mut digits,
                } => {
                    let byte = rest[0];
                    let offset = decoder.offset;
                    self.position += 1;
                    decoder.offset += 1;
                    match byte {
                        b'\n' | b'\r' if *digits == 0 => {}
                        b'0' if *digits == 0 => {
                            self.failure_reported = true;
                            return Some(Err(decoder.fail(OctetError::LeadingZero { offset })));
                        }
                        b'0'..=b'9' => {
                            *digits += 1;
                            let next = value
                                .checked_mul(10)
                                .and_then(|v| v.checked_add(u64::from(byte - b'0')));
                            match next {
                                Some(next) if *digits <= MAX_LENGTH_DIGITS => *value = next,
                                _ => {
                                    self.failure_reported = true;
                                    return Some(Err(
                                        decoder.fail(OctetError::LengthOverflow { offset })
                                    ));
                                }
                            }
                        }
                        b' ' if *digits == 0 => {
                            self.failure_reported = true;
                            return Some(Err(decoder.fail(OctetError::MissingLength { offset })));
                        }
                        b' ' => {
                            let length = *value;
                            match usize::try_from(length) {
                                Ok(length) if length <= decoder.max_frame_bytes => {
                                    decoder.state = State::Body { length };
                                }
                                _ => {
                                    decoder.oversized += 1;
                                    decoder.state = State::Skip { remaining: length };
                                    return Some(Err(OctetError::FrameTooLarge {
                                        length,
                                        max: decoder.max_frame_bytes,
                                        offset: offset + 1,
                                    }));
                                }
                            }
                        }
                        _ => {
                            self.failure_reported = true;
                            return Some(Err(decoder.fail(OctetError::BadLength { byte, offset })));
                        }
                    }
                }
                State::Skip { ref mut remaining } => {
                    let take = (*remaining).min(rest.len() as u64);
                    *remaining -= take;
                    if *remaining == 0 {
                        decoder.state = START;
                    }
                    self.position += take as usize;
                    decoder.offset += take;
                }
                State::Body { length } => {
                    if decoder.partial.is_empty() && rest.len() >= length {
                        self.position += length;
                        decoder.offset += length as u64;
                        decoder.state = START;
                        return Some(Ok(Frame {
                            bytes: &rest[..length],
                            end_offset: decoder.offset,
                        }));
                    }
                    let take = (length - decoder.partial.len()).min(rest.len());
                    decoder.partial.extend_from_slice(&rest[..take]);
                    self.position += take;
                    decoder.offset += take as u64;
                    if decoder.partial.len() == length {
                        decoder.state = START;
                        decoder.partial_emitted = true;
                        return Some(Ok(Frame {
                            bytes: &decoder.partial,
                            end_offset: decoder.offset,
                        }));
                    }
                }
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

    #[derive(Debug, PartialEq)]
    enum Event {
        Frame(Vec<u8>, u64),
        Error(OctetError),
    }

    /// Name, pieces, events, result of `finish`.
    type Case<'a> = (&'a str, Vec<&'a [u8]>, Vec<Event>, Result<(), OctetError>);

    fn frame(bytes: &str, end: u64) -> Event {
        Event::Frame(bytes.as_bytes().to_vec(), end)
    }

    fn run(decoder: &mut OctetDecoder, pieces: &[&[u8]]) -> Vec<Event> {
        let mut events = Vec::new();
        for piece in pieces {
            let mut frames = decoder.feed(piece);
            while let Some(result) = frames.next() {
                events.push(match result {
                    Ok(frame) => Event::Frame(frame.bytes.to_vec(), frame.end_offset),
                    Err(error) => Event::Error(error),
                });
            }
        }
        events
    }

    #[test]
    fn decodes_as_the_table_says() {
        use Event::Error as E;
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("one frame", vec![b"5 hello"], vec![frame("hello", 7)], Ok(())),
            ("back to back", vec![b"3 abc2 de"], vec![frame("abc", 5), frame("de", 9)], Ok(())),
            ("split everywhere", vec![b"1", b"0 hello", b" wor", b"l3", b" ", b"xyz"], vec![frame("hello worl", 13), frame("xyz", 18)], Ok(())),
            ("message with spaces and newlines", vec![b"7 a b\nc d"], vec![frame("a b\nc d", 9)], Ok(())),
            ("newline between frames tolerated", vec![b"2 ab\n\r\n2 cd"], vec![frame("ab", 4), frame("cd", 11)], Ok(())),
            ("oversized skipped", vec![b"12 abcdefghijkl2 ok"], vec![E(OctetError::FrameTooLarge { length: 12, max: 10, offset: 3 }), frame("ok", 19)], Ok(())),
            ("oversized skipped across pieces", vec![b"11 abc", b"defgh", b"ijk1 z"], vec![E(OctetError::FrameTooLarge { length: 11, max: 10, offset: 3 }), frame("z", 17)], Ok(())),
            ("letter in prefix", vec![b"2 ab1x x"], vec![frame("ab", 4), E(OctetError::BadLength { byte: b'x', offset: 5 })], Err(OctetError::BadLength { byte: b'x', offset: 5 })),
            ("not octet counted at all", vec![b"<13>hello\n"], vec![E(OctetError::BadLength { byte: b'<', offset: 0 })], Err(OctetError::BadLength { byte: b'<', offset: 0 })),
            ("zero length", vec![b"0 "], vec![E(OctetError::LeadingZero { offset: 0 })], Err(OctetError::LeadingZero { offset: 0 })),
            ("zero padded", vec![b"05 hello"], vec![E(OctetError::LeadingZero { offset: 0 })], Err(OctetError::LeadingZero { offset: 0 })),
            ("space first", vec![b" 5 hello"], vec![E(OctetError::MissingLength { offset: 0 })], Err(OctetError::MissingLength { offset: 0 })),
            ("endless digits", vec![b"123456789012345678901"], vec![E(OctetError::LengthOverflow { offset: 20 })], Err(OctetError::LengthOverflow { offset: 20 })),
            ("u64 overflow", vec![b"99999999999999999999 "], vec![E(OctetError::LengthOverflow { offset: 19 })], Err(OctetError::LengthOverflow { offset: 19 })),
            ("huge length is too large, not fatal", vec![b"18446744073709551615 "], vec![E(OctetError::FrameTooLarge { length: u64::MAX, max: 10, offset: 21 })], Err(OctetError::Truncated { offset: 21 })),
            ("ends inside body", vec![b"5 hel"], vec![], Err(OctetError::Truncated { offset: 5 })),
            ("ends inside prefix", vec![b"2 ab1"], vec![frame("ab", 4)], Err(OctetError::Truncated { offset: 5 })),
        ];
        for (name, pieces, expected, finished) in cases {
            let mut decoder = OctetDecoder::new(10);
            assert_eq!(run(&mut decoder, &pieces), expected, "{name}");
            assert_eq!(decoder.finish(), finished, "{name}: finish");
        }
    }

    #[test]
    fn a_failed_decoder_reports_once_per_feed_and_consumes_nothing() {
        let mut decoder = OctetDecoder::new(10);
        let events = run(&mut decoder, &[b"x1 a"]);
        assert_eq!(events.len(), 1);
        assert!(decoder.has_failed());
        let mut frames = decoder.feed(b"1 a");
        let error = frames
            .next()
            .expect("the error again")
            .expect_err("an error");
        assert!(error.is_fatal());
        assert!(frames.next().is_none());
        assert_eq!(frames.consumed(), 0);
        assert_eq!(decoder.offset(), 1);
    }

    #[test]
    fn frames_inside_the_piece_are_not_copied() {
        let piece = b"3 abc";
        let mut decoder = OctetDecoder::new(10);
        let mut frames = decoder.feed(piece);
        let frame = frames.next().expect("a frame").expect("no error");
        assert!(std::ptr::eq(frame.bytes.as_ptr(), piece[2..].as_ptr()));
    }

    #[test]
    fn oversized_frames_are_counted_and_never_stored() {
        let mut decoder = OctetDecoder::new(4);
        let mut stream = b"1000 ".to_vec();
        stream.extend(std::iter::repeat_n(b'y', 1000));
        stream.extend_from_slice(b"2 ok");
        let mut frames_seen = Vec::new();
        for piece in stream.chunks(7) {
            let mut frames = decoder.feed(piece);
            while let Some(result) = frames.next() {
                frames_seen.push(result.map(|f| f.bytes.to_vec()));
            }
            // 8 is the smallest capacity a growing `Vec<u8>` allocates.
            assert!(decoder.partial.capacity() <= 8);
        }
        assert_eq!(decoder.oversized_frames(), 1);
        assert!(!frames_seen[0].as_ref().expect_err("too large").is_fatal());
        assert_eq!(frames_seen[1], Ok(b"ok".to_vec()));
    }

    #[test]
    fn errors_say_what_and_where() {
        let error = OctetError::BadLength {
            byte: b'<',
            offset: 0,
        };
        assert_eq!(
            error.to_string(),
            "bad octet-counting frame: expected a digit or a space in the length prefix at stream offset 0, found byte 0x3c"
        );
        let error = OctetError::FrameTooLarge {
            length: 12,
            max: 10,
            offset: 3,
        };
        assert_eq!(
            error.to_string(),
            "octet-counting frame of 12 bytes at stream offset 3 exceeds the maximum of 10 bytes; skipped"
        );
    }
}
