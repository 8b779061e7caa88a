//! Per-sink filters on the org and app of the subject
//! `logs.<org>.<app>.<region>.<host>` and the payload's `level`. An event a
//! sink filters out is acked without being sent.

use std::borrow::Cow;

use serde::Deserialize;

use flotilla_core::subject::parse_log_subject;

use crate::config::FilterConfig;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    orgs: Vec<String>,
    apps: Vec<String>,
    /// Lower case.
    levels: Vec<String>,
}

impl Filter {
    pub fn new(cfg: &FilterConfig) -> Filter {
        Filter {
            orgs: cfg.orgs.clone(),
            apps: cfg.apps.clone(),
            levels: cfg.levels.iter().map(|l| l.to_ascii_lowercase()).collect(),
        }
    }

    pub fn keeps_everything(&self) -> bool {
        self.orgs.is_empty() && self.apps.is_empty() && self.levels.is_empty()
    }

    /// Does the sink send this message? A subject that is not a log subject
    /// fails an org or app filter; a payload without a `level` fails a
    /// level filter.
    pub fn keeps(&self, subject: &str, payload: &[u8]) -> bool {
        if !self.orgs.is_empty() || !self.apps.is_empty() {
            let Some(s) = parse_log_subject(subject) else {
                return false;
            };
            if !self.orgs.is_empty() && !self.orgs.iter().any(|o| o == s.org) {
                return false;
            }
            if !self.apps.is_empty() && !self.apps.iter().any(|a| a == s.app) {
                return false;
            }
        }
        if !self.levels.is_empty() {
            #[derive(Deserialize)]
            struct Level<'a> {
                #[serde(borrow)]
                level: Option<Cow<'a, str>>,
            }
            let level = serde_json::from_slice::<Level>(payload).ok().and_then(|l| l.level);
            let Some(level) = level else {
                return false;
            };
            if !self.levels.iter().any(|l| l.eq_ignore_ascii_case(&level)) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(orgs: &[&str], apps: &[&str], levels: &[&str]) -> Filter {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Filter::new(&FilterConfig { orgs: v(orgs), apps: v(apps), levels: v(levels) })
    }

    #[test]
    fn filters_on_subject_tokens_and_level() {
        let err = br#"{"level":"ERROR","message":"x"}"#;
        let info = br#"{"level":"info","message":"x"}"#;
        assert!(filter(&[], &[], &[]).keeps("anything", b"not json"));
        let f = filter(&["acme"], &["web", "api"], &["error"]);
        assert!(f.keeps("logs.acme.web.iad.h1", err));
        assert!(f.keeps("logs.acme.api.iad.h1", err));
        assert!(!f.keeps("logs.acme.web.iad.h1", info));
        assert!(!f.keeps("logs.globex.web.iad.h1", err));
        assert!(!f.keeps("logs.acme.db.iad.h1", err));
        assert!(!f.keeps("logs.acme.web", err), "not a log subject");
        assert!(!f.keeps("logs.acme.web.iad.h1", b"not json"));
        assert!(filter(&[], &[], &["warn"]).keeps("telemetry.x", br#"{"level":"Warn"}"#));
    }
}
