//! The JetStream provider against real nats-server processes: the same
//! behaviour checks as the embedded provider, on one server and on a
//! three-server cluster with every stream at three replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_jetstream::testing::{Cluster, NatsServer};
use weft_jetstream::{ConnectError, JetStream, Options};
use weft_store::durable::conformance;

fn options(url: &str, prefix: &str) -> Options {
    Options {
        prefix: prefix.into(),
        ..Options::new(url)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_jetstream() {
    let server = NatsServer::start();
    let store = JetStream::connect(options(&server.url(), "t1"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    conformance::run_all(store).await;
}

/// A cluster elects its JetStream leader some seconds after it starts; until
/// then connecting fails, so the test retries for a bounded time.
async fn connect_when_ready(options: Options) -> Arc<JetStream> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match JetStream::connect(options.clone()).await {
            Ok(s) => {
                // The stream at three replicas needs the peers too.
                match weft_store::durable::Streams::stats(&*s, "ready").await {
                    Ok(_) => return s,
                    Err(e) if Instant::now() < deadline => tracing::debug!("not ready: {e}"),
                    Err(e) => panic!("the cluster never took a stream at three replicas: {e}"),
                }
            }
            Err(e) if Instant::now() < deadline => tracing::debug!("not ready: {e}"),
            Err(e) => panic!("the cluster never became ready: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_jetstream_cluster_at_three_replicas() {
    let cluster = Cluster::start(3);
    let store = connect_when_ready(Options {
        replicas: 3,
        ..options(&cluster.urls(), "t3")
    })
    .await;
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_servers_are_named_with_the_fix() {
    let nowhere = format!("nats://127.0.0.1:{}", weft_jetstream::testing::free_port());
    let e = JetStream::connect(Options::new(&nowhere))
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("--nats"), "{e}");

    let e = JetStream::connect(Options::new("http://[::1"))
        .await
        .err()
        .expect("not a URL");
    assert!(e.to_string().contains("nats://HOST:PORT"), "{e}");

    let plain = NatsServer::start_without_jetstream();
    let e = JetStream::connect(Options::new(&plain.url()))
        .await
        .err()
        .expect("no JetStream");
    assert!(matches!(e, ConnectError::NoJetStream { .. }), "{e}");
    assert!(e.to_string().contains("nats-server -js"), "{e}");

    let e = JetStream::connect(options("nats://127.0.0.1:4222", "a.b"))
        .await
        .err()
        .expect("bad prefix");
    assert!(e.to_string().contains("letters, digits or `-`"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_left_by_another_program_stops_the_start() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "clash_q_nqueue_3Aorders".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let e = JetStream::connect(options(&server.url(), "clash"))
        .await
        .err()
        .expect("a foreign stream under the prefix");
    assert!(matches!(e, ConnectError::Incompatible { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("clash_q_nqueue_3Aorders") && text.contains("--nats-prefix"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_given_and_wrong_ones_are_named() {
    use weft_jetstream::Auth;
    let with_user = NatsServer::start_with_config("authorization { user: weft, password: s3cret }");
    let user = |password: &str| Options {
        auth: Auth::UserPassword {
            user: "weft".into(),
            password: password.into(),
        },
        ..Options::new(&with_user.url())
    };
    assert!(JetStream::connect(user("s3cret")).await.is_ok());
    let e = JetStream::connect(user("wrong")).await.err().expect("a wrong password");
    assert!(matches!(e, ConnectError::Credentials { .. }), "{e}");
    assert!(e.to_string().contains("--nats-password"), "{e}");
    let e = JetStream::connect(Options::new(&with_user.url()))
        .await
        .err()
        .expect("no credentials");
    assert!(matches!(e, ConnectError::Credentials { .. }), "{e}");

    let with_token = NatsServer::start_with_config("authorization { token: t0ken }");
    let token = |t: &str| Options {
        auth: Auth::Token(t.into()),
        ..Options::new(&with_token.url())
    };
    assert!(JetStream::connect(token("t0ken")).await.is_ok());
    let e = JetStream::connect(token("nope")).await.err().expect("a wrong token");
    assert!(matches!(e, ConnectError::Credentials { .. }), "{e}");

    let e = JetStream::connect(Options {
        auth: Auth::Creds("/nonexistent/weft.creds".into()),
        ..Options::new(&with_token.url())
    })
    .await
    .err()
    .expect("a missing creds file");
    assert!(e.to_string().contains("/nonexistent/weft.creds"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nkey_is_accepted_and_a_wrong_one_named() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users: [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let with = |seed: String| Options {
        auth: weft_jetstream::Auth::NKey(seed),
        ..Options::new(&server.url())
    };
    assert!(JetStream::connect(with(user.seed().unwrap())).await.is_ok());
    let other = nkeys::KeyPair::new_user();
    let e = JetStream::connect(with(other.seed().unwrap()))
        .await
        .err()
        .expect("another key");
    assert!(matches!(e, ConnectError::Credentials { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_nats_with_the_servers_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("weft-nats-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let (ca_file, cert_file, key_file) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, server_cert.pem()).unwrap();
    std::fs::write(&key_file, server_key.serialize_pem()).unwrap();
    let server = NatsServer::start_with_config(&format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\" }}",
        cert_file.display(),
        key_file.display()
    ));
    let url = format!("tls://127.0.0.1:{}", server.port);
    let with_ca = Options {
        ca: Some(ca_file.clone()),
        ..Options::new(&url)
    };
    let store = JetStream::connect(with_ca)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    weft_store::durable::Streams::append(
        &*store,
        "q",
        vec![conformance::msg("1", "over TLS")],
        conformance::WINDOW,
    )
    .await
    .unwrap();
    let e = JetStream::connect(Options::new(&url))
        .await
        .err()
        .expect("an unknown CA");
    assert!(e.to_string().contains("--nats-ca"), "{e}");
    let e = JetStream::connect(Options {
        ca: Some(dir.join("missing.pem")),
        ..Options::new(&url)
    })
    .await
    .err()
    .expect("a missing CA file");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
