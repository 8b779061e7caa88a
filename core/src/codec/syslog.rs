//! The syslog codec: RFC 5424 and RFC 3164 ("BSD") messages.
//!
//! RFC 5424 is recognised by its version after the PRI (`<165>1 …`) and
//! parsed strictly: a header or structured data that does not follow the
//! grammar makes the message malformed. Everything else is read as RFC 3164,
//! leniently, the way real daemons send it: the PRI may be missing (then a
//! timestamp is required), the timestamp is `Mmm dd hh:mm:ss` (optionally
//! with fractional seconds or a year) or RFC 3339, the hostname may be
//! missing (`<13>Oct 11 22:14:15 sudo: …` from the local socket), the tag is
//! `app:` or `app[pid]:`.
//!
//! An RFC 3164 timestamp has no year and no zone: it is read as UTC in the
//! current year, or the previous one if that would put it more than a day in
//! the future (a December message read in January).
//!
//! [`decode`] maps a message to `level` (from the severity, or guessed from
//! the text without a PRI) and `fields`: `facility` and `severity` (names),
//! `hostname`, `appname`, `procid`, `msgid` when present, and
//! `structured_data` as `{sd-id: {param: value}}` (a parameter repeated in
//! one element becomes an array of its values).

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::{guess_level, undecoded, Decoded};

/// Which grammar a message followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
}

/// The parts of one syslog message. Absent and NILVALUE (`-`) parts are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyslogMessage {
    pub format: SyslogFormat,
    /// Facility code 0..=23; `None` when the message had no PRI.
    pub facility: Option<u8>,
    /// Severity code 0..=7; `None` when the message had no PRI.
    pub severity: Option<u8>,
    pub ts: Option<DateTime<Utc>>,
    pub hostname: Option<String>,
    /// RFC 5424 APP-NAME, or the RFC 3164 tag without its `[pid]`.
    pub appname: Option<String>,
    pub procid: Option<String>,
    /// RFC 5424 only.
    pub msgid: Option<String>,
    /// RFC 5424 structured data: `{sd-id: {param: value}}`.
    pub structured_data: Map<String, Value>,
    /// The MSG part, without a leading UTF-8 BOM or trailing CR/LF.
    pub message: String,
}

/// Why a line is not a syslog message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    #[error("empty line")]
    Empty,
    #[error("invalid PRI: expected <0> to <191>")]
    Pri,
    #[error("no PRI and no timestamp: not a syslog message")]
    NotSyslog,
    #[error("malformed RFC 5424 message: {0}")]
    Rfc5424(&'static str),
}

impl SyslogMessage {
    /// The facility's name (`"auth"`, `"local0"`…).
    pub fn facility_name(&self) -> Option<&'static str> {
        self.facility.map(facility_name)
    }

    /// The severity's name (`"err"`, `"warning"`…).
    pub fn severity_name(&self) -> Option<&'static str> {
        self.severity.map(severity_name)
    }

    /// The event level: from the severity, or guessed from the message.
    pub fn level(&self) -> &'static str {
        match self.severity {
            Some(s) => severity_level(s),
            None => guess_level(&self.message),
        }
    }

    /// The codec's view of the message.
    pub fn into_decoded(self) -> Decoded {
        let level = self.level().to_string();
        let mut fields = Map::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                fields.insert(k.into(), Value::String(v));
            }
        };
        put("facility", self.facility_name().map(String::from));
        put("severity", self.severity_name().map(String::from));
        put("hostname", self.hostname);
        put("appname", self.appname);
        put("procid", self.procid);
        put("msgid", self.msgid);
        if !self.structured_data.is_empty() {
            fields.insert("structured_data".into(), Value::Object(self.structured_data));
        }
        Decoded { ts: self.ts, level, message: self.message, fields }
    }
}

/// Facility name for a code (RFC 5424 table 1, names as in rsyslog).
pub fn facility_name(code: u8) -> &'static str {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.get(usize::from(code)).copied().unwrap_or("unknown")
}

