//! `allowed_hosts` entries: which outbound HTTP destinations a function may reach.

use std::fmt;

/// One `allowed_hosts` entry.
///
/// Forms: `api.example.com` (ports 80 and 443), `api.example.com:8080`,
/// `api.example.com:*` (any port), `*.example.com` (any subdomain, not the
/// domain itself), and `*` (any host, any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    text: String,
    host: HostPart,
    port: PortPart,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPart {
    Any,
    Exact(String),
    /// `*.suffix`: stored with the leading dot.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPart {
    Default,
    Any,
    Exact(u16),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let t = text.trim();
        if t == "*" {
            return Ok(HostPattern {
                text: t.into(),
                host: HostPart::Any,
                port: PortPart::Any,
            });
        }
        if t.contains("://") {
            return Err(format!(
                "`{t}` has a scheme: write only the host, e.g. `{}`",
                after_scheme(t)
            ));
        }
        if t.contains('/') {
            return Err(format!("`{t}` has a path: write only the host and an optional port"));
        }
        let (host, port) = match t.rsplit_once(':') {
            Some((h, "*")) => (h, PortPart::Any),
            Some((h, p)) => match p.parse::<u16>() {
                Ok(n) if n > 0 => (h, PortPart::Exact(n)),
                _ => {
                    return Err(format!("`{p}` is not a port: use a number from 1 to 65535, or `*`"));
                }
            },
            None => (t, PortPart::Default),
        };
        let host = host.to_ascii_lowercase();
        let part = if let Some(suffix) = host.strip_prefix("*.") {
            check_host_name(suffix, t)?;
            HostPart::Subdomains(format!(".{suffix}"))
        } else {
            check_host_name(&host, t)?;
            HostPart::Exact(host)
        };
        Ok(HostPattern {
            text: t.into(),
            host: part,
            port,
        })
    }

    /// Whether a request to `host` on `port` (with `default_port` for its scheme)
    /// is allowed by this entry.
    pub fn allows(&self, host: &str, port: u16, default_port: bool) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPart::Any => true,
            HostPart::Exact(h) => *h == host,
            HostPart::Subdomains(suffix) => host.ends_with(suffix.as_str()),
        };
        let port_ok = match self.port {
            PortPart::Any => true,
            PortPart::Default => default_port,
            PortPart::Exact(p) => p == port,
        };
        host_ok && port_ok
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn after_scheme(t: &str) -> &str {
    t.split_once("://").map_or(t, |(_, rest)| rest.trim_end_matches('/'))
}

fn check_host_name(host: &str, whole: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{whole}` is not a host name: use letters, digits, `-` and `.`, like `api.example.com` or `*.example.com`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::HostPattern;

    #[test]
    fn matching() {
        let p = HostPattern::parse("api.example.com").unwrap();
        assert!(p.allows("api.example.com", 443, true));
        assert!(p.allows("API.example.com", 80, true));
        assert!(!p.allows("api.example.com", 8080, false));
        assert!(!p.allows("example.com", 443, true));
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.allows("a.example.com", 443, true));
        assert!(!p.allows("example.com", 443, true));
        let p = HostPattern::parse("127.0.0.1:*").unwrap();
        assert!(p.allows("127.0.0.1", 9000, false));
        assert!(HostPattern::parse("*").unwrap().allows("x", 1, false));
    }

    #[test]
    fn bad_entries() {
        assert!(
            HostPattern::parse("https://api.example.com")
                .unwrap_err()
                .contains("write only the host")
        );
        assert!(HostPattern::parse("api.example.com/v1").is_err());
        assert!(HostPattern::parse("api.example.com:0").is_err());
        assert!(HostPattern::parse("api example").is_err());
    }
}
