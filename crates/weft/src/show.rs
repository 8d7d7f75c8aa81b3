//! How the CLI prints records, log lines and sizes.

use serde_json::Value;

/// `2026-11-23T10:15:30.123Z` for microseconds since the Unix epoch.
pub fn timestamp(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let millis = us.rem_euclid(1_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// An invocation record as aligned lines.
pub fn record(r: &Value) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!("request   {}\n", s("request_id")));
    out.push_str(&format!("function  {} v{}\n", s("function"), n("version")));
    out.push_str(&format!("trigger   {}\n", s("trigger")));
    out.push_str(&format!(
        "start     {}\n",
        timestamp(r.get("start_us").and_then(Value::as_i64).unwrap_or(0))
    ));
    let cold = if r.get("cold").and_then(Value::as_bool).unwrap_or(false) {
        "cold"
    } else {
        "warm"
    };
    out.push_str(&format!(
        "duration  {:.3} ms ({cold})\n",
        n("duration_us") as f64 / 1000.0
    ));
    out.push_str(&format!("memory    {} peak\n", bytes(n("peak_memory_bytes"))));
    out.push_str(&format!("outcome   {} (status {})\n", s("outcome"), n("status")));
    if let Some(e) = r.get("error").and_then(Value::as_str) {
        out.push_str(&format!("error     {e}\n"));
    }
    if let Some(p) = r.get("parent_request_id").and_then(Value::as_str) {
        out.push_str(&format!("parent    {p}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::timestamp(1_795_000_000_123_000), "2026-11-18T11:06:40.123Z");
    }
}
