//! W3C Trace Context: the `traceparent` and `tracestate` that tie the hops
//! of one request together, on HTTP headers and on stored messages (the
//! CloudEvents distributed-tracing extension uses the same two values).

use std::fmt;

/// Where a span sits: its trace, its own id, and the trace's flags and
/// vendor state, as carried between hops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
    /// The `tracestate` header, passed on unchanged.
    pub state: Option<String>,
}

/// The longest `tracestate` passed on; the W3C limit on members (32) and
/// their length (256 each) keeps real ones far below this.
const MAX_STATE: usize = 512;

impl SpanContext {
    /// The first span of a new trace, sampled.
    pub fn root() -> SpanContext {
        SpanContext {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            flags: 1,
            state: None,
        }
    }

    /// A new span in the same trace, with the same flags and state.
    pub fn child(&self) -> SpanContext {
        SpanContext {
            span_id: new_span_id(),
            ..self.clone()
        }
    }

    /// A child of `parent` if there is one, else a new trace.
    pub fn child_of(parent: Option<&SpanContext>) -> SpanContext {
        parent.map_or_else(SpanContext::root, SpanContext::child)
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Reads a `traceparent` (and `tracestate`) as the W3C Trace Context
    /// recommendation says: version `00` exactly, later versions by their
    /// first four fields; ids of lowercase hex, not all zero. `None` for
    /// anything else, so a malformed header starts a new trace instead of
    /// failing the request. A `tracestate` too long or not printable ASCII
    /// is dropped.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
        let text = traceparent.trim();
        let b = text.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex(&text[0..2])? as u8;
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let trace_id = hex(&text[3..35])?;
        let span_id = hex(&text[36..52])? as u64;
        let flags = hex(&text[53..55])? as u8;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_STATE && s.bytes().all(|c| (0x20..0x7f).contains(&c)))
            .map(str::to_string);
        Some(SpanContext {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// `00-TRACE-SPAN-FLAGS`.
    pub fn traceparent(&self) -> String {
        ascii(&self.traceparent_bytes())
    }

    /// The `traceparent` value in a buffer of its own, without allocating.
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&mut out[3..35], self.trace_id);
        write_hex(&mut out[36..52], u128::from(self.span_id));
        write_hex(&mut out[53..55], u128::from(self.flags));
        out
    }

    pub fn trace_hex(&self) -> String {
        trace_hex(self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        span_hex(self.span_id)
    }
}

impl fmt::Display for SpanContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

/// Writes the low `out.len()` hex digits of `value` into `out`, lowercase.
fn write_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Text known to be ASCII (hex digits and dashes) as a `String`.
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// A trace id as 32 lowercase hex digits.
pub fn trace_hex(id: u128) -> String {
    let mut out = [0u8; 32];
    write_hex(&mut out, id);
    ascii(&out)
}

/// A span id as 16 lowercase hex digits.
pub fn span_hex(id: u64) -> String {
    let mut out = [0u8; 16];
    write_hex(&mut out, u128::from(id));
    ascii(&out)
}

/// Whether `text` is a trace id as weft writes them.
pub fn is_trace_id(text: &str) -> bool {
    text.len() == 32 && hex(text).is_some_and(|id| id != 0)
}

/// Lowercase hex digits only (uppercase is invalid in trace context).
fn hex(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 32 {
        return None;
    }
    text.bytes().try_fold(0u128, |value, c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(digit))
    })
}

/// A new trace id: the time in milliseconds in its first 48 bits, as
/// UUIDv7 and X-Ray trace ids have it, then 80 random bits (W3C asks for
/// the rightmost 7 bytes to be random). Ids of traces started together
/// sort together, so the stores' indexes by trace grow at their end
/// instead of touching a random page per invocation.
fn new_trace_id() -> u128 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        & ((1 << 48) - 1);
    loop {
        let id = (u128::from(ms) << 80) | (rand::random::<u128>() & ((1 << 80) - 1));
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn new_traces_sort_by_when_they_began() {
        let first = SpanContext::root();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = SpanContext::root();
        assert!(
            later.trace_hex() > first.trace_hex(),
            "{} then {}",
            first.trace_hex(),
            later.trace_hex()
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let began = later.trace_id >> 80;
        assert!(
            now_ms - began < 1000,
            "the first 48 bits are the time in ms: {began} against {now_ms}"
        );
        // The rest is random: two traces of one millisecond differ there.
        let (a, b) = (SpanContext::root().trace_id, SpanContext::root().trace_id);
        assert_ne!(a & ((1 << 80) - 1), b & ((1 << 80) - 1));
    }

    #[test]
    fn reads_and_writes_version_00() {
        let c = SpanContext::parse(VALID, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(c.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_hex(), "00f067aa0ba902b7");
        assert!(c.sampled());
        assert_eq!(c.state.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(c.traceparent(), VALID);
        assert_eq!(c.to_string(), VALID);
        for _ in 0..100 {
            let c = SpanContext::root().child();
            let written = format!("00-{:032x}-{:016x}-{:02x}", c.trace_id, c.span_id, c.flags);
            assert_eq!(c.traceparent(), written);
            assert_eq!(SpanContext::parse(&written, None), Some(c));
        }
    }

    #[test]
    fn refuses_what_the_recommendation_refuses() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for b in bad {
            assert_eq!(SpanContext::parse(b, None), None, "{b:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_fields() {
        let c = SpanContext::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes",
            None,
        )
        .unwrap();
        assert_eq!(c.flags, 9);
        assert_eq!(
            c.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09"
        );
    }

    #[test]
    fn bad_tracestate_is_dropped_not_fatal() {
        let long = "a=".to_string() + &"b".repeat(600);
        for state in [long.as_str(), "k=v\u{7f}", "  "] {
            let c = SpanContext::parse(VALID, Some(state)).unwrap();
            assert_eq!(c.state, None);
        }
    }

    #[test]
    fn children_keep_the_trace_and_get_a_new_span() {
        let parent = SpanContext::parse(VALID, Some("a=b")).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(child.state, parent.state);
        let root = SpanContext::child_of(None);
        assert_ne!(root.trace_id, parent.trace_id);
        assert!(root.sampled());
        assert!(is_trace_id(&root.trace_hex()));
        assert!(!is_trace_id("r-123"));
    }
}
