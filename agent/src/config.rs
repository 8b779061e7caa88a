//! Agent configuration.

use std::path::PathBuf;

use serde::Deserialize;

use flotilla_core::codec::Codec;
use flotilla_core::config::{Validate, Validator};
use flotilla_core::subject::OrgId;

use crate::sources::file::pattern::PathPattern;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Defaults to the machine's hostname.
    pub host: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Checkpoints (and later the spill queue) live here.
    pub data_dir: PathBuf,
    #[serde(default = "default_http_addr")]
    pub http_addr: String,
    pub nats: Nats,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nats {
    /// Usually the proxy.
    pub url: String,
    /// The agent token's name.
    pub user: Option<String>,
    /// The agent token's secret (use `${VAR}`).
    pub password: Option<String>,
    /// Publishes awaiting their JetStream ack at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    File(FileSourceConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Globs; `{org}` and `{app}` match one path component (or part of one)
    /// and name the event's org and app.
    pub include: Vec<String>,
    /// Fixed org when the paths do not name it.
    pub org: Option<String>,
    /// Fixed app when the paths do not name it.
    pub app: Option<String>,
    #[serde(default)]
    pub codec: Codec,
    /// Where to start in files that exist when the agent first runs.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Longer lines are split into pieces of this size, each flagged.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How often files are checked for new lines and new files.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: String,
}

fn default_region() -> String {
    "local".into()
}
fn default_http_addr() -> String {
    "127.0.0.1:9101".into()
}
fn default_max_in_flight() -> usize {
    512
}
fn default_max_line_bytes() -> usize {
    256 * 1024
}
fn default_poll_interval() -> String {
    "250ms".into()
}

impl Config {
    pub fn host(&self) -> String {
        self.host.clone().unwrap_or_else(hostname)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        v.socket_addr("http_addr", &self.http_addr);
        v.nats_url("nats.url", &self.nats.url);
        v.check(self.nats.user.is_some() == self.nats.password.is_some(), "nats", "give both user and password, or neither");
        v.check((1..=65536).contains(&self.nats.max_in_flight), "nats.max_in_flight", "must be between 1 and 65536");
        v.check(!self.region.is_empty(), "region", "must not be empty");
        v.check(self.host.as_deref() != Some(""), "host", "must not be empty");
        v.check(!self.sources.is_empty(), "sources", "at least one [[sources]] is needed");
        for (i, s) in self.sources.iter().enumerate() {
            match s {
                SourceConfig::File(f) => f.validate(&format!("sources[{i}]"), v),
            }
        }
    }
}

impl FileSourceConfig {
    fn validate(&self, at: &str, v: &mut Validator) {
        v.check(!self.include.is_empty(), format!("{at}.include"), "at least one glob is needed");
        for (j, inc) in self.include.iter().enumerate() {
            match PathPattern::new(inc) {
                Ok(p) => {
                    v.check(self.org.is_some() || p.has_org(), format!("{at}.include[{j}]"), "has no {org}: set org = \"...\" on the source");
                    v.check(self.app.is_some() || p.has_app(), format!("{at}.include[{j}]"), "has no {app}: set app = \"...\" on the source");
                }
                Err(e) => v.problem(format!("{at}.include[{j}]"), e),
            }
        }
        if let Some(org) = &self.org {
            if let Err(e) = OrgId::new(org) {
                v.problem(format!("{at}.org"), e.to_string());
            }
        }
        v.check(self.app.as_deref() != Some(""), format!("{at}.app"), "must not be empty");
        v.check((64..=16 * 1024 * 1024).contains(&self.max_line_bytes), format!("{at}.max_line_bytes"), "must be between 64 and 16777216");
        v.duration(&format!("{at}.poll_interval"), &self.poll_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_config_parses() {
        let text = r#"
            host = "h1"
            data_dir = "/tmp/x"
            [nats]
            url = "nats://127.0.0.1:4223"
            user = "agent"
            password = "${TOKEN}"
            [[sources]]
            type = "file"
            include = ["/var/log/apps/{org}/{app}/*.log"]
            codec = "json"
        "#;
        let cfg: Config = flotilla_core::config::parse(text, |_| Some("s".into())).unwrap();
        assert_eq!(cfg.nats.password.as_deref(), Some("s"));
        assert_eq!(cfg.region, "local");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            data_dir = "/tmp/x"
            http_addr = "nowhere"
            [nats]
            url = "127.0.0.1:4222"
            user = "agent"
            [[sources]]
            type = "file"
            include = ["/var/log/{app}/*.log"]
            org = "Not An Org"
            poll_interval = "often"
            [[sources]]
            type = "file"
            include = []
        "#;
        let err = flotilla_core::config::parse::<Config>(text, |_| None).err().unwrap();
        let paths: Vec<_> = err.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["http_addr", "nats.url", "nats", "sources[0].org", "sources[0].poll_interval", "sources[1].include"],
            "{err:#?}"
        );
    }

    #[test]
    fn unknown_source_types_and_keys_are_errors() {
        let base = "data_dir = \"/x\"\n[nats]\nurl = \"nats://a:1\"\n[[sources]]\n";
        let err = flotilla_core::config::parse::<Config>(&format!("{base}type = \"carrier-pigeon\"\n"), |_| None).err().unwrap();
        assert!(err[0].message.contains("carrier-pigeon"), "{err:?}");
        let err = flotilla_core::config::parse::<Config>(&format!("{base}type = \"file\"\ninclude = [\"/a/{{org}}/{{app}}\"]\nbogus = 1\n"), |_| None)
            .err()
            .unwrap();
        assert!(err[0].message.contains("bogus"), "{err:?}");
    }
}
