//! Real nats-server processes for tests: one server, or a cluster, each on
//! free loopback ports with its own temporary store directory, stopped
//! (and its directory removed) when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One nats-server with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    config: PathBuf,
}

fn temp_dir(label: &str) -> PathBuf {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("weft-nats-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

impl NatsServer {
    /// Starts a server with JetStream (`-js`) and waits until it answers.
    pub fn start() -> NatsServer {
        NatsServer::single("one", |dir| {
            format!("jetstream {{ store_dir: \"{}\" }}\n", dir.join("store").display())
        })
    }

    /// Starts a server without JetStream, for the error it must give.
    pub fn start_without_jetstream() -> NatsServer {
        NatsServer::single("plain", |_| String::new())
    }

    /// Starts a server with JetStream and `extra` lines in its config (an
    /// `authorization { ... }` block, say).
    pub fn start_with_config(extra: &str) -> NatsServer {
        let extra = extra.to_string();
        NatsServer::single("custom", move |dir| {
            format!(
                "jetstream {{ store_dir: \"{}\" }}\n{extra}\n",
                dir.join("store").display()
            )
        })
    }

    /// One server on a free port, with `extra` lines in its config.
    fn single(label: &str, extra: impl Fn(&std::path::Path) -> String) -> NatsServer {
        let dir = temp_dir(label);
        let port = free_port();
        let config = dir.join("server.conf");
        std::fs::write(&config, format!("listen: 127.0.0.1:{port}\n{}", extra(&dir))).expect("the server's config");
        let mut server = NatsServer::from_config(dir, port, config);
        server.resume();
        server
    }

    fn from_config(dir: PathBuf, port: u16, config: PathBuf) -> NatsServer {
        NatsServer {
            child: None,
            port,
            dir,
            config,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL); its store stays for [`NatsServer::resume`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn resume(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join("server.log")).expect("the server's log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server runs (scripts/setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Servers joined in one cluster with JetStream, so streams may have
/// replicas on several of them.
pub struct Cluster {
    pub servers: Vec<NatsServer>,
}

impl Cluster {
    pub fn start(size: usize) -> Cluster {
        let clients: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let all_routes: Vec<String> = routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let mut servers = Vec::new();
        for i in 0..size {
            let dir = temp_dir(&format!("cluster{i}"));
            let config = dir.join("server.conf");
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\ncluster {{\n  name: weft-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    clients[i],
                    dir.join("store").display(),
                    routes[i],
                    all_routes.join(", ")
                ),
            )
            .expect("the server's config");
            let mut server = NatsServer::from_config(dir, clients[i], config);
            server.resume();
            servers.push(server);
        }
        Cluster { servers }
    }

    /// Every server's URL, comma-separated, as `--nats` takes them.
    pub fn urls(&self) -> String {
        self.servers.iter().map(|s| s.url()).collect::<Vec<_>>().join(",")
    }
}
