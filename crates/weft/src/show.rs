//! How the CLI prints records, log lines and sizes.

use serde_json::Value;

/// RFC 3339, UTC, for microseconds since the Unix epoch.
pub fn timestamp(us: i64) -> String {
    weft_events::cloudevents::rfc3339(us)
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

/// A deploy's changes, one a line: `+ queue jobs`, `~ rule big-orders`,
/// `- queue old (loses 3 messages ...)`; those of kind `skip` are left
/// out (printed another way).
pub fn changes(changes: &Value, skip: Option<&str>) {
    let list: Vec<&Value> = changes
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|c| skip.is_none_or(|k| c["kind"].as_str() != Some(k)))
        .collect();
    if list.is_empty() && skip.is_none() {
        println!("  no changes");
    }
    for c in list {
        let sign = match c["action"].as_str() {
            Some("added") => '+',
            Some("removed") => '-',
            _ => '~',
        };
        let loss = match (c["loss"].as_str(), c["note"].as_str()) {
            (Some(l), _) => format!("  (loses data: {l})"),
            (None, Some(n)) => format!("  ({n})"),
            (None, None) => String::new(),
        };
        println!(
            "  {sign} {} {}{loss}",
            c["kind"].as_str().unwrap_or(""),
            c["name"].as_str().unwrap_or("")
        );
    }
}
