//! Connecting: options from flags or the environment, and the checks that
//! run before a node starts (reachable, credentials accepted, JetStream
//! enabled, no stream under weft's prefix left with other settings), each
//! failing with what is wrong and how to fix it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use async_nats::jetstream;
use futures_util::StreamExt;

use crate::names::Names;
use crate::{JetStream, REQUEST_TIMEOUT};

/// How weft proves who it is to NATS.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A `.creds` file (a user JWT and its nkey seed).
    Creds(PathBuf),
    /// An nkey seed (`SU...`).
    NKey(String),
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// `nats://HOST:PORT`, or `tls://HOST:PORT` for TLS; several separated by commas.
    pub url: String,
    pub auth: Auth,
    /// Every stream, subject and bucket weft makes starts with it, so that
    /// several apps share one JetStream.
    pub prefix: String,
    /// Replicas of each stream and bucket weft creates (1, or 3 on a cluster).
    pub replicas: usize,
    /// The connection's name, as the server's monitoring shows it.
    pub name: String,
    /// A PEM file of the CA that signed the servers' certificates, for
    /// `tls://` servers whose CA the system does not trust.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Options {
    pub fn new(url: &str) -> Options {
        Options {
            url: url.to_string(),
            auth: Auth::None,
            prefix: "weft".into(),
            replicas: 1,
            name: "weft".into(),
            ca: None,
            client_cert: None,
        }
    }
}

/// Why weft cannot start on this JetStream.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "cannot reach NATS at {url}: {reason}. Check the URL in --nats, and that nats-server runs there (for example `nats-server -js`)"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "NATS at {url} refused weft's credentials: {reason}. Give the right ones with --nats-user and --nats-password, --nats-token, --nats-creds or --nats-nkey"
    )]
    Credentials { url: String, reason: String },
    #[error(
        "TLS with NATS at {url} failed: {reason}. Give the CA that signed the server's certificate with --nats-ca (and a client certificate with --nats-cert and --nats-key if the server asks for one)"
    )]
    Tls { url: String, reason: String },
    #[error(
        "NATS at {url} has no JetStream ({reason}). Start the server with JetStream on (`nats-server -js`, or `jetstream {{}}` in its config)"
    )]
    NoJetStream { url: String, reason: String },
    #[error(
        "stream `{stream}` on {url} was not made by weft: {reason}. Remove it (`nats stream rm {stream}`) or give weft another --nats-prefix"
    )]
    Incompatible {
        url: String,
        stream: String,
        reason: String,
    },
}

