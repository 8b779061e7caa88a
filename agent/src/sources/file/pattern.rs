//! Include patterns: globs whose `{org}` and `{app}` placeholders name the
//! event's org and app, e.g. `/var/log/apps/{org}/{app}/*.log`.

use regex::Regex;

#[derive(Debug, Clone)]
pub struct PathPattern {
    glob: String,
    regex: Regex,
}

impl PathPattern {
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        let mut glob = String::new();
        let mut re = String::from("^");
        let mut rest = pattern;
        let (mut orgs, mut apps) = (0, 0);
        while let Some(c) = rest.chars().next() {
            if let Some(r) = rest.strip_prefix("{org}") {
                orgs += 1;
                glob.push('*');
                re.push_str("(?P<org>[^/]+)");
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{app}") {
                apps += 1;
                glob.push('*');
                re.push_str("(?P<app>[^/]+)");
                rest = r;
            } else if let Some(r) = rest.strip_prefix("**") {
                glob.push_str("**");
                re.push_str(".*");
                rest = r;
            } else {
                glob.push(c);
                match c {
                    '*' => re.push_str("[^/]*"),
                    '?' => re.push_str("[^/]"),
                    '{' | '}' => {
                        return Err(format!("unknown placeholder in {pattern:?}: only {{org}} and {{app}} exist"))
                    }
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
                rest = &rest[c.len_utf8()..];
            }
        }
        if orgs > 1 || apps > 1 {
            return Err(format!("{pattern:?} names {{org}} or {{app}} more than once"));
        }
        if pattern.contains('[') {
            return Err(format!("{pattern:?}: character classes are not supported"));
        }
        re.push('$');
        let regex = Regex::new(&re).map_err(|e| format!("{pattern:?}: {e}"))?;
        glob::Pattern::new(&glob).map_err(|e| format!("{pattern:?}: {e}"))?;
        Ok(PathPattern { glob, regex })
    }

    /// The pattern as a plain glob (placeholders as `*`).
    pub fn glob(&self) -> &str {
        &self.glob
    }

    pub fn has_org(&self) -> bool {
        self.regex.capture_names().any(|n| n == Some("org"))
    }

    pub fn has_app(&self) -> bool {
        self.regex.capture_names().any(|n| n == Some("app"))
    }

    /// Paths matching now (directories excluded).
    pub fn matches(&self) -> Vec<std::path::PathBuf> {
        match glob::glob(&self.glob) {
            Ok(paths) => paths.filter_map(Result::ok).filter(|p| p.is_file()).collect(),
            Err(_) => vec![],
        }
    }

    /// `(org, app)` named by `path`, for the placeholders the pattern has.
    pub fn captures(&self, path: &str) -> Option<(Option<String>, Option<String>)> {
        let c = self.regex.captures(path)?;
        Some((c.name("org").map(|m| m.as_str().to_string()), c.name("app").map(|m| m.as_str().to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_capture_components() {
        let p = PathPattern::new("/var/log/apps/{org}/{app}/*.log").unwrap();
        assert!(p.has_org() && p.has_app());
        assert_eq!(p.captures("/var/log/apps/acme/web/a.log"), Some((Some("acme".into()), Some("web".into()))));
        assert_eq!(p.captures("/var/log/apps/acme/web/sub/a.log"), None);
        assert_eq!(p.captures("/var/log/apps/acme/web/a.txt"), None);
        let p = PathPattern::new("/srv/{app}.log").unwrap();
        assert_eq!(p.captures("/srv/api.log"), Some((None, Some("api".into()))));
        assert!(PathPattern::new("/a/{host}/x").is_err());
        assert!(PathPattern::new("/a/{org}/{org}").is_err());
    }
}
