//! Config loading: TOML → `${VAR}` substitution → serde structs with
//! `deny_unknown_fields` → a `validate()` that collects every problem with its
//! key path, so a user fixes their file in one go.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One thing wrong with a config, at a key path such as `sources[0].include`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is not valid:\n{}", list(.problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

/// Collects problems while a config is checked.
#[derive(Debug, Default)]
pub struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }

    /// Record a problem unless `ok`.
    pub fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.problem(path, message);
        }
    }

    pub fn socket_addr(&mut self, path: &str, value: &str) {
        if value.parse::<std::net::SocketAddr>().is_err() {
            self.problem(path, format!("{value:?} is not an address like 127.0.0.1:9100"));
        }
    }

    /// One NATS URL, or several separated by commas (see [`crate::nats`]).
    pub fn nats_url(&mut self, path: &str, value: &str) {
        if let Err(e) = crate::nats::servers(value) {
            self.problem(path, e);
        }
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

/// Implemented by every daemon's config.
pub trait Validate {
    fn validate(&self, v: &mut Validator);

    /// Runtime worker threads the daemon asks for: 0 = one per core, 1 = a
    /// single-threaded runtime (no cross-thread wake-ups).
    fn worker_threads(&self) -> usize {
        0
    }
}

/// Read, substitute, parse and validate a config file.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&text, |k| std::env::var(k).ok())
        .map_err(|problems| ConfigError::Invalid { path: path.to_path_buf(), problems })
}

/// Parse config text with `lookup` resolving `${VAR}`.
pub fn parse<T: DeserializeOwned + Validate>(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<T, Vec<Problem>> {
    let text = substitute_env(text, lookup)?;
    let cfg: T = toml::from_str(&text).map_err(|e| vec![toml_problem(&e, &text)])?;
    let mut v = Validator::default();
    cfg.validate(&mut v);
    let problems = v.into_problems();
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

fn toml_problem(e: &toml::de::Error, text: &str) -> Problem {
    let path = match e.span() {
        Some(span) => {
            let line = 1 + text[..span.start.min(text.len())].matches('\n').count();
            format!("(line {line})")
        }
        None => "(file)".to_string(),
    };
    Problem { path, message: e.message().trim().to_string() }
}

/// Replace `${VAR}` (and `${VAR:-default}`) with values from `lookup`;
/// `$${` stays a literal `${`. Unset variables without a default are
/// problems, reported with their line.
pub fn substitute_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix("${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    problems
                        .push(Problem { path: format!("(line {})", lineno + 1), message: "unterminated ${".into() });
                    out.push('$');
                    rest = after;
                    continue;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                match lookup(name).or_else(|| default.map(str::to_string)) {
                    Some(v) => out.push_str(&v),
                    None => problems.push(Problem {
                        path: format!("(line {})", lineno + 1),
                        message: format!("environment variable {name} is not set"),
                    }),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "TOKEN" => Some("s3cr3t".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(substitute_env("a = \"${TOKEN}\"", env).unwrap(), "a = \"s3cr3t\"");
        assert_eq!(substitute_env("a = \"${NOPE:-x}\"", env).unwrap(), "a = \"x\"");
        assert_eq!(substitute_env("a = \"$${TOKEN} $5\"", env).unwrap(), "a = \"${TOKEN} $5\"");
        let err = substitute_env("x = 1\na = \"${NOPE}\"\nb = \"${ALSO}\"", env).unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(err[0].path, "(line 2)");
        assert!(err[1].message.contains("ALSO"));
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        addr: String,
        url: String,
    }

    impl Validate for Demo {
        fn validate(&self, v: &mut Validator) {
            v.socket_addr("addr", &self.addr);
            v.nats_url("url", &self.url);
        }
    }

    #[test]
    fn collects_every_problem() {
        let err = parse::<Demo>("addr = \"nope\"\nurl = \"http://x\"", env).err().unwrap();
        let paths: Vec<_> = err.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["addr", "url"]);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse::<Demo>("addr = \"127.0.0.1:1\"\nurl = \"nats://x\"\nextra = 1", env).err().unwrap();
        assert!(err[0].message.contains("unknown field `extra`"), "{err:?}");
    }
}

/// Parse a duration such as `250ms`, `5s`, `2m`, `1h`, `30d`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

impl Validator {
    /// Check a duration string and return it (zero when invalid).
    pub fn duration(&mut self, path: &str, value: &str) -> std::time::Duration {
        match parse_duration(value) {
            Some(d) => d,
            None => {
                self.problem(path, format!("{value:?} is not a duration like 500ms, 5s, 2m, 1h or 30d"));
                std::time::Duration::ZERO
            }
        }
    }
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}

/// Parse a size such as `512`, `64KiB`, `16MiB`, `1GiB` (or `KB`, `MB`,
/// `GB` in powers of 1000).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

impl Validator {
    /// Check a size string and return it (zero when invalid).
    pub fn bytes(&mut self, path: &str, value: &str) -> u64 {
        match parse_bytes(value) {
            Some(b) => b,
            None => {
                self.problem(path, format!("{value:?} is not a size like 1048576, 512KiB, 128MiB or 1GiB"));
                0
            }
        }
    }
}

#[cfg(test)]
mod bytes_tests {
    use super::parse_bytes;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("64KiB"), Some(65_536));
        assert_eq!(parse_bytes("128MiB"), Some(128 << 20));
        assert_eq!(parse_bytes("2 GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("5MB"), Some(5_000_000));
        assert_eq!(parse_bytes("MiB"), None);
        assert_eq!(parse_bytes("5 parsecs"), None);
        assert_eq!(parse_bytes("99999999999999999999GiB"), None);
    }
}
