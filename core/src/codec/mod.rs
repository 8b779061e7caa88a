//! Codecs: turn one framed line into the parts of a [`crate::event::LogEvent`].
//!
//! Framing (splitting bytes into lines or syslog frames) happens in the
//! sources; a codec only sees one line. Every codec is total: input comes
//! from outside, so a line it cannot make sense of is kept whole as the
//! message, with the reason in `fields.decode_error`.
//!
//! - [`Codec::Json`]: one JSON object per line.
//! - [`Codec::Logfmt`]: `key=value` pairs.
//! - [`Codec::Syslog`]: RFC 5424 or RFC 3164 ([`syslog`]).
//! - [`Codec::Raw`]: the line is the message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod json;
mod logfmt;
mod raw;
pub mod scan;
pub mod syslog;

pub use syslog::{parse_syslog, SyslogMessage};

/// How a source's lines are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// One JSON object per line; `ts`/`level`/`msg` lifted, the rest kept in `fields`.
    Json,
    /// The line is the message; the level is guessed from its first words.
    #[default]
    Raw,
    /// `key=value key="quoted value" flag`; `ts`/`level`/`msg` lifted, the
    /// rest kept in `fields` as strings (a bare key is `true`).
    Logfmt,
    /// A syslog message, RFC 5424 or RFC 3164; priority, header and
    /// structured data go to `level` and `fields`.
    Syslog,
}

/// What a codec extracted from one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub ts: Option<DateTime<Utc>>,
    pub level: String,
    pub message: String,
    pub fields: Map<String, Value>,
}

/// Decode one line. Never fails: see the module docs.
pub fn decode(codec: Codec, line: &str) -> Decoded {
    match codec {
        Codec::Raw => raw::decode(line),
        Codec::Json => json::decode(line),
        Codec::Logfmt => logfmt::decode(line),
        Codec::Syslog => syslog::decode(line),
    }
}

/// The line kept whole as the message, with the reason it was not decoded.
fn undecoded(line: &str, reason: impl Into<String>) -> Decoded {
    let mut d = raw::decode(line);
    d.fields.insert("decode_error".into(), Value::String(reason.into()));
    d
}

/// Remove and return the first of `keys` present in `obj`.
fn take_first(obj: &mut Map<String, Value>, keys: &[&str]) -> Option<Value> {
    keys.iter().find_map(|k| obj.remove(*k))
}

/// Keys holding the event time, in order of preference.
const TS_KEYS: &[&str] = &["ts", "time", "timestamp", "@timestamp"];
/// Keys holding the level.
const LEVEL_KEYS: &[&str] = &["level", "lvl", "severity"];
/// Keys holding the message.
const MSG_KEYS: &[&str] = &["msg", "message"];

/// [`normalize_level`] without allocating for the usual spellings.
pub(crate) fn normalize_level_cow(s: &str) -> std::borrow::Cow<'static, str> {
    const KNOWN: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
    match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(s)) {
        Some(k) => std::borrow::Cow::Borrowed(k),
        None => std::borrow::Cow::Owned(normalize_level(s)),
    }
}

fn normalize_level(s: &str) -> String {
    match s.to_ascii_lowercase().as_str() {
        "warning" => "warn".into(),
        "err" => "error".into(),
        "critical" | "crit" | "panic" => "fatal".into(),
        other => other.into(),
    }
}

/// Guess a level from the first few words of a plain-text line.
pub fn guess_level(line: &str) -> &'static str {
    for word in line.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).take(6) {
        match word.to_ascii_lowercase().as_str() {
            "trace" => return "trace",
            "debug" => return "debug",
            "info" => return "info",
            "warn" | "warning" => return "warn",
            "error" | "err" => return "error",
            "fatal" | "critical" | "panic" => return "fatal",
            _ => {}
        }
    }
    "info"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lifts_known_keys() {
        let d = decode(Codec::Json, r#"{"ts":"2026-01-02T03:04:05Z","level":"WARNING","msg":"disk","pct":91}"#);
        assert_eq!(d.level, "warn");
        assert_eq!(d.message, "disk");
        assert_eq!(d.fields["pct"], 91);
        assert_eq!(d.ts.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
    }

    #[test]
    fn json_keeps_non_objects_whole() {
        let d = decode(Codec::Json, "plain ERROR text");
        assert_eq!(d.message, "plain ERROR text");
        assert_eq!(d.level, "error");
        assert!(d.fields.contains_key("decode_error"));
    }

    #[test]
    fn raw_guesses_levels() {
        assert_eq!(decode(Codec::Raw, "2026-01-01 WARN low disk").level, "warn");
        assert_eq!(decode(Codec::Raw, "hello world").level, "info");
    }

    #[test]
    fn codec_names_in_config() {
        for (name, codec) in
            [("json", Codec::Json), ("raw", Codec::Raw), ("logfmt", Codec::Logfmt), ("syslog", Codec::Syslog)]
        {
            assert_eq!(serde_json::to_value(codec).unwrap(), name);
            assert_eq!(serde_json::from_value::<Codec>(name.into()).unwrap(), codec);
        }
    }

    /// xorshift64*: a cheap deterministic generator, so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const SEEDS: &[&str] = &[
        r#"{"ts":"2026-01-02T03:04:05Z","level":"warn","msg":"x","n":[1,{"a":null}]}"#,
        r#"ts=2026-01-02T03:04:05Z level=warn msg="disk \"almost\" full" pct=91 flag"#,
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" \
         eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"] \u{feff}An application event",
        "<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8",
        "Oct  1 02:03:04 host postfix/smtpd[99]: connect from unknown[10.0.0.1]",
        "<13>2026-01-02T03:04:05.123+02:00 host app: hi",
        r#"<14>1 - - - - - [a b="\"\\\]"] msg"#,
    ];

    /// Random strings, mutated real lines and every prefix of them: no codec
    /// may panic, and each keeps something of the line.
    #[test]
    fn no_codec_panics_on_garbage() {
        const ALPHABET: &[char] = &[
            '<', '>', '[', ']', '"', '\\', '=', ' ', ' ', '\t', ':', '-', '.', 'T', 'Z', '@', '{', '}', ',', '0', '1',
            '3', '9', 'a', 'O', 'c', 't', '\u{feff}', 'é', '日', '🎉', '\u{0}', '\n', '\r', '+',
        ];
        let codecs = [Codec::Json, Codec::Raw, Codec::Logfmt, Codec::Syslog];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut inputs: Vec<String> = Vec::new();
        for seed in SEEDS {
            let chars: Vec<char> = seed.chars().collect();
            for i in 0..=chars.len() {
                inputs.push(chars[..i].iter().collect());
            }
        }
        for _ in 0..3000 {
            let mut chars: Vec<char> = SEEDS[rng.below(SEEDS.len())].chars().collect();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(chars.len() + 1);
                let c = ALPHABET[rng.below(ALPHABET.len())];
                match rng.below(3) {
                    0 if at < chars.len() => chars[at] = c,
                    1 if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ => chars.insert(at, c),
                }
            }
            inputs.push(chars.into_iter().collect());
            let len = rng.below(60);
            inputs.push((0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect());
        }
        for line in &inputs {
            for codec in codecs {
                let d = decode(codec, line);
                if codec == Codec::Raw || (codec == Codec::Syslog && d.fields.contains_key("decode_error")) {
                    assert_eq!(&d.message, line, "{codec:?}");
                }
            }
            let _ = parse_syslog(line);
        }
    }
}
