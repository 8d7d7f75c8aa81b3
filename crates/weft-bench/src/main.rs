//! `weft-bench`: measures weft against baselines run side by side on the
//! same machine, and prints a Markdown report of ratios.
//!
//! `scripts/bench` builds everything in release mode and runs `weft-bench run`.

mod chain;
mod durable;
mod hello;
mod kv;
mod load;
mod matcher;
mod objects;
mod procs;
mod runtime;
mod telemetry;
mod workflows;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the bare hyper baseline.
    HyperHello {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// Receive OTLP exports (read and acknowledge them), for the telemetry section.
    OtlpSink {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// Serve the bare hyper chain baseline (`/hop/N`).
    HyperChain {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// Load one server (to profile it under `perf`): print requests/s and
    /// the p50 and p99 latency.
    Load {
        /// The server's address, `HOST:PORT`.
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Run every benchmark and print the report.
    Run {
        /// The release `weft` binary.
        #[arg(long)]
        weft: PathBuf,
        /// The `wasmtime` binary (wasmtime-cli 48) for `wasmtime serve`.
        #[arg(long)]
        wasmtime: PathBuf,
        /// The hello app directory (its component must be built).
        #[arg(long)]
        app: PathBuf,
        /// Seconds measured per throughput run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent connections for the throughput runs.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Deployed functions for the memory figure.
        #[arg(long, default_value_t = 1000)]
        functions: usize,
        /// The probe component (tests/fixtures/probe), for the chain section.
        #[arg(long)]
        probe: PathBuf,
        /// The key-value component (tests/fixtures/kv-wasi), for the kv section.
        #[arg(long)]
        kv_wasi: PathBuf,
        /// Run only these sections: http, instantiate, cold, memory, durable, kv, objects, chain, matcher, telemetry, workflows (or one of workflows-express, workflows-standard, workflows-latency).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::HyperHello { addr } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(hello::serve(addr))
        }
        Command::OtlpSink { addr } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(telemetry::serve_sink(addr))
        }
        Command::HyperChain { addr } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(chain::serve_hyper_chain(addr))
        }
        Command::Load {
            addr,
            path,
            connections,
            seconds,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let run = rt.block_on(load::run(
                addr,
                &path,
                connections,
                Duration::from_secs(1),
                Duration::from_secs(seconds),
            ))?;
            println!(
                "{:.0} requests/s, p50 {:.0} µs, p99 {:.0} µs, {} errors",
                run.rps(),
                run.percentile(0.5),
                run.percentile(0.99),
                run.errors
            );
            Ok(())
        }
        Command::Run {
            weft,
            wasmtime,
            app,
            probe,
            kv_wasi,
            seconds,
            connections,
            functions,
            only,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let inputs = Inputs {
                weft,
                wasmtime,
                app,
                probe,
                kv_wasi,
            };
            rt.block_on(run(inputs, Duration::from_secs(seconds), connections, functions, only))
        }
    }
}

/// What the benchmarks run: the binaries and the components.
struct Inputs {
    weft: PathBuf,
    wasmtime: PathBuf,
    app: PathBuf,
    probe: PathBuf,
    kv_wasi: PathBuf,
}