impl JetStream {
    /// Connects, checks the server, and starts the background tasks (the
    /// wake subscription and the outbox's replayer).
    pub async fn connect(options: Options) -> Result<Arc<JetStream>, ConnectError> {
        let names = Names::new(&options.prefix).map_err(ConnectError::Invalid)?;
        if !(1..=5).contains(&options.replicas) {
            return Err(ConnectError::Invalid(format!(
                "--nats-replicas {} is out of range: JetStream keeps 1 to 5 replicas",
                options.replicas
            )));
        }
        let url = options.url.clone();
        let mut connect = async_nats::ConnectOptions::new()
            .name(&options.name)
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
                    other => tracing::debug!("NATS: {other}"),
                }
            });
        if url.split(',').any(|u| u.trim().starts_with("tls://")) {
            connect = connect.require_tls(true);
        }
        let readable = |path: &PathBuf, what: &str| {
            std::fs::metadata(path)
                .map(|_| ())
                .map_err(|e| ConnectError::Invalid(format!("cannot read the {what} {}: {e}", path.display())))
        };
        if let Some(ca) = &options.ca {
            readable(ca, "NATS CA file (--nats-ca)")?;
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &options.client_cert {
            readable(cert, "NATS client certificate (--nats-cert)")?;
            readable(key, "NATS client key (--nats-key)")?;
            connect = connect
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        connect = match &options.auth {
            Auth::None => connect,
            Auth::UserPassword { user, password } => connect.user_and_password(user.clone(), password.clone()),
            Auth::Token(token) => connect.token(token.clone()),
            Auth::NKey(seed) => connect.nkey(seed.clone()),
            Auth::Creds(path) => connect.credentials_file(path).await.map_err(|e| {
                ConnectError::Invalid(format!("cannot read the NATS credentials file {}: {e}", path.display()))
            })?,
        };
        let addresses: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|u| {
                u.trim().parse().map_err(|e| {
                    ConnectError::Invalid(format!(
                        "--nats `{u}` is not a NATS URL ({e}): write it as nats://HOST:PORT or tls://HOST:PORT"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let client = connect.connect(addresses).await.map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            let reason = e.to_string();
            match e.kind() {
                K::Authentication | K::AuthorizationViolation => ConnectError::Credentials {
                    url: url.clone(),
                    reason,
                },
                K::Tls => ConnectError::Tls {
                    url: url.clone(),
                    reason,
                },
                _ if reason.contains("certificate") || reason.to_lowercase().contains("tls") => ConnectError::Tls {
                    url: url.clone(),
                    reason,
                },
                K::ServerParse => ConnectError::Invalid(format!(
                    "--nats `{url}` is not a NATS URL ({reason}): write it as nats://HOST:PORT"
                )),
                _ => ConnectError::Unreachable {
                    url: url.clone(),
                    reason,
                },
            }
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        check_jetstream(&client, &url).await?;
        let store = Arc::new(JetStream {
            client,
            js,
            names,
            url,
            replicas: options.replicas,
            streams: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            leases: Mutex::new(HashMap::new()),
            kv: RwLock::new(HashMap::new()),
            objects: RwLock::new(HashMap::new()),
            notes: tokio::sync::OnceCell::new(),
            outbox: tokio::sync::OnceCell::new(),
            wakes: Arc::default(),
            tasks: Mutex::new(Vec::new()),
        });
        store.check_streams().await?;
        if !store.serializes_compare_and_set() {
            tracing::warn!(
                "nats-server {} does not serialize compare-and-set on streams of more than one replica \
                 (nats-server issue 4320, fixed in 2.9.21): at --nats-replicas {}, two writers of one key \
                 may both win, so a schedule may fire twice and a key-value compare-and-swap or increment \
                 may lose a write; upgrade the NATS servers",
                store.client.server_info().version,
                store.replicas
            );
        }
        store.start_wakes().await.map_err(|e| ConnectError::Unreachable {
            url: store.url.clone(),
            reason: format!("cannot subscribe to {}: {e}", store.names.wake_subject()),
        })?;
        store.start_replayer();
        Ok(store)
    }

    /// Every stream under weft's prefix must have the settings weft gives
    /// it; one that does not was left by another program (or another
    /// version), and weft stops before touching it.
    async fn check_streams(&self) -> Result<(), ConnectError> {
        let mut names = self.js.stream_names();
        let mut owned = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| ConnectError::Unreachable {
                url: self.url.clone(),
                reason: format!("cannot list streams: {e}"),
            })?;
            if self.names.owns(&name) {
                owned.push(name);
            }
        }
        for name in owned {
            let mut stream = self.js.get_stream(&name).await.map_err(|e| ConnectError::Unreachable {
                url: self.url.clone(),
                reason: format!("cannot read stream {name}: {e}"),
            })?;
            let config = stream
                .info()
                .await
                .map_err(|e| ConnectError::Unreachable {
                    url: self.url.clone(),
                    reason: format!("cannot read stream {name}: {e}"),
                })?
                .config
                .clone();
            if let Some(reason) = self.mismatch(&config) {
                return Err(ConnectError::Incompatible {
                    url: self.url.clone(),
                    stream: name,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Starts the subscription that turns other nodes' appends into wakes here.
    async fn start_wakes(&self) -> Result<(), async_nats::SubscribeError> {
        let mut subscription = self.client.subscribe(self.names.wake_subject()).await?;
        let wakes = self.wakes.clone();
        self.spawn(async move {
            while let Some(message) = subscription.next().await {
                let Ok(stream) = std::str::from_utf8(&message.payload) else {
                    continue;
                };
                for wake in wakes.read().unwrap_or_else(|p| p.into_inner()).iter() {
                    wake(stream);
                }
            }
        });
        Ok(())
    }
}

/// Asks the server for its JetStream account: no answer, or an error in
/// it, means JetStream is off (or not granted to this account).
async fn check_jetstream(client: &async_nats::Client, url: &str) -> Result<(), ConnectError> {
    let no = |reason: String| ConnectError::NoJetStream {
        url: url.to_string(),
        reason,
    };
    let answer = client.request("$JS.API.INFO", bytes::Bytes::new()).await.map_err(|e| {
        if e.kind() == async_nats::RequestErrorKind::TimedOut {
            ConnectError::Unreachable {
                url: url.to_string(),
                reason: "JetStream did not answer within 5 s (a cluster that just started may still be electing its leader: try again)".into(),
            }
        } else {
            no(e.to_string())
        }
    })?;
    let info: serde_json::Value =
        serde_json::from_slice(&answer.payload).map_err(|e| no(format!("its answer is not JSON: {e}")))?;
    if let Some(error) = info.get("error") {
        return Err(no(error["description"].as_str().unwrap_or("an error").to_string()));
    }
    Ok(())
}
