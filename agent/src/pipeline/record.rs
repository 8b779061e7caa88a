//! A queued event: what is needed to publish it, length-prefixed.
//!
//! `u16 len | msg id | u16 len | subject | body`. An
//! empty msg id means "derive it from the queue sequence".

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub msg_id: String,
    pub subject: String,
    pub body: Vec<u8>,
}

impl QueuedEvent {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.msg_id.len() + self.subject.len() + self.body.len());
        for part in [&self.msg_id, &self.subject] {
            // Each part is far below 64 KiB (ids, subjects);
            // clamp rather than corrupt if one is not.
            let bytes = &part.as_bytes()[..part.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Option<QueuedEvent> {
        let mut parts = Vec::with_capacity(2);
        for _ in 0..2 {
            let len = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]) as usize;
            let part = bytes.get(2..2 + len)?;
            parts.push(String::from_utf8(part.to_vec()).ok()?);
            bytes = &bytes[2 + len..];
        }
        let subject = parts.pop()?;
        let msg_id = parts.pop()?;
        Some(QueuedEvent { msg_id, subject, body: bytes.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let e = QueuedEvent { msg_id: "".into(), subject: "logs.a.b.c.d".into(), body: b"{}".to_vec() };
        assert_eq!(QueuedEvent::decode(&e.encode()), Some(e));
        assert_eq!(QueuedEvent::decode(b"\xff\xff"), None);
        assert_eq!(QueuedEvent::decode(b""), None);
    }
}

/// The body with its `"seq":0` (always last: serde writes fields in order)
/// set to the queue sequence.
pub fn with_seq(body: &[u8], seq: u64) -> Vec<u8> {
    const ZERO: &[u8] = b"\"seq\":0}";
    match body.strip_suffix(ZERO) {
        Some(head) => {
            let mut out = Vec::with_capacity(body.len() + 20);
            out.extend_from_slice(head);
            out.extend_from_slice(format!("\"seq\":{seq}}}").as_bytes());
            out
        }
        None => body.to_vec(),
    }
}

#[cfg(test)]
mod seq_tests {
    #[test]
    fn seq_is_patched_into_the_body() {
        let e = flotilla_core::event::LogEvent {
            ts: chrono::Utc::now(),
            org: "a".into(),
            app: "b".into(),
            region: "r".into(),
            host: "h".into(),
            source: "s".into(),
            level: "info".into(),
            message: "m \"seq\":0}".into(),
            fields: Default::default(),
            seq: 0,
        };
        let patched = super::with_seq(&e.to_json(), 42);
        let back = flotilla_core::event::LogEvent::from_json(&patched).unwrap();
        assert_eq!((back.seq, back.message.as_str()), (42, "m \"seq\":0}"));
    }
}
