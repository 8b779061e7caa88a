//! Request bodies: NDJSON batches, optionally gzipped. Pure functions over
//! bytes.

use std::io::Write as _;

use serde::de::IgnoredAny;

use super::super::Delivery;

/// One JSON object per line. A payload that is JSON on one line goes as it
/// is; JSON spread over lines is re-serialised compactly; anything else
/// becomes `{"subject":…,"message":…}` (bytes that are not UTF-8 replaced).
pub fn ndjson(batch: &[&Delivery]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.iter().map(|d| d.payload.len() + 1).sum());
    for d in batch {
        line(&d.subject, &d.payload, &mut out);
    }
    out
}

pub fn line(subject: &str, payload: &[u8], out: &mut Vec<u8>) {
    let one_line = !payload.contains(&b'\n') && !payload.contains(&b'\r');
    if one_line && serde_json::from_slice::<IgnoredAny>(payload).is_ok() {
        out.extend_from_slice(payload);
    } else if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
        // Serialising a parsed value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &value);
    } else {
        let wrapped = serde_json::json!({
            "subject": subject,
            "message": String::from_utf8_lossy(payload),
        });
        let _ = serde_json::to_writer(&mut *out, &wrapped);
    }
    out.push(b'\n');
}

pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    enc.write_all(body)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn encoded(subject: &str, payload: &[u8]) -> String {
        let mut out = Vec::new();
        line(subject, payload, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn one_object_per_line() {
        assert_eq!(encoded("logs.a.b.c.d", br#"{"level":"info", "n":1}"#), "{\"level\":\"info\", \"n\":1}\n");
        assert_eq!(encoded("logs.a.b.c.d", b"{\n \"n\": 1\n}"), "{\"n\":1}\n");
        assert_eq!(
            encoded("logs.a.b.c.d", b"oops\n\xff"),
            "{\"message\":\"oops\\n\u{fffd}\",\"subject\":\"logs.a.b.c.d\"}\n"
        );
        assert_eq!(encoded("s", b"{\"a\":1} trailing"), "{\"message\":\"{\\\"a\\\":1} trailing\",\"subject\":\"s\"}\n");
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"{\"a\":1}\n".repeat(100);
        let zipped = gzip(&body).unwrap_or_default();
        assert!(zipped.len() < body.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..]).read_to_end(&mut back).unwrap_or_default();
        assert_eq!(back, body);
    }
}
