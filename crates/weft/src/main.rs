//! `weft`: the server and the command line in one binary.

mod build;
mod client;
mod commands;
mod show;
mod workflows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// weft: serverless functions and events on your own machines.
#[derive(Parser)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a node keeps its durable parts when it shares them with other
/// nodes: a NATS JetStream. Without `--nats`, the embedded store.
#[derive(clap::Args, Debug)]
struct NatsArgs {
    /// Keep queues, topics, the bus, async invocations and schedules on
    /// this NATS JetStream (nats://HOST:4222, tls://HOST:4222, or several
    /// comma-separated), shared with every node given the same one.
    #[arg(long, env = "WEFT_NATS")]
    nats: Option<String>,
    /// Prefix of every stream, subject and bucket weft makes there.
    #[arg(long, env = "WEFT_NATS_PREFIX", default_value = "weft", requires = "nats")]
    nats_prefix: String,
    /// Replicas of each stream and bucket weft makes (3 on a three-server cluster).
    #[arg(long, env = "WEFT_NATS_REPLICAS", default_value_t = 1, requires = "nats",
          value_parser = clap::value_parser!(u8).range(1..=5))]
    nats_replicas: u8,
    /// User name for NATS (with --nats-password).
    #[arg(long, env = "WEFT_NATS_USER", requires = "nats_password", conflicts_with_all = ["nats_token", "nats_creds", "nats_nkey"])]
    nats_user: Option<String>,
    #[arg(long, env = "WEFT_NATS_PASSWORD", requires = "nats_user", hide_env_values = true)]
    nats_password: Option<String>,
    /// Token for NATS.
    #[arg(long, env = "WEFT_NATS_TOKEN", conflicts_with_all = ["nats_creds", "nats_nkey"], hide_env_values = true)]
    nats_token: Option<String>,
    /// A NATS credentials file (.creds: a user JWT and its seed).
    #[arg(long, env = "WEFT_NATS_CREDS", conflicts_with = "nats_nkey")]
    nats_creds: Option<PathBuf>,
    /// An nkey seed (SU...) for NATS.
    #[arg(long, env = "WEFT_NATS_NKEY", hide_env_values = true)]
    nats_nkey: Option<String>,
    /// The CA (PEM) that signed the NATS servers' certificates (TLS).
    #[arg(long, env = "WEFT_NATS_CA", requires = "nats")]
    nats_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that verify clients, with --nats-key.
    #[arg(long, env = "WEFT_NATS_CERT", requires_all = ["nats", "nats_key"])]
    nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "WEFT_NATS_KEY", requires = "nats_cert")]
    nats_key: Option<PathBuf>,
}