/// Severity name for a code (as in `syslog.h`).
pub fn severity_name(code: u8) -> &'static str {
    const NAMES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];
    NAMES.get(usize::from(code)).copied().unwrap_or("unknown")
}

/// Event level for a syslog severity: 0-2 fatal, 3 error, 4 warn, 5-6 info,
/// 7 debug (anything larger: debug).
pub fn severity_level(code: u8) -> &'static str {
    match code {
        0..=2 => "fatal",
        3 => "error",
        4 => "warn",
        5 | 6 => "info",
        _ => "debug",
    }
}

/// Decode one line (never fails; see the module docs).
pub(super) fn decode(line: &str) -> Decoded {
    match parse_syslog_at(line, Utc::now()) {
        Ok(m) => m.into_decoded(),
        Err(e) => undecoded(line, e.to_string()),
    }
}

/// Parse a syslog message, RFC 3164 years relative to the current time.
pub fn parse_syslog(line: &str) -> Option<SyslogMessage> {
    parse_syslog_at(line, Utc::now()).ok()
}

/// Parse a syslog message; `now` places RFC 3164 timestamps in a year.
pub fn parse_syslog_at(line: &str, now: DateTime<Utc>) -> Result<SyslogMessage, SyslogError> {
    let line = line.trim_end_matches(['\r', '\n', '\0']);
    if line.is_empty() {
        return Err(SyslogError::Empty);
    }
    let (pri, rest) = parse_pri(line)?;
    match pri {
        Some(pri) if is_version(rest) => rfc5424(pri, rest),
        _ => rfc3164(pri, rest, now),
    }
}

/// `<N>` at the start, N in 0..=191; absent is fine, malformed is not.
fn parse_pri(s: &str) -> Result<(Option<u8>, &str), SyslogError> {
    let Some(rest) = s.strip_prefix('<') else { return Ok((None, s)) };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=3).contains(&digits) || rest.as_bytes().get(digits) != Some(&b'>') {
        return Err(SyslogError::Pri);
    }
    match rest[..digits].parse::<u8>() {
        Ok(pri) if pri <= 191 => Ok((Some(pri), &rest[digits + 1..])),
        _ => Err(SyslogError::Pri),
    }
}

/// An RFC 5424 VERSION (1-2 digits, not starting with 0) and a space.
fn is_version(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    (1..=2).contains(&digits) && b[0] != b'0' && b.get(digits) == Some(&b' ')
}

fn split_pri(pri: u8) -> (Option<u8>, Option<u8>) {
    (Some(pri >> 3), Some(pri & 7))
}

fn nil(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_string())
}

/// The MSG part: a leading BOM removed.
fn msg(s: &str) -> String {
    s.strip_prefix('\u{feff}').unwrap_or(s).to_string()
}

fn rfc5424(pri: u8, s: &str) -> Result<SyslogMessage, SyslogError> {
    let mut rest = s;
    let mut header = [""; 6];
    for (i, name) in ["version", "timestamp", "hostname", "app-name", "procid", "msgid"].iter().enumerate() {
        let Some((tok, r)) = rest.split_once(' ') else { return Err(SyslogError::Rfc5424(truncated(name))) };
        if tok.is_empty() {
            return Err(SyslogError::Rfc5424("empty header field (two spaces)"));
        }
        header[i] = tok;
        rest = r;
    }
    let [_, ts, hostname, appname, procid, msgid] = header;
    let ts = match ts {
        "-" => None,
        ts => match DateTime::parse_from_rfc3339(ts) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => return Err(SyslogError::Rfc5424("invalid timestamp")),
        },
    };
    let (structured_data, rest) = match rest.strip_prefix('-') {
        Some(r) => (Map::new(), r),
        None if rest.starts_with('[') => parse_sd(rest)?,
        None => return Err(SyslogError::Rfc5424("structured data must be \"-\" or start with \"[\"")),
    };
    let message = match rest.strip_prefix(' ') {
        Some(m) => msg(m),
        None if rest.is_empty() => String::new(),
        None => return Err(SyslogError::Rfc5424("expected a space after the structured data")),
    };
    let (facility, severity) = split_pri(pri);
    Ok(SyslogMessage {
        format: SyslogFormat::Rfc5424,
        facility,
        severity,
        ts,
        hostname: nil(hostname),
        appname: nil(appname),
        procid: nil(procid),
        msgid: nil(msgid),
        structured_data,
        message,
    })
}

