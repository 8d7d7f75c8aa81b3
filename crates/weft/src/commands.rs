//! One function per CLI command.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use serde_json::{Value, json};
use weft_node::{Node, NodeConfig};
use weft_store::Digest;

use crate::build::prepare_app;
use crate::client::{Client, encode, error_text};
use crate::show;

const TEMPLATE_LIB: &str = include_str!("../../../examples/hello/src/lib.rs");

pub fn new(name: &str, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    weft_manifest::check_name(name)
        .map_err(|why| anyhow!("app name `{name}` {why}; use lowercase letters, digits and `-`, like `my-app`"))?;
    let dir = path.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("`{}` already exists; choose another name or pass --path", dir.display());
    }
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("cannot create {}", dir.display()))?;
    let crate_name = name.replace('-', "_");
    let manifest = format!(
        r#"[app]
name = "{name}"

[function.{name}]
source = "target/wasm32-wasip2/release/{crate_name}.wasm"
build = "cargo build --target wasm32-wasip2 --release"
memory = "128MB"
timeout = "30s"
env = {{ GREETING = "Hello" }}

[[route]]
method = "GET"
path = "/hello/{{name}}"
function = "{name}"
"#
    );
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wasip2 = "1"

[profile.release]
opt-level = "s"
strip = true

[workspace]
"#
    );
    let files = [
        ("weft.toml", manifest),
        ("Cargo.toml", cargo),
        ("src/lib.rs", TEMPLATE_LIB.to_string()),
        (".gitignore", "/target\n/.weft\n".to_string()),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text).with_context(|| format!("cannot write {}", dir.join(file).display()))?;
    }
    println!("created app `{name}` in {}", dir.display());
    println!("run it:   weft up {}", dir.display());
    println!("then:     curl http://127.0.0.1:8080/hello/world");
    Ok(ExitCode::SUCCESS)
}

