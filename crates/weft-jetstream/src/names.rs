//! Names as JetStream takes them. weft's names (queue streams such as
//! `queue:TOPIC#url:https://example.com/hook`, bucket and object names) may
//! hold characters that NATS subjects, stream and bucket names forbid
//! (`.`, `*`, `>`, spaces, `/`, ...). Each is encoded into one token of
//! `[A-Za-z0-9_-]`: letters, digits and `-` stay, every other byte becomes
//! `_` and two upper-case hex digits. The code is prefix-free, so a name
//! decodes back exactly, and `encode(p)` starts `encode(k)` exactly when
//! `p` starts `k` (key listings by prefix stay on the server).
//!
//! A token longer than [`MAX_TOKEN`] (a stream name is a directory on the
//! server's disk) is replaced by `h` and the SHA-256 of the name; the name
//! itself is then kept in the stream's description.

use sha2::{Digest, Sha256};

/// The longest token kept as is; longer ones are hashed.
pub const MAX_TOKEN: usize = 160;

/// `name` as one token of `[A-Za-z0-9_-]`, which [`decode`] reverses.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The name [`encode`] made `token` from, or `None` if `token` is not one
/// of its outputs.
pub fn decode(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = token.get(i + 1..i + 3)?;
                if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                    return None;
                }
                let b = u8::from_str_radix(hex, 16).ok()?;
                if b.is_ascii_alphanumeric() || b == b'-' {
                    return None;
                }
                out.push(b);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The token that names `name` on the server: [`encode`], or for a long
/// name `h` and its SHA-256 (`_` cannot follow `h` then, so the two kinds
/// never meet: an encoded token's `_` is always followed by hex digits,
/// and a hashed token has no `_`).
pub fn token(name: &str) -> String {
    let encoded = encode(name);
    if encoded.len() <= MAX_TOKEN && !encoded.is_empty() {
        return format!("n{encoded}");
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("h{hex}")
}

/// The names weft gives its streams, subjects and buckets on one JetStream,
/// all under one prefix so that several apps (or test runs) share a server.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// `prefix` is `[A-Za-z0-9-]`, 1 to 32 characters.
    pub fn new(prefix: &str) -> Result<Names, String> {
        if prefix.is_empty() || prefix.len() > 32 || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "`{prefix}` cannot prefix JetStream names: use 1 to 32 letters, digits or `-`"
            ));
        }
        Ok(Names { prefix: prefix.into() })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The JetStream stream holding weft stream `name`.
    pub fn stream(&self, name: &str) -> String {
        format!("{}_q_{}", self.prefix, token(name))
    }

    /// The one subject of that stream.
    pub fn subject(&self, name: &str) -> String {
        format!("{}.q.{}", self.prefix, token(name))
    }

    /// The subject of the note (last error, delay) on one message.
    pub fn note(&self, name: &str, seq: u64) -> String {
        format!("{}.n.{}.{seq}", self.prefix, token(name))
    }

    /// Every note subject of one stream.
    pub fn notes_of(&self, name: &str) -> String {
        format!("{}.n.{}.*", self.prefix, token(name))
    }

    pub fn notes_stream(&self) -> String {
        format!("{}_notes", self.prefix)
    }

    pub fn notes_subjects(&self) -> String {
        format!("{}.n.>", self.prefix)
    }

    pub fn outbox_stream(&self) -> String {
        format!("{}_outbox", self.prefix)
    }

    pub fn outbox_subject(&self) -> String {
        format!("{}.outbox", self.prefix)
    }

    /// Where appends are announced, so consumers on every node wake.
    pub fn wake_subject(&self) -> String {
        format!("{}.wake", self.prefix)
    }

    pub fn kv_bucket(&self, bucket: &str) -> String {
        format!("{}_kv_{}", self.prefix, token(bucket))
    }

    pub fn object_bucket(&self, bucket: &str) -> String {
        format!("{}_obj_{}", self.prefix, token(bucket))
    }

    /// Whether a JetStream stream of this name is one of weft's.
    pub fn owns(&self, stream: &str) -> bool {
        stream
            .strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with('_'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &[
        "queue:orders",
        "queue:TOPIC#url:https://example.com/hook?x=1&y=2",
        "async:resize image",
        "bus-archive:default",
        "a.b.*.>",
        "_",
        "__5F",
        "ümlaut/ß",
        "tab\there",
        "-",
        "x_41",
    ];

    #[test]
    fn every_name_round_trips_through_one_safe_token() {
        for name in NAMES {
            let encoded = encode(name);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "`{encoded}` (from `{name}`) has a character JetStream forbids"
            );
            assert_eq!(decode(&encoded).as_deref(), Some(*name), "`{name}` did not round-trip");
        }
    }

    #[test]
    fn distinct_names_never_share_a_token() {
        let mut tokens: Vec<String> = NAMES.iter().map(|n| token(n)).collect();
        tokens.push(token(&"x".repeat(500)));
        tokens.push(token(&"x".repeat(501)));
        let before = tokens.len();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), before);
    }

    #[test]
    fn prefixes_are_kept() {
        for (p, k) in [("queue:", "queue:TOPIC#x"), ("a.b", "a.b.c"), ("ü", "üx")] {
            assert!(encode(k).starts_with(&encode(p)));
        }
        assert!(!encode("a_b").starts_with(&encode("a.")));
    }

    #[test]
    fn what_encode_cannot_make_does_not_decode() {
        for bad in ["a.b", "_4", "_zz", "_41", "_2e", "a b", "_C3"] {
            assert_eq!(decode(bad), None, "`{bad}` decoded");
        }
    }

    #[test]
    fn long_names_are_hashed_to_a_bounded_token() {
        let long = format!("queue:TOPIC#url:https://example.com/{}", "p".repeat(300));
        let t = token(&long);
        assert!(t.starts_with('h') && t.len() == 65, "{t}");
        assert!(token("queue:short").starts_with('n'));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(Names::new("weft").is_ok());
        for bad in ["", "a.b", "a_b", "a b", &"x".repeat(33)] {
            let e = Names::new(bad).unwrap_err();
            assert!(e.contains("letters, digits or `-`"), "{e}");
        }
        let n = Names::new("app-1").unwrap();
        assert!(n.owns(&n.stream("queue:x")) && n.owns(&n.outbox_stream()));
        assert!(!n.owns("app-10_q_x") && !n.owns("other"));
    }
}