fn truncated(field: &str) -> &'static str {
    match field {
        "version" | "timestamp" => "header ends before the hostname",
        "hostname" => "header ends before the app-name",
        "app-name" => "header ends before the procid",
        "procid" => "header ends before the msgid",
        _ => "header ends before the structured data",
    }
}

/// One or more `[id name="value" …]` elements; returns what follows them.
fn parse_sd(mut s: &str) -> Result<(Map<String, Value>, &str), SyslogError> {
    let err = SyslogError::Rfc5424;
    let mut sd = Map::new();
    while let Some(r) = s.strip_prefix('[') {
        let id_end = r.find([' ', ']', '=', '"']).ok_or(err("unterminated structured data element"))?;
        let id = &r[..id_end];
        if id.is_empty() || !matches!(r.as_bytes()[id_end], b' ' | b']') {
            return Err(err("invalid SD-ID"));
        }
        let mut r = &r[id_end..];
        let mut params = match sd.remove(id) {
            Some(Value::Object(p)) => p,
            _ => Map::new(),
        };
        loop {
            if let Some(after) = r.strip_prefix(']') {
                r = after;
                break;
            }
            r = r.strip_prefix(' ').ok_or(err("expected a space or \"]\" in a structured data element"))?;
            let name_end = r.find(['=', ' ', ']', '"']).ok_or(err("unterminated structured data element"))?;
            let name = &r[..name_end];
            if name.is_empty() || r.as_bytes()[name_end] != b'=' {
                return Err(err("expected PARAM-NAME=\"value\" in structured data"));
            }
            r = r[name_end + 1..].strip_prefix('"').ok_or(err("structured data value must be quoted"))?;
            let (value, after) = sd_value(r).ok_or(err("unterminated structured data value"))?;
            r = after;
            match params.get_mut(name) {
                Some(Value::Array(values)) => values.push(Value::String(value)),
                Some(old) => {
                    let first = old.take();
                    *old = Value::Array(vec![first, Value::String(value)]);
                }
                None => {
                    params.insert(name.to_string(), Value::String(value));
                }
            }
        }
        sd.insert(id.to_string(), Value::Object(params));
        s = r;
    }
    Ok((sd, s))
}

/// A PARAM-VALUE after its opening quote: `\"`, `\\` and `\]` unescaped, any
/// other backslash kept (RFC 5424 §6.3.3). Returns the value and the rest
/// after the closing quote; `None` if it never closes.
fn sd_value(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => return None,
            },
            c => value.push(c),
        }
    }
    None
}

fn rfc3164(pri: Option<u8>, s: &str, now: DateTime<Utc>) -> Result<SyslogMessage, SyslogError> {
    let (facility, severity) = pri.map(split_pri).unwrap_or((None, None));
    let mut m = SyslogMessage {
        format: SyslogFormat::Rfc3164,
        facility,
        severity,
        ts: None,
        hostname: None,
        appname: None,
        procid: None,
        msgid: None,
        structured_data: Map::new(),
        message: String::new(),
    };
    let Some((ts, rest)) = timestamp_3164(s, now) else {
        // RFC 3164 §4.3.3: without a timestamp, all after the PRI is the MSG.
        if pri.is_none() {
            return Err(SyslogError::NotSyslog);
        }
        m.message = msg(s);
        return Ok(m);
    };
    m.ts = ts;
    let mut rest = rest.trim_start_matches(' ');
    let first = rest.split(' ').next().unwrap_or("");
    if !first.is_empty() && tag(first).is_none() {
        m.hostname = Some(first.to_string());
        rest = rest[first.len()..].strip_prefix(' ').unwrap_or("");
    }
    let word = rest.split(' ').next().unwrap_or("");
    if let Some((app, pid)) = tag(word) {
        m.appname = Some(app.to_string());
        m.procid = pid.map(String::from);
        rest = &rest[word.len()..];
        rest = rest.strip_prefix(' ').unwrap_or(rest);
    }
    m.message = msg(rest);
    Ok(m)
}

