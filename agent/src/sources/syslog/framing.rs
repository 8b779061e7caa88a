//! TCP syslog framing (RFC 6587): split a byte stream into messages.
//!
//! Two framings are in use and some senders mix them, so the method is
//! chosen per frame from its first byte:
//!
//! - **Octet counting** (`<len> <msg>`, RFC 6587 §3.4.1) when it is an ASCII
//!   digit: exactly `len` bytes follow the space, LFs and all. A count larger
//!   than `max_frame`, or digits not followed by a space, is an error: the
//!   stream cannot be resynchronised, so the caller should drop the
//!   connection.
//! - **Non-transparent framing** (§3.4.2) otherwise: the frame ends at LF
//!   (a CR before it is stripped) or at NUL. A line longer than `max_frame`
//!   comes out in pieces of at most `max_frame` bytes, each but the last
//!   marked [`Frame::truncated`]; nothing is dropped. A cut is moved back to a
//!   UTF-8 character boundary when one is within 3 bytes. An empty line is
//!   an empty frame (also the LF some senders put after octet-counted
//!   frames): callers skip those.
//!
//! [`next_frame`] is pure: it looks at the buffered bytes, returns one frame
//! and how many bytes it used, or `Ok(None)` when it needs more bytes. The
//! outcome does not depend on how the stream was split into reads. At the
//! end of the stream, bytes left in the buffer are an unterminated last
//! line; what to do with them is the caller's choice.

use std::fmt;

/// One message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message, without its delimiter or octet count.
    pub bytes: Vec<u8>,
    /// Newline framing only: the line was longer than `max_frame`; these
    /// are its first bytes and the rest follows as the next frame(s).
    pub truncated: bool,
}

/// The stream is not valid framing; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("octet-counted frame of {count} bytes exceeds the maximum frame size of {max} bytes")]
    TooLong { count: u64, max: usize },
    #[error("invalid octet count: expected a space after the digits, found {}", Byte(*.found))]
    BadCount { found: u8 },
    #[error("invalid octet count: more than {MAX_COUNT_DIGITS} digits")]
    CountDigits,
}

/// More digits than any sane frame length (u64 has 20).
const MAX_COUNT_DIGITS: usize = 20;

struct Byte(u8);

impl fmt::Display for Byte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "{:?}", char::from(self.0))
        } else {
            write!(f, "byte {:#04x}", self.0)
        }
    }
}

/// The next frame at the start of `buf` and the number of bytes it used,
/// or `Ok(None)` if `buf` does not hold a whole frame yet. A `max_frame` of
/// 0 is taken as 1.
pub fn next_frame(buf: &[u8], max_frame: usize) -> Result<Option<(Frame, usize)>, FramingError> {
    let max = max_frame.max(1);
    match buf.first() {
        None => Ok(None),
        Some(b) if b.is_ascii_digit() => octet_counted(buf, max),
        Some(_) => newline(buf, max),
    }
}