pub fn check(app_dir: &Path) -> anyhow::Result<ExitCode> {
    let (manifest, text) = crate::build::load_manifest(app_dir)?;
    let file = app_dir.join("weft.toml").display().to_string();
    manifest
        .check_files(app_dir, &text, &file)
        .map_err(|d| anyhow!("{d}"))?;
    for workflow in &manifest.workflows {
        crate::build::definition(app_dir, workflow, &manifest)?;
    }
    println!(
        "{file}: app `{}` with {} function(s) and {} route(s) is valid",
        manifest.app,
        manifest.functions.len(),
        manifest.routes.len()
    );
    let counts = [
        (manifest.queues.len(), "queue(s)"),
        (manifest.topics.len(), "topic(s)"),
        (manifest.subscriptions.len(), "subscription(s)"),
        (manifest.rules.len(), "rule(s)"),
        (manifest.schedules.len(), "schedule(s)"),
    ];
    let events: Vec<String> = counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if !events.is_empty() {
        let buses = manifest.all_buses().len();
        println!("  events: {}; {buses} bus(es)", events.join(", "));
    }
    if !manifest.workflows.is_empty() {
        let names: Vec<&str> = manifest.workflows.iter().map(|w| w.name.as_str()).collect();
        println!("  workflows: {}", names.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Stores each function's component as an artifact; returns name → digest.
/// And each workflow's definition, as `workflow:NAME`.
fn components(app_dir: &Path, manifest: &weft_manifest::Manifest) -> anyhow::Result<Vec<(String, Digest, Vec<u8>)>> {
    let functions = manifest.functions.iter().map(|f| {
        let path = app_dir.join(&f.source);
        let bytes =
            std::fs::read(&path).with_context(|| format!("function `{}`: cannot read {}", f.name, path.display()))?;
        Ok((f.name.clone(), Digest::of(&bytes), bytes))
    });
    let workflows = manifest.workflows.iter().map(|w| {
        let bytes = crate::build::definition(app_dir, w, manifest)?;
        Ok((format!("workflow:{}", w.name), Digest::of(&bytes), bytes))
    });
    functions.chain(workflows).collect()
}

/// What a node keeps about its invocations.
pub struct Telemetry {
    /// How long records, logs and spans are kept.
    pub retention: Duration,
    /// Trace invocations and hops.
    pub tracing: bool,
    /// `--otlp-endpoint`: export spans there (else the `OTEL_*` variables say).
    pub otlp_endpoint: Option<String>,
}

/// Where `weft up` listens, and the bounds of the app's connections.
pub struct Listen {
    pub app: SocketAddr,
    pub admin: SocketAddr,
    /// The S3 listener, if asked for.
    pub s3: Option<SocketAddr>,
    pub limits: weft_gateway::Limits,
}

/// Where the S3 API listens when the app has buckets and no --s3-listen.
const DEFAULT_S3_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8082);

/// The connections the admin API holds at once (it serves the CLI and tools).
const ADMIN_CONNECTIONS: usize = 256;

/// The durable storage of a node with its data in `data`: the embedded
/// provider, or with `nats` the JetStream one. This is the one place that
/// names them.
async fn storage(
    data: &Path,
    nats: Option<weft_jetstream::Options>,
) -> anyhow::Result<Arc<dyn weft_store::durable::Storage>> {
    if let Some(options) = nats {
        let url = options.url.clone();
        let store = weft_jetstream::JetStream::connect(options)
            .await
            .map_err(|e| anyhow!(e))?;
        println!("storage: NATS JetStream at {url}");
        return Ok(store);
    }
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let embedded = weft_store::durable::Embedded::open(&data.join("events.db"))
        .with_context(|| format!("cannot open the event store in {}", data.display()))?;
    Ok(Arc::new(embedded))
}

pub async fn up(
    app_dir: &Path,
    listen: Listen,
    data: Option<PathBuf>,
    build: bool,
    telemetry: Telemetry,
    nats: Option<weft_jetstream::Options>,
) -> anyhow::Result<ExitCode> {
    let (manifest, text) = prepare_app(app_dir, build)?;
    let data = data.unwrap_or_else(|| app_dir.join(".weft"));
    let print_requests = std::io::stdout().is_terminal();
    let config = NodeConfig {
        data_dir: data.clone(),
        print_requests,
        retention: telemetry.retention,
        tracing: telemetry.tracing,
        otlp: match telemetry.tracing {
            true => weft_telemetry::otlp::OtlpConfig::from_env(
                telemetry.otlp_endpoint.as_deref(),
                |k| std::env::var(k).ok(),
                &manifest.app,
                "",
            )
            .map_err(|e| anyhow!(e))?,
            false => None,
        },
    };
    let storage = storage(&data, nats).await?;
    let node = Node::open(config, storage, weft_node::capabilities::all()).map_err(|e| anyhow!(e))?;

    let mut artifacts = HashMap::new();
    for (name, digest, bytes) in components(app_dir, &manifest)? {
        node.artifacts
            .put(&bytes, Some(&digest))
            .with_context(|| format!("function `{name}`: cannot store its component"))?;
        artifacts.insert(name, digest);
    }
    let file = app_dir.join("weft.toml").display().to_string();
    // With a shared storage, this deploy reaches every node sharing it.
    let report = node
        .deploy_everywhere(&text, &file, &artifacts, false)
        .await
        .map_err(|e| anyhow!("{e}"))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gateway = weft_gateway::gateway::Gateway::new(node.clone(), weft_gateway::policy::Policies::default());
    let app_counters = listen.limits.counters.clone();
    let shutdown = listen.limits.drain;
    let (public_addr, gateway_threads) = weft_gateway::serve_per_core(
        listen.app,
        threads,
        Arc::new(move |req| gateway.clone().handle(req)),
        listen.limits,
        stop_rx.clone(),
    )
    .with_context(|| {
        format!(
            "cannot listen on {}: is another server using it? Pass --listen ADDR",
            listen.app
        )
    })?;
    let admin_socket = tokio::net::TcpListener::bind(listen.admin).await.with_context(|| {
        format!(
            "cannot listen on {} for the admin API; pass --admin-listen ADDR",
            listen.admin
        )
    })?;
    let admin_addr = admin_socket.local_addr()?;
    let s3_listen = listen
        .s3
        .or_else(|| (!manifest.buckets.is_empty()).then_some(DEFAULT_S3_LISTEN));
    let s3_socket = match s3_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the S3 API; pass --s3-listen ADDR"))?,
        ),
        None => None,
    };

    println!("app `{}` from {file} (data in {})", report.app, data.display());
    for f in &report.functions {
        let how = match (&f.compiled_from, f.prepare_ms) {
            (Some(from), Some(ms)) => format!(" ({from}, {ms:.1} ms)"),
            _ => String::new(),
        };
        println!("  function {} v{}{how}", f.function, f.version);
    }
    let deployment = node.deployment();
    for (method, path, to) in deployment.routes.entries() {
        // A function by its name; a workflow as `workflow:NAME`.
        let to = match to {
            weft_manifest::Target::Function(f) => f.clone(),
            other => other.to_string(),
        };
        println!(
            "  {:<7} http://{public_addr}{path} -> {to}",
            method.map_or("ANY", |m| m.as_str())
        );
    }
    node.set_addresses(format!("http://{public_addr}"), format!("http://{admin_addr}"));
    node.join();
    let s3_server = match s3_socket {
        Some(socket) => {
            let s3_addr = socket.local_addr()?;
            // Made now, on the first start, so they can be shown at once.
            if let Some(buckets) = node.capability::<weft_node::capabilities::buckets::Buckets>() {
                buckets
                    .credentials(&node)
                    .await
                    .map_err(|e| anyhow!("cannot make the S3 access key: {e}"))?;
            }
            println!("S3 API on http://{s3_addr} (access key: weft s3 credentials)");
            let s3_limits = weft_gateway::Limits {
                drain: shutdown,
                ..Default::default()
            };
            let (s3_node, mut s3_stop) = (node.clone(), stop_rx.clone());
            Some(tokio::spawn(weft_gateway::serve(
                socket,
                Arc::new(move |req: hyper::Request<hyper::body::Incoming>| {
                    let node = s3_node.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let request = req.map(|b| {
                            b.map_err(|e| weft_runtime::HttpError::InternalError(Some(e.to_string())))
                                .boxed_unsync()
                        });
                        match node.capability::<weft_node::capabilities::buckets::Buckets>() {
                            Some(buckets) => buckets.serve_signed(&node, request).await,
                            None => weft_node::body::error(503, "this node serves no buckets", None),
                        }
                    }
                }),
                s3_limits,
                async move {
                    let _ = s3_stop.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    println!("listening on http://{public_addr}");
    println!("admin API on http://{admin_addr}");

    let admin_limits = weft_gateway::Limits {
        max_connections: ADMIN_CONNECTIONS,
        drain: shutdown,
        ..Default::default()
    };
    let listeners = vec![("app", app_counters), ("admin", admin_limits.counters.clone())];
    let admin = weft_gateway::admin::Admin::new(node.clone(), listeners).map_err(|e| anyhow!(e))?;
    let mut admin_stop = stop_rx;
    let admin_server = tokio::spawn(weft_gateway::serve(
        admin_socket,
        Arc::new(move |req| admin.clone().handle(req)),
        admin_limits,
        async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        },
    ));

    shutdown_signal().await;
    // In order: stop taking requests and let those in flight answer; then
    // stop the workers and let the invocations they started finish; then
    // write what they left.
    eprintln!("stopping: finishing requests in flight");
    let _ = stop_tx.send(true);
    for t in gateway_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let _ = admin_server.await;
    if let Some(s3) = s3_server {
        let _ = s3.await;
    }
    node.shutdown(shutdown).await;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How `weft invoke` runs the function.
pub enum InvokeMode {
    /// Wait for the answer; print it (as JSON with `json`) and the record.
    Wait { json: bool },
    /// Hand it to the server to run in the background.
    Async,
}

pub async fn invoke(
    server: &str,
    function: &str,
    data: Option<String>,
    headers: &[String],
    method: &str,
    path: &str,
    mode: InvokeMode,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let body = match data {
        Some(d) => match d.strip_prefix('@') {
            Some(file) => {
                Some(std::fs::read_to_string(file).with_context(|| format!("--data @{file}: cannot read the file"))?)
            }
            None => Some(d),
        },
        None => None,
    };
    let mut header_map = serde_json::Map::new();
    if body.is_some() {
        header_map.insert("content-type".into(), Value::from("application/json"));
    }
    for h in headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("--header `{h}` is not `Name: value`"))?;
        if k.trim().is_empty() {
            bail!("--header `{h}` has no name; write it as `Name: value`");
        }
        header_map.insert(k.trim().to_ascii_lowercase(), Value::from(v.trim()));
    }
    let asynchronous = matches!(mode, InvokeMode::Async);
    let invocation_type = if asynchronous { "event" } else { "request_response" };
    let request =
        json!({ "method": method, "path": path, "headers": header_map, "body": body, "type": invocation_type });
    let (status, answer) = client
        .post_json(&format!("/v1/functions/{}/invoke", encode(function)), &request)
        .await?;
    if asynchronous {
        if status != 202 {
            bail!("{}", error_text(&answer));
        }
        println!(
            "accepted: invocation {}",
            answer["invocation_id"].as_str().unwrap_or("")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if status != 200 {
        bail!("{}", error_text(&answer));
    }
    if matches!(mode, InvokeMode::Wait { json: true }) {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("HTTP {}", answer["status"]);
        let text = answer["body"].as_str().unwrap_or("");
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
        println!("--- invocation record");
        print!("{}", show::record(&answer["record"]));
    }
    let ok = answer["record"]["outcome"].as_str() == Some("success");
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Builds the app and uploads the components the server lacks (unless
/// `upload` is false); returns the manifest text, its file name and each
/// function's artifact digest.
async fn artifacts_of(
    client: &Client,
    app_dir: &Path,
    build: bool,
    upload: bool,
) -> anyhow::Result<(String, String, serde_json::Map<String, Value>)> {
    let (manifest, text) = prepare_app(app_dir, build)?;
    let mut artifacts = serde_json::Map::new();
    for (name, digest, bytes) in components(app_dir, &manifest)? {
        let path = format!("/v1/artifacts/{digest}");
        // A plan reads workflow definitions (they are small): those go up
        // whether or not the components do.
        let definition = name.starts_with("workflow:");
        if (upload || definition) && client.get(&path).await?.0 == 404 {
            let kind = if definition {
                "application/json"
            } else {
                "application/wasm"
            };
            let (status, answer) = client.call("PUT", &path, Some(Bytes::from(bytes)), kind).await?;
            if status >= 300 {
                bail!(
                    "function `{name}`: uploading its component failed: {}",
                    error_text(&answer)
                );
            }
        }
        artifacts.insert(name, Value::from(digest.to_string()));
    }
    let file = app_dir.join("weft.toml").display().to_string();
    Ok((text, file, artifacts))
}

pub async fn plan(app_dir: &Path, server: &str, build: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let (text, file, artifacts) = artifacts_of(&client, app_dir, build, false).await?;
    let (status, answer) = client
        .post_json(
            "/v1/plans",
            &json!({ "manifest": text, "file": file, "artifacts": artifacts }),
        )
        .await?;
    if status != 200 {
        bail!("{}", error_text(&answer));
    }
    println!(
        "plan for app `{}` (nothing was changed):",
        answer["app"].as_str().unwrap_or("")
    );
    show::changes(&answer["changes"], None);
    let losses = answer["changes"]
        .as_array()
        .map_or(0, |l| l.iter().filter(|c| c["loss"].is_string()).count());
    if losses > 0 {
        println!("a deploy of this would be refused: it loses data; deploy with --allow-loss to accept that");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn deploy(app_dir: &Path, server: &str, build: bool, allow_loss: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let (text, file, artifacts) = artifacts_of(&client, app_dir, build, true).await?;
    let (status, answer) = client
        .post_json(
            "/v1/deployments",
            &json!({ "manifest": text, "file": file, "artifacts": artifacts, "allow_loss": allow_loss }),
        )
        .await?;
    if status != 200 {
        bail!("{}", error_text(&answer));
    }
    println!("deployed app `{}`", answer["app"].as_str().unwrap_or(""));
    for f in answer["functions"].as_array().into_iter().flatten() {
        println!(
            "  function {} v{}: {}",
            f["function"].as_str().unwrap_or(""),
            f["version"],
            f["change"].as_str().unwrap_or("")
        );
    }
    for r in answer["removed"].as_array().into_iter().flatten() {
        println!("  function {}: removed", r.as_str().unwrap_or(""));
    }
    show::changes(&answer["changes"], Some("function"));
    Ok(ExitCode::SUCCESS)
}

/// Which log lines `weft logs` prints, and how.
#[derive(clap::Args)]
pub struct LogOptions {
    /// Only this function's lines.
    pub function: Option<String>,
    /// Only this invocation's lines.
    #[arg(long)]
    pub request: Option<String>,
    /// Only the lines of the invocations in this trace (its 32 hex digits).
    #[arg(long)]
    pub trace: Option<String>,
    /// Only lines written within this long before now, e.g. 10m, 1h, 2d.
    #[arg(long, value_parser = crate::parse_since)]
    pub since: Option<Duration>,
    /// One JSON object per line: time, function, version, request_id,
    /// trace_id, stream, text (a line that is JSON stays JSON).
    #[arg(long)]
    pub json: bool,
    /// Keep printing new lines as they arrive.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

pub async fn logs(server: &str, options: LogOptions) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    if let Some(t) = &options.trace
        && !weft_telemetry::context::is_trace_id(t)
    {
        bail!("`{t}` is not a trace id: trace ids are 32 lowercase hex digits (`weft trace REQUEST_ID` shows one)");
    }
    let since_us = options.since.map(weft_store::us_before_now);
    let mut after: i64 = 0;
    loop {
        let mut path = format!("/v1/logs?after={after}&limit=1000");
        let filters = [
            ("function", &options.function),
            ("request_id", &options.request),
            ("trace_id", &options.trace),
        ];
        for (key, value) in filters {
            if let Some(v) = value {
                path.push_str(&format!("&{key}={}", encode(v)));
            }
        }
        if let Some(since) = since_us {
            path.push_str(&format!("&since_us={since}"));
        }
        let (status, answer) = client.get(&path).await?;
        if status != 200 {
            bail!("{}", error_text(&answer));
        }
        let lines = answer["lines"].as_array().cloned().unwrap_or_default();
        for l in &lines {
            if options.json {
                println!("{}", show::log_json(l));
                continue;
            }
            println!(
                "{} {} {} {}: {}",
                show::timestamp(l["time_us"].as_i64().unwrap_or(0)),
                l["request_id"].as_str().unwrap_or(""),
                l["function"].as_str().unwrap_or(""),
                l["stream"].as_str().unwrap_or(""),
                l["line"].as_str().unwrap_or("")
            );
        }
        after = answer["next"].as_i64().unwrap_or(after);
        if lines.len() == 1000 {
            continue;
        }
        if !options.follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn trace(server: &str, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    // The spans come as a list and the tree is built here: a deep tree
    // would pass the JSON reader's nesting limit.
    let (status, answer) = client.get(&format!("/v1/traces/{}?spans=flat", encode(id))).await?;
    if status != 200 {
        bail!("{}", error_text(&answer));
    }
    let spans: Vec<weft_telemetry::Span> =
        serde_json::from_value(answer["spans"].clone()).context("the server's spans are not of the expected shape")?;
    let answer = json!(weft_telemetry::Trace::build(
        answer["trace_id"].as_str().unwrap_or(""),
        spans
    ));
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", show::waterfall(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `weft cost` asks for.
#[derive(clap::Args)]
pub struct CostQuery {
    /// Invocations that started within this long before now, e.g. 1d, 12h.
    #[arg(long, default_value = "1d", value_parser = crate::parse_since)]
    pub since: Duration,
    /// Only this function.
    #[arg(long)]
    pub function: Option<String>,
    /// Group by function, day (UTC) or trigger.
    #[arg(long, default_value = "function", value_parser = ["function", "day", "trigger"])]
    pub by: String,
    /// Price per request (default: Lambda's, 0.0000002).
    #[arg(long)]
    pub per_request: Option<f64>,
    /// Price per GB-second (default: Lambda's x86, 0.0000166667).
    #[arg(long)]
    pub per_gb_second: Option<f64>,
}

pub async fn cost(server: &str, query: &CostQuery, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let since_us = weft_store::us_before_now(query.since);
    let mut path = format!("/v1/cost?since_us={since_us}&by={}", encode(&query.by));
    if let Some(f) = &query.function {
        path.push_str(&format!("&function={}", encode(f)));
    }
    for (key, price) in [
        ("per_request", query.per_request),
        ("per_gb_second", query.per_gb_second),
    ] {
        match price {
            Some(p) if !p.is_finite() || p < 0.0 => bail!("--{} must be a price of 0 or more", key.replace('_', "-")),
            Some(p) => path.push_str(&format!("&{key}={p}")),
            None => {}
        }
    }
    let (status, answer) = client.get(&path).await?;
    if status != 200 {
        bail!("{}", error_text(&answer));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", show::cost(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_messages(answer: &Value, empty: &str) {
    let messages = answer["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        println!("{empty}");
    }
    for m in messages {
        let group = m["group"].as_str().map_or(String::new(), |g| format!("  group {g}"));
        let error = m["last_error"]
            .as_str()
            .map_or(String::new(), |e| format!("\n  last error: {e}"));
        println!(
            "receipt {}  id {}  receives {}  sent {}{group}{error}",
            m["receipt"].as_str().unwrap_or(""),
            m["id"].as_str().unwrap_or(""),
            m["receive_count"],
            m["sent"].as_str().unwrap_or(""),
        );
        println!("  {}", m["body"].as_str().unwrap_or(""));
    }
}

fn print_stats(name: &str, stats: &Value) {
    println!(
        "{name}: {} visible, {} in flight, {} delayed",
        stats["visible"].as_u64().unwrap_or(0),
        stats["in_flight"].as_u64().unwrap_or(0),
        stats["delayed"].as_u64().unwrap_or(0)
    );
}

/// `weft s3 credentials`: the access key of the S3 listener.
pub async fn s3_credentials(server: &str, env: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let (status, value) = client.get("/v1/s3/credentials").await?;
    if status >= 300 {
        bail!("{}", error_text(&value));
    }
    let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
    let (id, secret, region) = (field("access_key_id"), field("secret_access_key"), field("region"));
    if env {
        println!("export AWS_ACCESS_KEY_ID={id}");
        println!("export AWS_SECRET_ACCESS_KEY={secret}");
        println!("export AWS_DEFAULT_REGION={region}");
    } else {
        println!("access key id      {id}");
        println!("secret access key  {secret}");
        println!("region             {region}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn kv(server: &str, command: crate::KvCommand) -> anyhow::Result<ExitCode> {
    use crate::KvCommand as K;
    use base64::Engine;
    let client = Client::new(server)?;
    let answer = |status: u16, answer: Value| -> anyhow::Result<Value> {
        if status >= 300 {
            bail!("{}", error_text(&answer));
        }
        Ok(answer)
    };
    let key_path = |store: &str, key: &str| format!("/v1/kv/{}/keys/{}", encode(store), encode(key));
    if let K::Get { key, .. } | K::Set { key, .. } | K::Delete { key, .. } = &command
        && key.is_empty()
    {
        bail!("a key cannot be empty: give the key to read or write");
    }
    match command {
        K::Get { store, key } => {
            let (status, value) = client.get(&key_path(&store, &key)).await?;
            let value = answer(status, value)?;
            let text = value["value"].as_str().unwrap_or_default();
            let bytes = match value["encoding"].as_str() {
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .context("the server sent a value that is not base64")?,
                _ => text.as_bytes().to_vec(),
            };
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            if out.is_terminal() && !bytes.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
        }
        K::Set { store, key, value, ttl } => {
            let bytes = match value.strip_prefix('@') {
                Some(file) => std::fs::read(file).with_context(|| format!("@{file}: cannot read the file"))?,
                None => value.into_bytes(),
            };
            let mut path = key_path(&store, &key);
            if let Some(ttl) = &ttl {
                weft_manifest::parse_duration(ttl)
                    .map_err(|why| anyhow!("--ttl `{ttl}` is not a duration: {why}; write e.g. 30s or 24h"))?;
                path = format!("{path}?ttl={}", encode(ttl));
            }
            let (status, value) = client
                .call("PUT", &path, Some(Bytes::from(bytes)), "application/octet-stream")
                .await?;
            let value = answer(status, value)?;
            println!("set {store}/{key} (revision {})", value["revision"]);
        }
        K::Delete { store, key } => {
            let (status, value) = client
                .call("DELETE", &key_path(&store, &key), None, "application/json")
                .await?;
            let value = answer(status, value)?;
            if value["deleted"].as_bool() == Some(true) {
                println!("deleted {store}/{key}");
            } else {
                println!("{store} had no key `{key}`");
            }
        }
        K::List { store, prefix } => {
            let mut after: Option<String> = None;
            loop {
                let mut path = format!("/v1/kv/{}/keys?prefix={}", encode(&store), encode(&prefix));
                if let Some(a) = &after {
                    path = format!("{path}&after={}", encode(a));
                }
                let (status, value) = client.get(&path).await?;
                let value = answer(status, value)?;
                for key in value["keys"].as_array().into_iter().flatten() {
                    println!("{}", key.as_str().unwrap_or_default());
                }
                match value["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn queue(server: &str, command: crate::QueueCommand) -> anyhow::Result<ExitCode> {
    use crate::QueueCommand as Q;
    let client = Client::new(server)?;
    let call = |status: u16, answer: Value| -> anyhow::Result<Value> {
        if status >= 300 {
            bail!("{}", error_text(&answer));
        }
        Ok(answer)
    };
    match command {
        Q::Send {
            queue,
            data,
            id,
            group,
            delay,
            event_type,
            content_type,
        } => {
            let body = match data.strip_prefix('@') {
                Some(file) => {
                    std::fs::read_to_string(file).with_context(|| format!("--data @{file}: cannot read the file"))?
                }
                None => data,
            };
            let message = json!({ "body": body, "id": id, "group": group, "delay": delay, "type": event_type, "content_type": content_type });
            let (status, answer) = client
                .post_json(
                    &format!("/v1/queues/{}/messages", encode(&queue)),
                    &json!({ "messages": [message] }),
                )
                .await?;
            let answer = call(status, answer)?;
            let sent = &answer["messages"][0];
            if sent["duplicate"].as_bool() == Some(true) {
                println!(
                    "duplicate of message {} (seq {}): already accepted, not stored again",
                    sent["id"].as_str().unwrap_or(""),
                    sent["seq"]
                );
            } else {
                println!(
                    "sent message {} (seq {})",
                    sent["id"].as_str().unwrap_or(""),
                    sent["seq"]
                );
            }
        }
        Q::Receive { queue, max, visibility } => {
            let (status, answer) = client
                .post_json(
                    &format!("/v1/queues/{}/receive", encode(&queue)),
                    &json!({ "max": max, "visibility": visibility }),
                )
                .await?;
            print_messages(&call(status, answer)?, "no messages to receive");
        }
        Q::Ack { queue, receipts } => {
            let (status, answer) = client
                .post_json(
                    &format!("/v1/queues/{}/ack", encode(&queue)),
                    &json!({ "receipts": receipts }),
                )
                .await?;
            let answer = call(status, answer)?;
            println!("acknowledged {}", answer["acknowledged"]);
            let stale = answer["stale"].as_u64().unwrap_or(0);
            if stale > 0 {
                eprintln!(
                    "{stale} receipt(s) were stale: those messages were received again after their visibility timeout, or are gone"
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Q::Peek { queue, limit } => {
            let (status, answer) = client
                .get(&format!("/v1/queues/{}/messages?limit={limit}", encode(&queue)))
                .await?;
            print_messages(&call(status, answer)?, "the queue is empty");
        }
        Q::Stats { queue: Some(queue) } => {
            let (status, answer) = client.get(&format!("/v1/queues/{}", encode(&queue))).await?;
            let answer = call(status, answer)?;
            print_stats(&queue, &answer["stats"]);
        }
        Q::Stats { queue: None } => {
            let (status, answer) = client.get("/v1/queues").await?;
            for q in call(status, answer)?["queues"].as_array().cloned().unwrap_or_default() {
                print_stats(q["name"].as_str().unwrap_or(""), &q["stats"]);
            }
        }
        Q::Redrive { queue } => {
            let (status, answer) = client
                .post_json(&format!("/v1/queues/{}/redrive", encode(&queue)), &json!({}))
                .await?;
            println!(
                "moved {} message(s) back to their source queue",
                call(status, answer)?["moved"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft events test-pattern`: evaluated locally, with the same pattern
/// language the server uses.
pub fn test_pattern(pattern: &Path, event: &Path) -> ExitCode {
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let pattern = match read(pattern) {
        Ok(text) => text,
        Err(e) => {
            println!("invalid pattern: {e}");
            return ExitCode::from(2);
        }
    };
    let pattern = match weft_manifest::pattern::Pattern::parse(&pattern) {
        Ok(p) => p,
        Err(why) => {
            println!("invalid pattern: {why}");
            return ExitCode::from(2);
        }
    };
    let event = match read(event)
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| format!("the event is not JSON: {e}")))
    {
        Ok(v) if v.is_object() => v,
        Ok(_) => {
            println!("invalid event: an event is a JSON object");
            return ExitCode::from(2);
        }
        Err(e) => {
            println!("invalid event: {e}");
            return ExitCode::from(2);
        }
    };
    if pattern.matches(&event) {
        println!("match");
        ExitCode::SUCCESS
    } else {
        println!("no match");
        ExitCode::from(1)
    }
}

/// `weft events put`: one PutEvents entry.
pub async fn put_event(
    server: &str,
    bus: &str,
    source: &str,
    detail_type: &str,
    detail: &str,
    resources: &[String],
) -> anyhow::Result<ExitCode> {
    let detail = match detail.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("--detail @{file}: cannot read the file"))?
        }
        None => detail.to_string(),
    };
    let entry = json!({
        "Source": source,
        "DetailType": detail_type,
        "Detail": detail,
        "EventBusName": bus,
        "Resources": resources,
    });
    let client = Client::new(server)?;
    let (status, answer) = client
        .post_json("/v1/events/put", &json!({ "Entries": [entry] }))
        .await?;
    if status >= 300 {
        bail!("{}", error_text(&answer));
    }
    let result = &answer["Entries"][0];
    match result["EventId"].as_str() {
        Some(id) => {
            println!("put event {id} on bus `{bus}`");
            Ok(ExitCode::SUCCESS)
        }
        None => bail!(
            "the event was refused: {} ({})",
            result["ErrorMessage"].as_str().unwrap_or("no reason given"),
            result["ErrorCode"].as_str().unwrap_or("?")
        ),
    }
}

/// `weft events replay`.
pub async fn replay(
    server: &str,
    bus: &str,
    from: &str,
    to: Option<String>,
    rule: Option<String>,
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let to = to.unwrap_or_else(weft_events::cloudevents::now);
    let client = Client::new(server)?;
    let (status, answer) = client
        .post_json(
            &format!("/v1/buses/{}/replay", encode(bus)),
            &json!({ "from": from, "to": to, "rule": rule, "name": name }),
        )
        .await?;
    if status >= 300 {
        bail!("{}", error_text(&answer));
    }
    println!(
        "replay {}: {} archived event(s) from {from} to {to}, {} delivery(ies) stored",
        answer["name"].as_str().unwrap_or(""),
        answer["events"],
        answer["deliveries"]
    );
    Ok(ExitCode::SUCCESS)
}

/// `weft events buses`.
pub async fn app(server: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let (status, answer) = client.get("/v1/app").await?;
    if status >= 300 {
        bail!("{}", error_text(&answer));
    }
    let revision = match answer["revision"].as_u64() {
        Some(0) | None => "its own deployment".to_string(),
        Some(r) => format!("shared deployment revision {r}"),
    };
    println!(
        "app `{}` on node {} ({revision})",
        answer["app"].as_str().unwrap_or(""),
        answer["node"].as_str().unwrap_or("")
    );
    for f in answer["functions"].as_array().into_iter().flatten() {
        println!(
            "  function {} v{} {}",
            f["name"].as_str().unwrap_or(""),
            f["version"],
            f["digest"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn nodes(server: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let (status, answer) = client.get("/v1/nodes").await?;
    if status >= 300 {
        bail!("{}", error_text(&answer));
    }
    let this = answer["this"].as_str().unwrap_or("");
    let now = weft_store::now_us();
    for n in answer["nodes"].as_array().into_iter().flatten() {
        let id = n["id"].as_str().unwrap_or("");
        let seen = (now - n["seen_us"].as_i64().unwrap_or(now)).max(0) as f64 / 1e6;
        println!(
            "{id}{}  app {}  admin {}  revision {}  seen {seen:.1}s ago",
            if id == this { " (this node)" } else { "" },
            n["app"].as_str().unwrap_or("-"),
            n["admin"].as_str().unwrap_or("-"),
            n["revision"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn buses(server: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let (status, answer) = client.get("/v1/buses").await?;
    if status >= 300 {
        bail!("{}", error_text(&answer));
    }
    for bus in answer["buses"].as_array().into_iter().flatten() {
        let archive = match bus["archive"].as_str() {
            Some(keep) => format!("archive {keep}, {} event(s) kept", bus["archived"]),
            None => "no archive".to_string(),
        };
        println!("{} ({archive})", bus["name"].as_str().unwrap_or(""));
        for rule in bus["rules"].as_array().into_iter().flatten() {
            let targets: Vec<&str> = rule["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let off = if rule["enabled"] == json!(false) {
                " (disabled)"
            } else {
                ""
            };
            println!(
                "  rule {}{off}: {} -> {}",
                rule["name"].as_str().unwrap_or(""),
                rule["pattern"],
                targets.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