/// `app:`, `app[pid]:` or `app[pid]` → (app, pid).
fn tag(word: &str) -> Option<(&str, Option<&str>)> {
    let body = word.strip_suffix(':').unwrap_or(word);
    if let Some(open) = body.find('[') {
        let pid = body[open + 1..].strip_suffix(']')?;
        let app = &body[..open];
        (!app.is_empty() && !pid.is_empty() && !pid.contains(['[', ']'])).then_some((app, Some(pid)))
    } else {
        (body.len() < word.len() && !body.is_empty() && !body.contains(']')).then_some((body, None))
    }
}

/// A leading RFC 3164 timestamp: `Mmm dd hh:mm:ss[.frac]`, `Mmm dd yyyy
/// hh:mm:ss[.frac]` or an RFC 3339 token. Returns the time (`None` when
/// shaped like a timestamp but not a real date) and what follows, which is
/// empty or starts with a space.
fn timestamp_3164(s: &str, now: DateTime<Utc>) -> Option<(Option<DateTime<Utc>>, &str)> {
    let b = s.as_bytes();
    if b.first().is_some_and(u8::is_ascii_digit) {
        let end = s.find(' ').unwrap_or(s.len());
        let t = DateTime::parse_from_rfc3339(&s[..end]).ok()?;
        return Some((Some(t.with_timezone(&Utc)), &s[end..]));
    }
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let month = MONTHS.iter().position(|m| s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case(m)))? as u32 + 1;
    let mut i = 3;
    let spaces = b[i..].iter().take_while(|&&c| c == b' ').count();
    if !(1..=2).contains(&spaces) {
        return None;
    }
    i += spaces;
    let (day, n) = digits(&b[i..], 1, 2)?;
    i += n;
    if b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let mut year = None;
    if let Some((y, 4)) = digits(&b[i..], 4, 4) {
        if b.get(i + 4) == Some(&b' ') {
            year = Some(y as i32);
            i += 5;
        }
    }
    let (h, _) = digits(b.get(i..i + 2)?, 2, 2)?;
    let (mi, _) = digits(b.get(i + 3..i + 5)?, 2, 2)?;
    let (sec, _) = digits(b.get(i + 6..i + 8)?, 2, 2)?;
    if b[i + 2] != b':' || b[i + 5] != b':' {
        return None;
    }
    i += 8;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for k in 0..9 {
            nanos = nanos * 10 + b.get(i + 1 + k).filter(|_| k < n).map_or(0, |d| u32::from(d - b'0'));
        }
        i += 1 + n;
    }
    if i < b.len() && b[i] != b' ' {
        return None;
    }
    // Everything up to `i` is ASCII, so `i` is a char boundary.
    let rest = &s[i..];
    let time = NaiveTime::from_hms_nano_opt(h, mi, sec, nanos);
    let ts = time.and_then(|t| match year {
        Some(y) => NaiveDate::from_ymd_opt(y, month, day).map(|d| d.and_time(t).and_utc()),
        None => place_in_year(month, day, t, now),
    });
    Some((ts, rest))
}

/// `min..=max` ASCII digits at the start of `b` (no more may follow):
/// their value and count.
fn digits(b: &[u8], min: usize, max: usize) -> Option<(u32, usize)> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n < min || n > max {
        return None;
    }
    Some((b[..n].iter().fold(0u32, |v, d| v * 10 + u32::from(d - b'0')), n))
}

