//! A message on its way to clients, whichever way it was read upstream: an
//! `async_nats::Message`, or a [`Raw`] frame read in place by the delivery
//! connection (header bytes as nats-server sent them).

use std::borrow::Cow;

/// What the fan-out needs of an upstream message.
pub trait Delivery {
    fn subject(&self) -> &str;
    fn reply(&self) -> Option<&str>;
    fn payload(&self) -> &[u8];
    /// The header block for a client that declared `headers`
    /// (`NATS/1.0[ status[ text]]\r\n(Name: value\r\n)*\r\n`), `None` for a
    /// plain message.
    fn header_block(&self) -> Option<Cow<'_, [u8]>>;
    /// A status message (no responders ...): for header-aware clients only.
    fn is_status(&self) -> bool;
    /// The no-responders status (503) a request gets when nobody listens:
    /// only for clients that asked for it in CONNECT.
    fn is_no_responders(&self) -> bool;
    /// Payload and headers digested as [`crate::echo`] compares them.
    fn echo_digest(&self) -> u64;
}

/// A batch may hold references (a read's messages regrouped by subscription).
impl<T: Delivery + ?Sized> Delivery for &T {
    fn subject(&self) -> &str {
        (**self).subject()
    }
    fn reply(&self) -> Option<&str> {
        (**self).reply()
    }
    fn payload(&self) -> &[u8] {
        (**self).payload()
    }
    fn header_block(&self) -> Option<Cow<'_, [u8]>> {
        (**self).header_block()
    }
    fn is_status(&self) -> bool {
        (**self).is_status()
    }
    fn is_no_responders(&self) -> bool {
        (**self).is_no_responders()
    }
    fn echo_digest(&self) -> u64 {
        (**self).echo_digest()
    }
}

impl Delivery for async_nats::Message {
    fn subject(&self) -> &str {
        self.subject.as_str()
    }
    fn reply(&self) -> Option<&str> {
        self.reply.as_deref()
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn header_block(&self) -> Option<Cow<'_, [u8]>> {
        encode_headers(self).map(Cow::Owned)
    }
    fn is_status(&self) -> bool {
        self.status.is_some()
    }
    fn is_no_responders(&self) -> bool {
        self.status == Some(async_nats::StatusCode::NO_RESPONDERS)
    }
    fn echo_digest(&self) -> u64 {
        crate::echo::digest(self.headers.as_ref(), &self.payload)
    }
}

/// A `MSG`/`HMSG` read in place off the upstream socket.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    pub sid: u64,
    pub subject: &'a str,
    pub reply: Option<&'a str>,
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl Delivery for Raw<'_> {
    fn subject(&self) -> &str {
        self.subject
    }
    fn reply(&self) -> Option<&str> {
        self.reply
    }
    fn payload(&self) -> &[u8] {
        self.payload
    }
    fn header_block(&self) -> Option<Cow<'_, [u8]>> {
        self.headers.map(Cow::Borrowed)
    }
    fn is_status(&self) -> bool {
        // `NATS/1.0 503 ...`: a status code after the version.
        self.headers.is_some_and(|h| h.starts_with(b"NATS/1.0 ") && h.get(9).is_some_and(u8::is_ascii_digit))
    }
    fn is_no_responders(&self) -> bool {
        self.headers.is_some_and(|h| h.starts_with(b"NATS/1.0 503"))
    }
    fn echo_digest(&self) -> u64 {
        let headers = self.headers.and_then(parse_headers);
        crate::echo::digest(headers.as_ref(), self.payload)
    }
}

/// Header lines of a block into a map (the status line is ignored); `None`
/// if a line is not a valid header (e.g. a CR or LF inside a value).
pub fn parse_headers(block: &[u8]) -> Option<async_nats::HeaderMap> {
    let mut map = async_nats::HeaderMap::new();
    let text = std::str::from_utf8(block).ok()?;
    let body = text.strip_suffix("\r\n\r\n").or_else(|| text.strip_suffix("\r\n"))?;
    for line in body.split("\r\n").skip(1) {
        let (name, value) = line.split_once(':')?;
        let name: async_nats::header::HeaderName = name.trim().parse().ok()?;
        let value: async_nats::header::HeaderValue = value.trim().parse().ok()?;
        map.append(name, value);
    }
    Some(map)
}

/// `NATS/1.0[ status[ description]]\\r\\n(Name: value\\r\\n)*\\r\\n`, or `None`
/// for a plain message.
fn encode_headers(m: &async_nats::Message) -> Option<Vec<u8>> {
    if m.headers.is_none() && m.status.is_none() {
        return None;
    }
    let mut h = String::from("NATS/1.0");
    if let Some(status) = m.status {
        h.push_str(&format!(" {}", status.as_u16()));
        if let Some(d) = &m.description {
            h.push(' ');
            h.push_str(d);
        }
    }
    h.push_str("\r\n");
    if let Some(headers) = &m.headers {
        for (name, values) in headers.iter() {
            for v in values {
                h.push_str(name.as_ref());
                h.push_str(": ");
                h.push_str(v.as_str());
                h.push_str("\r\n");
            }
        }
    }
    h.push_str("\r\n");
    Some(h.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_parsed_messages_agree() {
        let block = b"NATS/1.0\r\nB: 2\r\nA: 1\r\n\r\n";
        let raw = Raw { sid: 1, subject: "s", reply: Some("r"), headers: Some(block), payload: b"p" };
        let parsed = async_nats::Message {
            subject: "s".into(),
            reply: Some("r".into()),
            payload: "p".into(),
            headers: parse_headers(block),
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(raw.echo_digest(), parsed.echo_digest(), "the same digest for echo detection");
        assert_eq!((raw.subject(), raw.reply(), raw.payload()), (parsed.subject(), parsed.reply(), parsed.payload()));
        assert!(!raw.is_status() && !parsed.is_status());
        let status = Raw { headers: Some(b"NATS/1.0 503\r\n\r\n"), ..raw };
        assert!(status.is_status());
        assert_eq!(status.header_block().as_deref(), Some(&b"NATS/1.0 503\r\n\r\n"[..]), "passed through as sent");
        assert!(Raw { headers: None, ..raw }.header_block().is_none());
    }
}