async fn run(
    inputs: Inputs,
    seconds: Duration,
    connections: usize,
    functions: usize,
    only: Vec<String>,
) -> anyhow::Result<()> {
    let Inputs {
        weft,
        wasmtime,
        app,
        probe,
        kv_wasi,
    } = inputs;
    let wanted = |section: &str| only.is_empty() || only.iter().any(|o| o == section);
    let component = app.join("target/wasm32-wasip2/release/hello.wasm");
    anyhow::ensure!(
        component.is_file(),
        "build the hello component first: {} is missing",
        component.display()
    );
    let scratch = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    if wanted("http") {
        http(&weft, &wasmtime, &app, &component, &scratch, seconds, connections).await?;
    }
    if wanted("instantiate") {
        println!("\n## Instantiation, in process\n");
        println!("{}", runtime::instantiation(&component, 3000).await?);
    }
    if wanted("cold") {
        println!("\n## Cold start: first request after a deploy, compiled artifact from the cache\n");
        println!("{}", procs::cold_start(&weft, &app, &scratch.join("cold")).await?);
    }
    if wanted("memory") {
        println!("\n## Memory: server RSS with {functions} deployed functions\n");
        println!(
            "{}",
            procs::rss_with_functions(&weft, &component, &scratch, functions).await?
        );
    }
    if wanted("durable") {
        println!("\n## Durable queue: accepted and delivered, against the fsync rate and Redis Streams\n");
        println!("{}", durable::report(&scratch, seconds).await?);
    }
    if wanted("kv") {
        println!(
            "\n## Key-value stores: durable sets and gets against Redis and SQLite, and a function reading a key\n"
        );
        println!(
            "{}",
            kv::report(&weft, &component, &kv_wasi, &scratch, seconds, connections).await?
        );
    }
    if wanted("objects") {
        println!("\n## Object buckets: PUT and GET over the S3 listener, against the disk (dd)\n");
        println!("{}", objects::report(&weft, &scratch).await?);
    }
    // `workflows` runs all three; each also runs alone.
    let workflows = wanted("workflows");
    if workflows || wanted("workflows-express") {
        println!("\n## Workflows: express transitions per second on one core\n");
        println!("{}", workflows::report(seconds)?);
    }
    if workflows || wanted("workflows-standard") {
        println!("\n## Workflows: standard (journalled) transitions per second\n");
        println!("{}", workflows::standard(&scratch, seconds).await?);
    }
    if workflows || wanted("workflows-latency") {
        println!("\n## Workflows: a three-task standard workflow against a blocking chain\n");
        println!(
            "{}",
            workflows::latency(&weft, &component, &probe, &scratch, seconds).await?
        );
    }
    if wanted("chain") {
        println!("\n## Chains A→B→…: blocking calls, forwards, and bare hyper services\n");
        println!(
            "{}",
            chain::report(&weft, &probe, &scratch, seconds.min(Duration::from_secs(3))).await?
        );
    }
    if wanted("telemetry") {
        println!("\n## Telemetry: its cost, off, with spans kept locally, and with OTLP export\n");
        println!(
            "{}",
            telemetry::report(&weft, &app, &probe, &scratch, seconds, connections).await?
        );
    }
    if wanted("matcher") {
        println!("\n## Rule matching: events/s on one core with 1, 100 and 10,000 rules\n");
        println!("{}", matcher::report(seconds.min(Duration::from_secs(2))));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

async fn http(
    weft: &Path,
    wasmtime: &Path,
    app: &Path,
    component: &Path,
    scratch: &Path,
    seconds: Duration,
    connections: usize,
) -> anyhow::Result<()> {
    let warmup = Duration::from_secs(1);
    println!("## HTTP: hello through the gateway, against bare hyper and `wasmtime serve`\n");
    println!(
        "{connections} connections, {}s measured after {}s warm-up; then 1 connection (one request at a time).\n",
        seconds.as_secs(),
        warmup.as_secs()
    );
    let servers = [
        ("bare hyper", procs::Server::hyper()?),
        ("weft", procs::Server::weft(weft, app, &scratch.join("data"))?),
        ("wasmtime serve", procs::Server::wasmtime(wasmtime, component)?),
    ];
    let mut rows = Vec::new();
    for (name, server) in &servers {
        let many = load::run(server.addr, "/", connections, warmup, seconds).await?;
        let one = load::run(server.addr, "/", 1, warmup, seconds.min(Duration::from_secs(3))).await?;
        rows.push((*name, many, one));
    }
    println!("| server | requests/s | p50 µs | p99 µs | errors | p50 µs, 1 at a time | p99 µs, 1 at a time |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, many, one) in &rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} |",
            many.rps(),
            many.percentile(0.5),
            many.percentile(0.99),
            many.errors + one.errors,
            one.percentile(0.5),
            one.percentile(0.99)
        );
    }
    let (hyper, weft_run, wasmtime_run) = (&rows[0], &rows[1], &rows[2]);
    println!();
    println!(
        "- weft / bare hyper, requests/s: **{:.2}** (bar: at least 0.6)",
        weft_run.1.rps() / hyper.1.rps()
    );
    println!(
        "- weft / wasmtime serve, requests/s: **{:.2}** (bar: at least 1.0)",
        weft_run.1.rps() / wasmtime_run.1.rps()
    );
    println!(
        "- wasmtime serve / bare hyper, requests/s: {:.2}",
        wasmtime_run.1.rps() / hyper.1.rps()
    );
    println!(
        "- p50 latency added by weft over bare hyper, one request at a time: **{:.0} µs** (bar: under 50 µs)",
        weft_run.2.percentile(0.5) - hyper.2.percentile(0.5)
    );
    drop(servers);

    Ok(())
}