fn octet_counted(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>, FramingError> {
    let n = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if n > MAX_COUNT_DIGITS {
        return Err(FramingError::CountDigits);
    }
    let Some(&sep) = buf.get(n) else {
        return Ok(None);
    };
    if sep != b' ' {
        return Err(FramingError::BadCount { found: sep });
    }
    let count = buf[..n].iter().fold(0u64, |v, d| v.saturating_mul(10).saturating_add(u64::from(d - b'0')));
    if count > max as u64 {
        return Err(FramingError::TooLong { count, max });
    }
    // count <= max: a usize.
    let end = n + 1 + count as usize;
    match buf.get(n + 1..end) {
        Some(msg) => Ok(Some((Frame { bytes: msg.to_vec(), truncated: false }, end))),
        None => Ok(None),
    }
}

fn newline(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>, FramingError> {
    // A line of `max` bytes may be followed by CR LF: look that far.
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    if let Some(i) = window.iter().position(|&b| b == b'\n' || b == 0) {
        let end = if buf[i] == b'\n' && i > 0 && buf[i - 1] == b'\r' { i - 1 } else { i };
        if end <= max {
            return Ok(Some((Frame { bytes: buf[..end].to_vec(), truncated: false }, i + 1)));
        }
    } else if window.len() < max.saturating_add(2) {
        return Ok(None);
    }
    // Longer than `max`: cut, at a UTF-8 boundary if one is near.
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let mut cut = max;
    while cut > 1 && max - cut < 3 && is_continuation(buf[cut]) {
        cut -= 1;
    }
    if is_continuation(buf[cut]) {
        cut = max;
    }
    Ok(Some((Frame { bytes: buf[..cut].to_vec(), truncated: true }, cut)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(bytes: &[u8]) -> Frame {
        Frame { bytes: bytes.to_vec(), truncated: false }
    }

    fn cut(bytes: &[u8]) -> Frame {
        Frame { bytes: bytes.to_vec(), truncated: true }
    }

    /// Feed `chunks` one after the other, taking every complete frame after
    /// each; stop at the first error.
    fn drive(chunks: &[&[u8]], max: usize) -> (Vec<Frame>, Option<FramingError>) {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match next_frame(&buf, max) {
                    Ok(Some((f, n))) => {
                        assert!(n > 0 && n <= buf.len());
                        out.push(f);
                        buf.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    /// Every way of splitting `stream` in two, and byte by byte, gives the
    /// same frames as reading it at once.
    fn same_at_every_split(stream: &[u8], max: usize) -> (Vec<Frame>, Option<FramingError>) {
        let whole = drive(&[stream], max);
        for k in 0..=stream.len() {
            assert_eq!(drive(&[&stream[..k], &stream[k..]], max), whole, "split at {k}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(drive(&bytes, max), whole, "byte by byte");
        whole
    }

    #[test]
    fn octet_counted() {
        assert_eq!(next_frame(b"5 hello6 world!", 100), Ok(Some((frame(b"hello"), 7))));
        assert_eq!(next_frame(b"5 hel", 100), Ok(None));
        assert_eq!(next_frame(b"5", 100), Ok(None));
        assert_eq!(next_frame(b"", 100), Ok(None));
        assert_eq!(next_frame(b"0 ", 100), Ok(Some((frame(b""), 2))));
        // The count covers LFs inside the message.
        let msg = b"<165>1 2003-10-11T22:14:15.003Z host app - - - line one\nline two";
        let stream = [format!("{} ", msg.len()).as_bytes(), msg, b"\n"].concat();
        let (frames, err) = same_at_every_split(&stream, 1024);
        assert_eq!((frames, err), (vec![frame(msg), frame(b"")], None));
    }

    #[test]
    fn octet_count_errors() {
        assert_eq!(next_frame(b"12x", 100), Err(FramingError::BadCount { found: b'x' }));
        assert_eq!(next_frame(b"2024-01-01 x", 100), Err(FramingError::BadCount { found: b'-' }));
        assert_eq!(next_frame(b"101 ", 100), Err(FramingError::TooLong { count: 101, max: 100 }));
        assert_eq!(next_frame(b"100 ", 100), Ok(None));
        assert_eq!(next_frame(b"99999999999999999999999 ", 100), Err(FramingError::CountDigits));
        assert_eq!(next_frame(b"99999999999999999999 ", 100), Err(FramingError::TooLong { count: u64::MAX, max: 100 }));
        assert_eq!(
            FramingError::BadCount { found: b'\r' }.to_string(),
            "invalid octet count: expected a space after the digits, found byte 0x0d"
        );
        assert_eq!(
            FramingError::BadCount { found: b'<' }.to_string(),
            "invalid octet count: expected a space after the digits, found '<'"
        );
        assert_eq!(
            FramingError::TooLong { count: 70000, max: 65536 }.to_string(),
            "octet-counted frame of 70000 bytes exceeds the maximum frame size of 65536 bytes"
        );
    }

    #[test]
    fn newline_delimited() {
        let stream = b"<34>Oct 11 22:14:15 h su: a\n<34>Oct 11 22:14:15 h su: b\r\n\nc\0<13>d\r\ne";
        let (frames, err) = same_at_every_split(stream, 1024);
        assert_eq!(err, None);
        assert_eq!(
            frames,
            vec![
                frame(b"<34>Oct 11 22:14:15 h su: a"),
                frame(b"<34>Oct 11 22:14:15 h su: b"),
                frame(b""),
                frame(b"c"),
                frame(b"<13>d"),
            ]
        );
        // A CR alone is data.
        assert_eq!(next_frame(b"a\rb\n", 10), Ok(Some((frame(b"a\rb"), 4))));
    }

    #[test]
    fn mixed_framing() {
        let stream = b"<13>plain\n11 <13>counted<14>also plain\n3 x\ny";
        let (frames, err) = same_at_every_split(stream, 64);
        assert_eq!(err, None);
        assert_eq!(frames, vec![frame(b"<13>plain"), frame(b"<13>counted"), frame(b"<14>also plain"), frame(b"x\ny")]);
    }

    #[test]
    fn long_lines_come_out_in_pieces() {
        let (frames, err) = same_at_every_split(b"abcdefghij\nabcd\nabcd\r\nabcde\r\nxy", 4);
        assert_eq!(err, None);
        assert_eq!(
            frames,
            vec![cut(b"abcd"), cut(b"efgh"), frame(b"ij"), frame(b"abcd"), frame(b"abcd"), cut(b"abcd"), frame(b"e"),]
        );
        // Not cut inside a character: "aé日x" is 61 c3a9 e697a5 78.
        let (frames, _) = same_at_every_split("aé日x\n".as_bytes(), 4);
        assert_eq!(frames, vec![cut("aé".as_bytes()), frame("日x".as_bytes())]);
        // Invalid UTF-8 is cut where it must be.
        let (frames, _) = same_at_every_split(b"\x80\x80\x80\x80\x80\x80\n", 4);
        assert_eq!(frames, vec![cut(b"\x80\x80\x80\x80"), frame(b"\x80\x80")]);
        // max_frame 0 still makes progress.
        assert_eq!(next_frame(b"abc", 0), Ok(Some((cut(b"a"), 1))));
    }

    #[test]
    fn errors_after_good_frames_at_every_split() {
        let (frames, err) = same_at_every_split(b"ok\n4 fine12x more", 100);
        assert_eq!(frames, vec![frame(b"ok"), frame(b"fine")]);
        assert_eq!(err, Some(FramingError::BadCount { found: b'x' }));
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_frames(
            stream in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(0u8), Just(b' '), b'0'..=b'9', any::<u8>()], 0..80),
            splits in proptest::collection::vec(0usize..80, 0..6),
            max in 1usize..12,
        ) {
            let whole = drive(&[&stream], max);
            let mut points: Vec<usize> = splits.into_iter().map(|s| s.min(stream.len())).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for p in points {
                chunks.push(&stream[at..p]);
                at = p;
            }
            chunks.push(&stream[at..]);
            prop_assert_eq!(drive(&chunks, max), whole.clone());
            for f in &whole.0 {
                prop_assert!(f.bytes.len() <= max);
            }
        }
    }
}