impl NatsArgs {
    /// The connection options, or `None` for the embedded store.
    fn options(self) -> Result<Option<weft_jetstream::Options>, String> {
        let Some(url) = self.nats else {
            if self.nats_user.is_some()
                || self.nats_token.is_some()
                || self.nats_creds.is_some()
                || self.nats_nkey.is_some()
            {
                return Err(
                    "NATS credentials were given without --nats (or WEFT_NATS): give the server's URL too".into(),
                );
            }
            return Ok(None);
        };
        let auth = match (
            self.nats_user,
            self.nats_password,
            self.nats_token,
            self.nats_creds,
            self.nats_nkey,
        ) {
            (Some(user), Some(password), _, _, _) => weft_jetstream::Auth::UserPassword { user, password },
            (_, _, Some(token), _, _) => weft_jetstream::Auth::Token(token),
            (_, _, _, Some(path), _) => weft_jetstream::Auth::Creds(path),
            (_, _, _, _, Some(seed)) => weft_jetstream::Auth::NKey(seed),
            _ => weft_jetstream::Auth::None,
        };
        Ok(Some(weft_jetstream::Options {
            auth,
            ca: self.nats_ca,
            client_cert: self.nats_cert.zip(self.nats_key),
            prefix: self.nats_prefix,
            replicas: self.nats_replicas as usize,
            ..weft_jetstream::Options::new(&url)
        }))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create an app: a weft.toml and one Rust function.
    New {
        /// App name: lowercase letters, digits and `-`.
        name: String,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Check an app's manifest without running anything.
    Check {
        /// The app directory, holding weft.toml.
        #[arg(default_value = ".")]
        app_dir: PathBuf,
    },
    /// Build an app's functions and serve its routes.
    Up {
        /// The app directory, holding weft.toml.
        #[arg(default_value = ".")]
        app_dir: PathBuf,
        /// Address for the app's routes.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address for the admin API (keep it on 127.0.0.1).
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        /// Address for the S3 API of the app's buckets, in path style,
        /// signed with the access key `weft s3 credentials` shows
        /// [default: 127.0.0.1:8082 when the app declares buckets].
        #[arg(long)]
        s3_listen: Option<SocketAddr>,
        /// Data directory (default: APP_DIR/.weft).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Skip the functions' build commands; use the sources as they are.
        #[arg(long)]
        no_build: bool,
        /// How long invocation records and function logs are kept, e.g. 7d.
        #[arg(long, default_value = "7d", value_parser = parse_retention)]
        retention: std::time::Duration,
        /// How long a client has to send a request's headers (and to start
        /// the next request on a kept-alive connection), e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = parse_timeout)]
        header_timeout: std::time::Duration,
        /// A connection with no request running, or whose response its client
        /// stopped reading, is closed after this, e.g. 60s.
        #[arg(long, default_value = "60s", value_parser = parse_timeout)]
        idle_timeout: std::time::Duration,
        /// Connections the app's address holds at once; past it, new ones get a 503.
        #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        max_connections: u32,
        /// On Ctrl-C or SIGTERM, how long requests and invocations still
        /// running may take to finish, e.g. 30s.
        #[arg(long, default_value = "30s", value_parser = parse_shutdown)]
        shutdown_timeout: std::time::Duration,
        /// Trace nothing: no trace context, no spans (records and logs stay).
        #[arg(long, env = "WEFT_NO_TRACES")]
        no_traces: bool,
        /// Export spans over OTLP/HTTP (protobuf) to this collector, e.g.
        /// http://127.0.0.1:4318; without it, the standard
        /// OTEL_EXPORTER_OTLP_ENDPOINT variables say where, if anywhere.
        #[arg(long)]
        otlp_endpoint: Option<String>,
        #[command(flatten)]
        nats: Box<NatsArgs>,
    },
    /// Show the app a running server runs: its functions' versions and the
    /// shared deployment's revision.
    App {
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// List the live nodes sharing the server's storage (itself alone without --nats).
    Nodes {
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Say what deploying an app to a running server would change, and change nothing.
    Plan {
        #[arg(default_value = ".")]
        app_dir: PathBuf,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
        /// Skip the functions' build commands.
        #[arg(long)]
        no_build: bool,
    },
    /// Invoke a function through a running server and show its record.
    Invoke {
        function: String,
        /// Request body: JSON text, or @FILE to read it from a file.
        #[arg(long)]
        data: Option<String>,
        /// Request header, as `Name: value`; repeatable.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// HTTP method.
        #[arg(long, default_value = "POST")]
        method: String,
        /// Request path.
        #[arg(long, default_value = "/")]
        path: String,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
        /// Invoke asynchronously: the server stores the request, answers with
        /// an invocation id, and runs it with retries and destinations.
        #[arg(long = "async")]
        asynchronous: bool,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Build an app and deploy it to a running server.
    Deploy {
        #[arg(default_value = ".")]
        app_dir: PathBuf,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
        /// Skip the functions' build commands.
        #[arg(long)]
        no_build: bool,
        /// Deploy even if it loses data, such as messages waiting in a removed queue.
        #[arg(long)]
        allow_loss: bool,
    },
    /// Send, receive, inspect and redrive queue messages on a running server.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER, global = true)]
        server: String,
    },
    /// Read and write key-value stores (`[kv.NAME]`).
    Kv {
        #[command(subcommand)]
        command: KvCommand,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER, global = true)]
        server: String,
    },
    /// The S3 API of the app's buckets.
    S3 {
        #[command(subcommand)]
        command: S3Command,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER, global = true)]
        server: String,
    },
    /// Work with events and event patterns.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// State machines in Amazon States Language (Step Functions definitions).
    Workflows {
        #[command(subcommand)]
        command: WorkflowsCommand,
    },
    /// Show what functions wrote to stdout and stderr.
    Logs {
        #[command(flatten)]
        options: commands::LogOptions,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Show one request's hops, from any of them: a trace id, or the request
    /// id of any invocation in it. Prints a waterfall of every span.
    Trace {
        /// A trace id (32 hex digits) or a request id.
        id: String,
        /// Print the trace as JSON (the admin API's tree).
        #[arg(long)]
        json: bool,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// What the app's invocations cost: requests and GB-seconds, by
    /// configured memory (as Lambda bills) and by measured peak memory,
    /// priced by Lambda's public x86 prices unless given others.
    Cost {
        #[command(flatten)]
        query: commands::CostQuery,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
}

#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// Run a definition in this process without deploying it, as Step
    /// Functions Local does: prints `{"status": "SUCCEEDED", "output": ...}`
    /// or `{"status": "FAILED", "error": ..., "cause": ...}` and exits 0;
    /// exits 2 with the definition's mistakes on stderr if it is invalid.
    Run {
        /// The definition, an Amazon States Language JSON file.
        #[arg(long)]
        definition: PathBuf,
        /// The execution's input: JSON, or @FILE (default `{}`).
        #[arg(long)]
        input: Option<String>,
        /// A function's answer: FUNCTION=@FILE or FUNCTION=JSON, where the
        /// JSON is the answer, or {"Return": ...}, {"Throw": {"Error": ...,
        /// "Cause": ...}} (either with "Delay": SECONDS), or {"Sequence":
        /// [...]} for successive calls. Repeat for each function.
        #[arg(long = "mock", value_name = "FUNCTION=ANSWER")]
        mocks: Vec<String>,
        /// The execution's name ($$.Execution.Name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Start an execution of a deployed workflow: a standard one runs on
    /// (prints its id), an express one runs to its end (prints its outcome).
    Start {
        /// The workflow, as `[workflow.NAME]` names it.
        workflow: String,
        /// The input: JSON, or @FILE (default `{}`).
        #[arg(long)]
        input: Option<String>,
        /// The execution's name, unique per workflow (default: made up).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// List a workflow's executions, newest first.
    List {
        workflow: String,
        /// Only executions with this status: RUNNING, SUCCEEDED, FAILED, ABORTED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Show one execution: its status, input and output or error.
    Describe {
        /// The execution: WORKFLOW:NAME.
        execution: String,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Show an execution's history: Step Functions' events, one per line.
    History {
        /// The execution: WORKFLOW:NAME.
        execution: String,
        /// Print the events as one JSON array.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Answer a task token: the task waiting for it succeeds with the
    /// output (Step Functions' SendTaskSuccess).
    TaskSuccess {
        /// The token, as the task gave it out ($$.Task.Token).
        token: String,
        /// The task's result: JSON, or @FILE (default null).
        #[arg(long)]
        output: Option<String>,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Answer a task token: the task waiting for it fails (SendTaskFailure).
    TaskFailure {
        token: String,
        #[arg(long)]
        error: Option<String>,
        #[arg(long)]
        cause: Option<String>,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Tell a task waiting for its token that the work goes on: its
    /// HeartbeatSeconds start again (SendTaskHeartbeat).
    TaskHeartbeat {
        token: String,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Run a FAILED or ABORTED execution again from where it ended: what
    /// succeeded is kept, what failed runs again (Step Functions' redrive).
    Redrive {
        /// The execution: WORKFLOW:NAME.
        execution: String,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Stop a running execution (it ends ABORTED).
    Stop {
        /// The execution: WORKFLOW:NAME.
        execution: String,
        #[arg(long)]
        error: Option<String>,
        #[arg(long)]
        cause: Option<String>,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Test an EventBridge event pattern against an event, as TestEventPattern
    /// does: prints `match` (exit 0), `no match` (exit 1), or
    /// `invalid pattern: REASON` (exit 2).
    TestPattern {
        /// The pattern, a JSON file.
        #[arg(long)]
        pattern: PathBuf,
        /// The event, a JSON file (EventBridge-shaped or a CloudEvent).
        #[arg(long)]
        event: PathBuf,
    },
    /// Put one event on a bus (EventBridge's PutEvents); prints its id.
    Put {
        /// EventBridge's `source`, e.g. `shop.orders`.
        #[arg(long)]
        source: String,
        /// EventBridge's `detail-type`, e.g. `OrderPlaced`.
        #[arg(long)]
        detail_type: String,
        /// The detail: a JSON object, or @FILE.
        #[arg(long, default_value = "{}")]
        detail: String,
        #[arg(long, default_value = "default")]
        bus: String,
        /// A resource the event is about (repeatable).
        #[arg(long = "resource")]
        resources: Vec<String>,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// Send a bus's archived events of a time window through its rules again.
    Replay {
        #[arg(long, default_value = "default")]
        bus: String,
        /// Start of the window (RFC 3339, e.g. 2026-11-23T10:00:00Z), when the bus received the events.
        #[arg(long)]
        from: String,
        /// End of the window (RFC 3339); default: now.
        #[arg(long)]
        to: Option<String>,
        /// Only this rule (default: every rule of the bus).
        #[arg(long)]
        rule: Option<String>,
        /// The replay's name, set as `replay-name` in each replayed event.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
    /// List the buses, their archives and their rules.
    Buses {
        #[arg(long, env = "WEFT_SERVER", default_value = client::DEFAULT_SERVER)]
        server: String,
    },
}

#[derive(Subcommand)]
pub enum S3Command {
    /// Show the access key that signs requests to the S3 listener (made
    /// on the first start, kept in the storage).
    Credentials {
        /// Print it as AWS_* environment variables for a shell.
        #[arg(long)]
        env: bool,
    },
}

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print a key's value (as stored: text, or bytes).
    Get { store: String, key: String },
    /// Set a key; answers once it is durable.
    Set {
        store: String,
        key: String,
        /// The value, or @FILE to read it from a file.
        value: String,
        /// This value expires after this long (e.g. 30s, 24h), in place of
        /// the store's `ttl`.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Remove a key.
    Delete { store: String, key: String },
    /// List keys, in order.
    List {
        store: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Send one message.
    Send {
        queue: String,
        /// The message body, or @FILE to read it from a file.
        #[arg(long)]
        data: String,
        /// Deduplication id (FIFO queues use the body's hash when absent).
        #[arg(long)]
        id: Option<String>,
        /// Message group (required by FIFO queues).
        #[arg(long)]
        group: Option<String>,
        /// Extra delay before the first delivery, e.g. 10s.
        #[arg(long)]
        delay: Option<String>,
        /// CloudEvents type to deliver it with.
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Receive messages; they stay hidden for the visibility timeout until acknowledged.
    Receive {
        queue: String,
        #[arg(long, default_value_t = 1)]
        max: usize,
        /// How long to hide them (default: the queue's visibility_timeout).
        #[arg(long)]
        visibility: Option<String>,
    },
    /// Acknowledge received messages by their receipts.
    Ack {
        queue: String,
        #[arg(required = true)]
        receipts: Vec<String>,
    },
    /// Show the oldest messages without receiving them.
    Peek {
        queue: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Message counts of one queue, or of all.
    Stats { queue: Option<String> },
    /// Move every message of a dead-letter queue back to the queue it came from.
    Redrive { queue: String },
}

fn parse_retention(text: &str) -> Result<std::time::Duration, String> {
    match weft_manifest::parse_duration(text)? {
        d if d.as_secs() >= 60 => Ok(d),
        _ => Err("keep records for at least 1m".into()),
    }
}

pub(crate) fn parse_since(text: &str) -> Result<std::time::Duration, String> {
    match weft_manifest::parse_duration(text)? {
        d if !d.is_zero() && d.as_secs() <= 3650 * 86_400 => Ok(d),
        _ => Err("give a time back from now, from 1ms to 3650d, e.g. 10m, 1h, 2d".into()),
    }
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    match weft_manifest::parse_duration(text)? {
        d if d.as_millis() >= 100 && d.as_secs() <= 3600 => Ok(d),
        _ => Err("give a time from 100ms to 1h".into()),
    }
}

fn parse_shutdown(text: &str) -> Result<std::time::Duration, String> {
    match weft_manifest::parse_duration(text)? {
        d if d.as_secs() <= 15 * 60 => Ok(d),
        _ => Err("give at most 15m (a function's longest timeout)".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::New { name, path } => commands::new(&name, path),
            Command::Check { app_dir } => commands::check(&app_dir),
            Command::Up {
                app_dir,
                listen,
                admin_listen,
                s3_listen,
                data,
                no_build,
                retention,
                header_timeout,
                idle_timeout,
                max_connections,
                shutdown_timeout,
                no_traces,
                otlp_endpoint,
                nats,
            } => {
                let limits = weft_gateway::Limits {
                    header_timeout,
                    idle_timeout,
                    max_connections: max_connections as usize,
                    drain: shutdown_timeout,
                    ..Default::default()
                };
                let listen = commands::Listen {
                    app: listen,
                    admin: admin_listen,
                    s3: s3_listen,
                    limits,
                };
                match nats.options() {
                    Ok(nats) => {
                        let telemetry = commands::Telemetry {
                            retention,
                            tracing: !no_traces,
                            otlp_endpoint,
                        };
                        commands::up(&app_dir, listen, data, !no_build, telemetry, nats).await
                    }
                    Err(e) => Err(anyhow::anyhow!(e)),
                }
            }
            Command::Plan {
                app_dir,
                server,
                no_build,
            } => commands::plan(&app_dir, &server, !no_build).await,
            Command::Invoke {
                function,
                data,
                headers,
                method,
                path,
                json,
                asynchronous,
                server,
            } => {
                let mode = if asynchronous {
                    commands::InvokeMode::Async
                } else {
                    commands::InvokeMode::Wait { json }
                };
                commands::invoke(&server, &function, data, &headers, &method, &path, mode).await
            }
            Command::Deploy {
                app_dir,
                server,
                no_build,
                allow_loss,
            } => commands::deploy(&app_dir, &server, !no_build, allow_loss).await,
            Command::Logs { options, server } => commands::logs(&server, options).await,
            Command::Trace { id, json, server } => commands::trace(&server, &id, json).await,
            Command::Cost { query, json, server } => commands::cost(&server, &query, json).await,
            Command::App { server } => commands::app(&server).await,
            Command::Nodes { server } => commands::nodes(&server).await,
            Command::Queue { command, server } => commands::queue(&server, command).await,
            Command::Kv { command, server } => commands::kv(&server, command).await,
            Command::S3 { command, server } => match command {
                S3Command::Credentials { env } => commands::s3_credentials(&server, env).await,
            },
            Command::Workflows { command } => match command {
                WorkflowsCommand::Run {
                    definition,
                    input,
                    mocks,
                    name,
                } => Ok(workflows::run(&definition, input.as_deref(), &mocks, name.as_deref()).await),
                other => workflows::remote(other).await,
            },
            Command::Events { command } => match command {
                EventsCommand::TestPattern { pattern, event } => Ok(commands::test_pattern(&pattern, &event)),
                EventsCommand::Put {
                    source,
                    detail_type,
                    detail,
                    bus,
                    resources,
                    server,
                } => commands::put_event(&server, &bus, &source, &detail_type, &detail, &resources).await,
                EventsCommand::Replay {
                    bus,
                    from,
                    to,
                    rule,
                    name,
                    server,
                } => commands::replay(&server, &bus, &from, to, rule, name).await,
                EventsCommand::Buses { server } => commands::buses(&server).await,
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            // Manifest diagnostics carry their own `error:` prefixes.
            if text.starts_with("error:") {
                eprint!("{text}")
            } else {
                eprintln!("error: {text}")
            }
            ExitCode::FAILURE
        }
    }
}
