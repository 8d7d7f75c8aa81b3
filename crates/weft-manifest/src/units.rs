//! Sizes (`"128MB"`) and durations (`"30s"`) as people write them.

use std::fmt;
use std::time::Duration;

/// A number of bytes, written with a unit in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)];
        for (unit, scale) in UNITS {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Parses `"128MB"`, `"512 KiB"`, `"1GB"`, `"5TB"`, `"65536B"`.
///
/// KB, MB, GB and TB are binary (1024-based), as in Lambda's memory
/// setting; KiB, MiB, GiB and TiB are accepted as the same.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("`{text}` does not start with a number"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is too large"))?;
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "B" => 1,
        "KB" | "KIB" | "K" => 1 << 10,
        "MB" | "MIB" | "M" => 1 << 20,
        "GB" | "GIB" | "G" => 1 << 30,
        "TB" | "TIB" | "T" => 1 << 40,
        "" => return Err(format!("`{text}` has no unit")),
        other => return Err(format!("`{other}` is not a size unit")),
    };
    n.checked_mul(scale)
        .map(ByteSize)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses `"30s"`, `"500ms"`, `"2m"`, `"1h"`, `"1m30s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the duration is empty".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (digits, after) = rest.split_at(split);
        if digits.is_empty() {
            return Err(format!("`{text}`: expected a number before `{after}`"));
        }
        let n: u64 = digits.parse().map_err(|_| format!("`{text}` is too large"))?;
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let part = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => return Err(format!("`{text}` has no unit")),
            other => return Err(format!("`{other}` is not a duration unit")),
        };
        total = total.saturating_add(part);
        rest = next;
    }
    Ok(total)
}

/// Writes a duration the way the manifest takes it: `500ms`, `30s`, `15m`, `4d`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, scale) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(scale) {
            return format!("{}{unit}", s / scale);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128MB"), Ok(ByteSize(128 << 20)));
        assert_eq!(parse_size("512 KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(parse_size("1gb"), Ok(ByteSize(1 << 30)));
        assert_eq!(parse_size("65536B"), Ok(ByteSize(65536)));
        assert_eq!(parse_size("5TiB"), Ok(ByteSize(5 << 40)));
        assert_eq!(ByteSize(5 << 40).to_string(), "5TB");
        assert!(parse_size("MB").is_err());
        assert!(parse_size("12").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999999999999GB").is_err());
        assert_eq!(ByteSize(128 << 20).to_string(), "128MB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert_eq!(parse_duration("4d"), Ok(Duration::from_secs(4 * 86_400)));
        for text in ["0s", "250ms", "30s", "15m", "12h", "14d"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
