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
    out.push_str(&format!("billed    {} ms\n", n("billed_ms")));
    if let Some(init) = r.get("init_us").and_then(Value::as_u64) {
        out.push_str(&format!("init      {:.3} ms\n", init as f64 / 1000.0));
    }
    out.push_str(&format!(
        "memory    {} peak of {}\n",
        bytes(n("peak_memory_bytes")),
        bytes(n("memory_bytes"))
    ));
    out.push_str(&format!("outcome   {} (status {})\n", s("outcome"), n("status")));
    if let Some(e) = r.get("error").and_then(Value::as_str) {
        out.push_str(&format!("error     {e}\n"));
    }
    if let Some(p) = r.get("parent_request_id").and_then(Value::as_str) {
        out.push_str(&format!("parent    {p}\n"));
    }
    if let Some(t) = r.get("trace_id").and_then(Value::as_str) {
        out.push_str(&format!("trace     {t}\n"));
    }
    out
}

/// A log line as `weft logs --json` prints it: one JSON object, whose
/// `text` is the line's JSON when the function wrote a JSON line.
pub fn log_json(l: &Value) -> String {
    let line = l["line"].as_str().unwrap_or("");
    let text = match serde_json::from_str::<Value>(line) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
        _ => Value::from(line),
    };
    serde_json::json!({
        "time": timestamp(l["time_us"].as_i64().unwrap_or(0)),
        "function": l["function"],
        "version": l["version"],
        "request_id": l["request_id"],
        "trace_id": l["trace_id"],
        "stream": l["stream"],
        "text": text,
    })
    .to_string()
}

/// The admin API's cost answer as a table.
pub fn cost(answer: &Value) -> String {
    let by = answer["by"].as_str().unwrap_or("function");
    let prices = &answer["prices"];
    let currency = prices["currency"].as_str().unwrap_or("");
    let mut out = format!(
        "since {}, priced by {}\n",
        timestamp(answer["since_us"].as_i64().unwrap_or(0)),
        prices["label"].as_str().unwrap_or("?")
    );
    out.push_str(&format!(
        "{by:<24} {:>10} {:>16} {:>16} {:>18} {:>18}\n",
        "requests", "GB-s configured", "GB-s measured", "cost config.", "cost measured"
    ));
    let line = |key: &str, row: &Value| {
        format!(
            "{key:<24} {:>10} {:>16.6} {:>16.6} {:>14.10} {currency} {:>14.10} {currency}\n",
            row["requests"].as_u64().unwrap_or(0),
            row["gb_seconds"]["configured"].as_f64().unwrap_or(0.0),
            row["gb_seconds"]["measured"].as_f64().unwrap_or(0.0),
            row["cost"]["configured"].as_f64().unwrap_or(0.0),
            row["cost"]["measured"].as_f64().unwrap_or(0.0),
        )
    };
    for row in answer["rows"].as_array().into_iter().flatten() {
        out.push_str(&line(row["key"].as_str().unwrap_or(""), row));
    }
    out.push_str(&line("total", &answer["total"]));
    out
}

/// How wide the bars of a waterfall are, in characters.
const BAR: usize = 32;

/// A trace (the admin API's tree) as a terminal waterfall: one line per
/// span, indented under its parent, with its start, a bar of its time
/// within the whole trace, its duration, and what it was.
pub fn waterfall(trace: &Value) -> String {
    let start = trace["start_us"].as_i64().unwrap_or(0);
    let total = trace["duration_us"].as_u64().unwrap_or(0).max(1);
    let mut out = format!(
        "trace {}  {} spans  {:.3} ms\n",
        trace["trace_id"].as_str().unwrap_or(""),
        trace["spans"],
        total as f64 / 1000.0
    );
    fn visit(span: &Value, depth: usize, start: i64, total: u64, out: &mut String) {
        let offset = (span["start_us"].as_i64().unwrap_or(start) - start).max(0) as u64;
        let duration = span["duration_us"].as_u64().unwrap_or(0);
        let from = ((offset as f64 / total as f64) * BAR as f64).floor() as usize;
        let to = (((offset + duration) as f64 / total as f64) * BAR as f64).ceil() as usize;
        let (from, to) = (from.min(BAR - 1), to.clamp(from.min(BAR - 1) + 1, BAR));
        let bar: String = (0..BAR).map(|i| if i >= from && i < to { '#' } else { '.' }).collect();
        let mut what = format!("{}{}", "  ".repeat(depth), span["name"].as_str().unwrap_or("?"));
        let kind = span["kind"].as_str().unwrap_or("");
        what.push_str(&format!(" [{kind}]"));
        if let Some(trigger) = span["attributes"]["weft.trigger"].as_str() {
            what.push_str(&format!(" {trigger}"));
        }
        if let Some(id) = span["request_id"].as_str() {
            what.push_str(&format!(" {id}"));
        }
        if span["attributes"]["faas.coldstart"].as_bool() == Some(true) {
            what.push_str(" cold");
        }
        match span["error"].as_str() {
            Some(e) => what.push_str(&format!(" FAILED: {e}")),
            None => what.push_str(" ok"),
        }
        if let Some(links) = span["links"].as_array() {
            what.push_str(&format!(" (+{} linked)", links.len()));
        }
        out.push_str(&format!(
            "{:>10.3} ms {bar} {:>10.3} ms  {what}\n",
            offset as f64 / 1000.0,
            duration as f64 / 1000.0
        ));
        for event in span["events"].as_array().into_iter().flatten() {
            let at = (event["time_us"].as_i64().unwrap_or(start) - start).max(0) as f64 / 1000.0;
            let mut attrs: Vec<String> = event["attributes"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
            attrs.sort();
            out.push_str(&format!(
                "{at:>10.3} ms {:BAR$} {:>13}  {}  * {} {}\n",
                "",
                "",
                "  ".repeat(depth),
                event["name"].as_str().unwrap_or("?"),
                attrs.join(" ")
            ));
        }
        for child in span["children"].as_array().into_iter().flatten() {
            visit(child, depth + 1, start, total, out);
        }
    }
    for root in trace["roots"].as_array().into_iter().flatten() {
        visit(root, 0, start, total, &mut out);
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