/// The current year, or the previous one if that is more than a day ahead.
fn place_in_year(month: u32, day: u32, time: NaiveTime, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let limit = now.checked_add_signed(TimeDelta::days(1))?;
    let this_year = NaiveDate::from_ymd_opt(now.year(), month, day).map(|d| d.and_time(time).and_utc());
    match this_year {
        Some(t) if t <= limit => Some(t),
        _ => NaiveDate::from_ymd_opt(now.year() - 1, month, day).map(|d| d.and_time(time).and_utc()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn now() -> DateTime<Utc> {
        at("2026-06-15T12:00:00Z")
    }

    fn p(line: &str) -> SyslogMessage {
        parse_syslog_at(line, now()).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn rfc5424_examples_from_the_rfc() {
        let m = p("<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(m.format, SyslogFormat::Rfc5424);
        assert_eq!((m.facility_name(), m.severity_name(), m.level()), (Some("auth"), Some("crit"), "fatal"));
        assert_eq!(m.ts, Some(at("2003-10-11T22:14:15.003Z")));
        assert_eq!(m.hostname.as_deref(), Some("mymachine.example.com"));
        assert_eq!(m.appname.as_deref(), Some("su"));
        assert_eq!(m.procid, None);
        assert_eq!(m.msgid.as_deref(), Some("ID47"));
        assert_eq!(m.message, "'su root' failed for lonvick on /dev/pts/8");

        let m =
            p("<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.");
        assert_eq!((m.facility_name(), m.severity_name(), m.level()), (Some("local4"), Some("notice"), "info"));
        assert_eq!(m.ts, Some(at("2003-08-24T12:14:15.000003Z")));
        assert_eq!(m.procid.as_deref(), Some("8710"));
        assert_eq!(m.msgid, None);
        assert_eq!(m.message, "%% It's time to make the do-nuts.");

        let d = decode(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" \
             eventSource=\"Application\" eventID=\"1011\"] \u{feff}An application event log entry...",
        );
        assert_eq!(d.message, "An application event log entry...");
        assert_eq!(d.level, "info");
        assert_eq!(
            Value::Object(d.fields),
            serde_json::json!({
                "facility": "local4", "severity": "notice", "hostname": "mymachine.example.com",
                "appname": "evntslog", "msgid": "ID47",
                "structured_data": {"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}}
            })
        );

        let m =
            p("<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" \
             eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]");
        assert_eq!(m.message, "");
        assert_eq!(m.structured_data["examplePriority@32473"]["class"], "high");
        assert_eq!(m.structured_data.len(), 2);
    }

    #[test]
    fn rfc5424_structured_data_escapes_and_nils() {
        let m = p(
            r#"<14>1 - - - - - [meta path="C:\\dir\\x" q="say \"hi\"" br="a\]b" other="\n" ü="日本" r="1" r="2"][x@1] msg"#,
        );
        assert_eq!(m.ts, None);
        assert_eq!((m.hostname.clone(), m.appname.clone(), m.procid.clone()), (None, None, None));
        let meta = &m.structured_data["meta"];
        assert_eq!(meta["path"], r"C:\dir\x");
        assert_eq!(meta["q"], r#"say "hi""#);
        assert_eq!(meta["br"], "a]b");
        assert_eq!(meta["other"], r"\n");
        assert_eq!(meta["ü"], "日本");
        assert_eq!(meta["r"], serde_json::json!(["1", "2"]));
        assert_eq!(m.structured_data["x@1"], serde_json::json!({}));
        assert_eq!(m.message, "msg");
        // rsyslog's RSYSLOG_SyslogProtocol23Format, trailing newline from UDP
        let m = p("<30>1 2026-01-02T03:04:05.123456+00:00 web-1 nginx 4242 - [origin ip=\"10.1.2.3\"] GET / 200\n");
        assert_eq!(m.message, "GET / 200");
        assert_eq!(m.structured_data["origin"]["ip"], "10.1.2.3");
        let m = p("<14>1 - - - - - -");
        assert_eq!(m.message, "");
    }

    #[test]
    fn rfc5424_malformed_is_kept_whole() {
        for (line, why) in [
            ("<165>1 2003-10-11T22:14:15.003Z host app", "header ends before the procid"),
            ("<165>1 2003-10-11T22:14:15.003Z host app - ID", "header ends before the structured data"),
            ("<165>1 yesterday host app - - - x", "invalid timestamp"),
            ("<165>1 -  host app - - - x", "empty header field (two spaces)"),
            ("<165>1 - h a - - [id p=unquoted] x", "structured data value must be quoted"),
            ("<165>1 - h a - - [id p=\"open] x", "unterminated structured data value"),
            ("<165>1 - h a - - [id p=\"v\"]x", "expected a space after the structured data"),
            ("<165>1 - h a - - [id", "unterminated structured data element"),
            ("<165>1 - h a - - [=x]", "invalid SD-ID"),
            ("<165>1 - h a - - [id  a=\"1\"]", "expected PARAM-NAME=\"value\" in structured data"),
            ("<165>1 - h a - - plain message", "structured data must be \"-\" or start with \"[\""),
        ] {
            let d = decode(line);
            assert_eq!(d.message, line);
            assert_eq!(d.fields["decode_error"], format!("malformed RFC 5424 message: {why}"), "{line}");
        }
    }

    #[test]
    fn rfc3164_real_world() {
        let m = p("<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(m.format, SyslogFormat::Rfc3164);
        assert_eq!((m.facility_name(), m.severity_name(), m.level()), (Some("auth"), Some("crit"), "fatal"));
        assert_eq!(m.ts, Some(at("2025-10-11T22:14:15Z")));
        assert_eq!(m.hostname.as_deref(), Some("mymachine"));
        assert_eq!(m.appname.as_deref(), Some("su"));
        assert_eq!(m.procid.as_deref(), Some("123"));
        assert_eq!(m.message, "'su root' failed for lonvick on /dev/pts/8");

        // RFC 3164's own example: no tag.
        let m = p("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!");
        assert_eq!(m.ts, Some(at("2026-02-05T17:32:18Z")));
        assert_eq!((m.hostname.as_deref(), m.appname.as_deref()), (Some("10.0.0.99"), None));
        assert_eq!(m.message, "Use the BFG!");

        // From a file written by rsyslog: no PRI, the level is guessed.
        let m = p("Jun  1 02:03:04 mail-1 postfix/smtpd[99]: warning: connect from unknown[10.0.0.1]");
        assert_eq!((m.facility, m.severity, m.level()), (None, None, "warn"));
        assert_eq!(m.appname.as_deref(), Some("postfix/smtpd"));
        assert_eq!(m.message, "warning: connect from unknown[10.0.0.1]");

        // ISO timestamp (rsyslog RSYSLOG_ForwardFormat, systemd).
        let m = p("<38>2026-01-02T03:04:05.123456+01:00 fw01 sshd[2021]: Accepted publickey for root");
        assert_eq!(m.ts, Some(at("2026-01-02T02:04:05.123456Z")));
        assert_eq!(
            (m.facility_name(), m.hostname.as_deref(), m.appname.as_deref()),
            (Some("auth"), Some("fw01"), Some("sshd"))
        );

        // The local socket: no hostname.
        let m = p("<86>Jan  2 03:04:05 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls");
        assert_eq!(
            (m.facility_name(), m.hostname.as_deref(), m.appname.as_deref()),
            (Some("authpriv"), None, Some("sudo"))
        );
        assert_eq!(m.message, "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls");

        let m = p("<4>Jun 15 03:04:05.250 host kernel: [12345.678] Out of memory: Killed process 42");
        assert_eq!((m.facility_name(), m.level()), (Some("kern"), "warn"));
        assert_eq!(m.ts, Some(at("2026-06-15T03:04:05.250Z")));

        // Cisco ASA with a year.
        let m = p("<190>Jan 02 2024 03:04:05 asa-1 %ASA-6-302013: Built outbound TCP connection");
        assert_eq!(m.ts, Some(at("2024-01-02T03:04:05Z")));
        assert_eq!((m.facility_name(), m.appname.as_deref()), (Some("local7"), Some("%ASA-6-302013")));

        // PRI and nothing recognisable: all of it is the message.
        let m = p("<13>just a message");
        assert_eq!((m.facility_name(), m.severity_name()), (Some("user"), Some("notice")));
        assert_eq!((m.ts, m.hostname.clone()), (None, None));
        assert_eq!(m.message, "just a message");

        // A timestamp and nothing else.
        let m = p("<13>Jun  1 00:00:00");
        assert_eq!((m.hostname, m.message.as_str()), (None, ""));

        // Multi-byte text.
        let m = p("<14>Mar  3 01:02:03 hôte dæmon[7]: ünïcødé 日本 🎉");
        assert_eq!((m.hostname.as_deref(), m.appname.as_deref()), (Some("hôte"), Some("dæmon")));
        assert_eq!(m.message, "ünïcødé 日本 🎉");
    }

    #[test]
    fn rfc3164_year_is_inferred() {
        let new_year = at("2026-01-01T00:10:00Z");
        let ts = |line: &str| parse_syslog_at(line, new_year).unwrap().ts;
        assert_eq!(ts("<13>Dec 31 23:59:00 h a: x"), Some(at("2025-12-31T23:59:00Z")));
        assert_eq!(ts("<13>Jan  1 12:00:00 h a: x"), Some(at("2026-01-01T12:00:00Z")));
        assert_eq!(ts("<13>Jan  2 00:10:00 h a: x"), Some(at("2026-01-02T00:10:00Z")));
        assert_eq!(ts("<13>Jan  3 00:00:00 h a: x"), Some(at("2025-01-03T00:00:00Z")));
        // Feb 29 from the last leap year, and shaped-like-a-date nonsense.
        assert_eq!(
            parse_syslog_at("<13>Feb 29 01:00:00 h a: x", at("2025-03-01T00:00:00Z")).unwrap().ts,
            Some(at("2024-02-29T01:00:00Z"))
        );
        assert_eq!(ts("<13>Feb 30 01:00:00 h a: x"), None);
        assert_eq!(ts("<13>Feb 28 25:00:00 h a: x"), None);
    }

    #[test]
    fn rfc3164_malformed_is_kept_whole() {
        for (line, why) in [
            ("", "empty line"),
            ("\r\n", "empty line"),
            ("hello world", "no PRI and no timestamp: not a syslog message"),
            ("Oct 11 22:14 host app: x", "no PRI and no timestamp: not a syslog message"),
            ("<34", "invalid PRI: expected <0> to <191>"),
            ("<192>Oct 11 22:14:15 h a: x", "invalid PRI: expected <0> to <191>"),
            ("<1234>x", "invalid PRI: expected <0> to <191>"),
            ("<>x", "invalid PRI: expected <0> to <191>"),
            ("<é>x", "invalid PRI: expected <0> to <191>"),
        ] {
            let d = decode(line);
            assert_eq!(d.message, line);
            assert_eq!(d.fields["decode_error"], why, "{line:?}");
        }
    }

    #[test]
    fn decoded_fields_for_3164() {
        let d = decode("<11>Jan  2 03:04:05 db-1 postgres[77]: FATAL:  password authentication failed");
        assert_eq!(d.level, "error");
        assert_eq!(
            Value::Object(d.fields),
            serde_json::json!({"facility": "user", "severity": "err", "hostname": "db-1", "appname": "postgres", "procid": "77"})
        );
        assert!(parse_syslog("<11>Jan  2 03:04:05 db-1 postgres[77]: x")
            .is_some_and(|m| m.appname.as_deref() == Some("postgres")));
    }

    #[test]
    fn names_and_levels() {
        assert_eq!(facility_name(16), "local0");
        assert_eq!(facility_name(24), "unknown");
        assert_eq!(severity_name(9), "unknown");
        let levels: Vec<_> = (0..8).map(severity_level).collect();
        assert_eq!(levels, ["fatal", "fatal", "fatal", "error", "warn", "info", "info", "debug"]);
    }
}
