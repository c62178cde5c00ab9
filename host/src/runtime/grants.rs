//! What one attempt is allowed to use: outbound hosts, secret names, mail,
//! key-value, files and notifications. Built by the caller from the plugin's request and the
//! tenant's decision; checked by the runtime on every call.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Hosts outbound HTTP may reach: `api.example.com`, `api.example.com:8443`,
    /// `*.example.com` (any subdomain, not the apex). `*` alone allows every
    /// host and is meant for local trials only.
    pub allowed_hosts: Vec<String>,
    /// Secret names the plugin may read; `*` allows all of the tenant's.
    pub secrets: Vec<String>,
    pub mail: bool,
    pub kv: bool,
    pub files: bool,
    /// In-app notifications (`notify`).
    #[serde(default)]
    pub notify: bool,
}

impl Grants {
    /// Everything: for a built-in plugin whose every request is granted, or
    /// a local trial run.
    pub fn all() -> Self {
        Self {
            allowed_hosts: vec!["*".into()],
            secrets: vec!["*".into()],
            mail: true,
            kv: true,
            files: true,
            notify: true,
        }
    }

    /// What a plugin asks for in its `capabilities`, as grants.
    pub fn requested(capabilities: &[String]) -> Self {
        let mut grants = Grants::default();
        for capability in capabilities {
            match capability.split_once(':') {
                Some(("http", host)) => grants.allowed_hosts.push(host.to_owned()),
                Some(("secret", name)) => grants.secrets.push(name.to_owned()),
                _ => match capability.as_str() {
                    "mail" => grants.mail = true,
                    "kv" => grants.kv = true,
                    "files" => grants.files = true,
                    "notify" => grants.notify = true,
                    _ => {}
                },
            }
        }
        grants
    }

    pub fn allows_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == "*" || s == name)
    }

    /// Whether `host` (with `port` if the URL names one) matches a grant.
    pub fn allows_host(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            if pattern == "*" {
                return true;
            }
            let (pattern_host, pattern_port) = match pattern.rsplit_once(':') {
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(p) => (h.to_owned(), Some(p)),
                    Err(_) => return false,
                },
                None => (pattern.clone(), None),
            };
            if pattern_port.is_some() && pattern_port != port {
                return false;
            }
            match pattern_host.strip_prefix("*.") {
                Some(suffix) => {
                    host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"))
                }
                None => host == pattern_host,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_host_matches_exact_wildcard_and_port_patterns() {
        let grants = Grants {
            allowed_hosts: vec![
                "api.example.com".into(),
                "*.corp.test".into(),
                "local:8080".into(),
            ],
            ..Grants::default()
        };
        let cases = [
            ("api.example.com", None, true),
            ("API.example.com.", Some(443), true),
            ("evil-api.example.com", None, false),
            ("example.com", None, false),
            ("a.corp.test", None, true),
            ("a.b.corp.test", None, true),
            ("corp.test", None, false),
            ("xcorp.test", None, false),
            ("local", Some(8080), true),
            ("local", Some(8081), false),
            ("local", None, false),
        ];
        for (host, port, allowed) in cases {
            assert_eq!(grants.allows_host(host, port), allowed, "{host} {port:?}");
        }
        assert!(!Grants::default().allows_host("anything", None));
        assert!(Grants::all().allows_host("anything", Some(1)));
    }

    #[test]
    fn requested_reads_capability_strings() {
        let grants = Grants::requested(&[
            "http:api.example.com".into(),
            "secret:SMTP_PASSWORD".into(),
            "mail".into(),
            "kv".into(),
            "bogus".into(),
        ]);
        assert_eq!(grants.allowed_hosts, ["api.example.com"]);
        assert!(grants.allows_secret("SMTP_PASSWORD") && !grants.allows_secret("OTHER"));
        assert!(grants.mail && grants.kv && !grants.files);
    }
}
