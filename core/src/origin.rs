//! Where an event came from, as its de-duplication id (`Nats-Msg-Id`) says:
//! the agent writes the ids with these functions and the shipper's
//! completeness ledger reads them back with [`parse`], so the format lives
//! in one place.
//!
//! - file sources: `<host>/f/<nonce>/<offset>`, one origin stream per file
//!   incarnation (its nonce); a rate-limit notice appends `/notice`;
//! - queue-backed sources (stdin, syslog): `<host>/<source>/<queue seq>`;
//! - sources with a natural key (journald): `<host>/<source>/k/<key>`.
//!
//! The event's sequence in its origin stream travels in the `Flotilla-Seq`
//! header ([`crate::HDR_SEQ`]); 0 marks an event outside the sequence (a
//! notice). Host names hold no `/`, source names only `[A-Za-z0-9_-]`.

/// Header on a file event: this many sequence numbers right before the
/// event's own were consumed by events the agent dropped (rate limit), so
/// they are accounted for, not missing.
pub const HDR_DROPPED: &str = "Flotilla-Dropped";

/// The token marking a file source's id.
const FILE: &str = "f";
/// The token marking a keyed id.
const KEYED: &str = "k";

/// Write `<host>/f/<nonce>/<offset>` into `out` (cleared first), so a hot
/// loop can reuse one buffer.
pub fn write_file_msg_id(out: &mut String, host: &str, nonce: &str, offset: u64) {
    out.clear();
    for part in [host, "/", FILE, "/", nonce, "/"] {
        out.push_str(part);
    }
    out.push_str(crate::decimal_str(offset, &mut [0; 20]));
}

/// `<host>/f/<nonce>/<offset>`.
pub fn file_msg_id(host: &str, nonce: &str, offset: u64) -> String {
    let mut s = String::with_capacity(host.len() + nonce.len() + 24);
    write_file_msg_id(&mut s, host, nonce, offset);
    s
}

/// `<host>/<source>/<seq>`.
pub fn queue_msg_id(host: &str, source: &str, seq: u64) -> String {
    format!("{host}/{source}/{seq}")
}

/// `<host>/<source>/k/<key>`.
pub fn keyed_msg_id(host: &str, source: &str, key: &str) -> String {
    format!("{host}/{source}/{KEYED}/{key}")
}

/// The id of the rate-limit notice published in front of the event `id`.
pub fn notice_msg_id(id: &str) -> String {
    format!("{id}/notice")
}

/// The origin stream an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream<'a> {
    /// One incarnation of a tailed file.
    File { nonce: &'a str },
    /// A queue-backed source (its queue sequence numbers its events).
    Source { name: &'a str },
}

impl Stream<'_> {
    /// A compact key for the stream: `f/<nonce>` or the source name.
    pub fn key(&self) -> String {
        match self {
            Stream::File { nonce } => format!("{FILE}/{nonce}"),
            Stream::Source { name } => (*name).to_string(),
        }
    }
}

/// An id read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgId<'a> {
    pub host: &'a str,
    pub stream: Stream<'a>,
    /// A rate-limit notice (outside the sequence).
    pub notice: bool,
}

/// Read an id written by the functions above; `None` for any other id.
pub fn parse(id: &str) -> Option<MsgId<'_>> {
    let (id, notice) = match id.strip_suffix("/notice") {
        Some(head) => (head, true),
        None => (id, false),
    };
    let (host, rest) = id.split_once('/')?;
    let (first, rest) = rest.split_once('/')?;
    if host.is_empty() || first.is_empty() || rest.is_empty() {
        return None;
    }
    // A file id: `f/<nonce>/<offset>` (a source may be named `f`, but its
    // ids then end in one number or in `k/<key>`, never `<hex>/<number>`).
    if first == FILE {
        if let Some((nonce, offset)) = rest.split_once('/') {
            let hex = !nonce.is_empty() && nonce.bytes().all(|b| b.is_ascii_hexdigit());
            if hex && is_number(offset) {
                return Some(MsgId { host, stream: Stream::File { nonce }, notice });
            }
        }
    }
    let source_ok = first.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let tail_ok = is_number(rest) || rest.strip_prefix("k/").is_some_and(|k| !k.is_empty());
    (source_ok && tail_ok).then_some(MsgId { host, stream: Stream::Source { name: first }, notice })
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let f = file_msg_id("h1", "00ab", 42);
        assert_eq!(f, "h1/f/00ab/42");
        assert_eq!(parse(&f), Some(MsgId { host: "h1", stream: Stream::File { nonce: "00ab" }, notice: false }));
        let n = notice_msg_id(&f);
        assert_eq!(parse(&n).map(|m| (m.stream, m.notice)), Some((Stream::File { nonce: "00ab" }, true)));
        let q = queue_msg_id("h1", "syslog-0", 7);
        assert_eq!(parse(&q), Some(MsgId { host: "h1", stream: Stream::Source { name: "syslog-0" }, notice: false }));
        let k = keyed_msg_id("h1", "journal", "s=1;i=2");
        assert_eq!(parse(&k).map(|m| m.stream), Some(Stream::Source { name: "journal" }));
        // A queue source named `f` is not a file.
        assert_eq!(parse("h1/f/9").map(|m| m.stream), Some(Stream::Source { name: "f" }));
        assert_eq!(parse("h1/f/k/x").map(|m| m.stream), Some(Stream::Source { name: "f" }));
        assert_eq!(Stream::File { nonce: "ab" }.key(), "f/ab");
        let mut buf = String::from("junk");
        write_file_msg_id(&mut buf, "h", "1", 2);
        assert_eq!(buf, "h/f/1/2");
    }

    #[test]
    fn other_ids_are_not_origins() {
        for id in ["", "h1", "h1/x", "/f/ab/1", "flotilla/sink/12x", "h1/a b/1", "h1/src/", "h1/src/k/"] {
            assert_eq!(parse(id), None, "{id}");
        }
    }
}
