//! The behaviour every storage provider must show. Each check takes a
//! `&dyn Storage`, so a new provider runs the same list by adding one
//! `provider_*` test that opens it.

use std::sync::Arc;

use weft_store::durable::conformance::{self, WINDOW, msg};
use weft_store::durable::{Embedded, KeyValue, Streams};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_embedded() {
    let dir = temp("all");
    let s = Arc::new(Embedded::open(&dir.join("events.db")).unwrap());
    conformance::groups_run_side_by_side(&*s).await;
    conformance::run_all(s).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Group commit: writes that wait together share one transaction (and one
/// fsync). With a commit per write, commits would equal operations; the
/// bound leaves room for a loaded machine, where the writer may wake for
/// the first few writes one at a time.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_concurrent_appends_share_commits() {
    let dir = temp("group");
    let embedded = Arc::new(Embedded::open(&dir.join("events.db")).unwrap());
    let before = embedded.commit_stats();
    conformance::concurrent_appends_all_land(embedded.clone()).await;
    let after = embedded.commit_stats();
    let commits = after.commits - before.commits;
    let operations = after.operations - before.operations;
    assert!(operations > 200, "200 appends and a stats call, counted {operations}");
    assert!(
        commits * 4 <= operations,
        "{operations} operations took {commits} commits: concurrent writes did not share them"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_keeps_what_it_acknowledged_across_reopening() {
    let dir = temp("reopen");
    let path = dir.join("events.db");
    {
        let s = Embedded::open(&path).unwrap();
        s.append("q", vec![msg("1", "kept")], WINDOW).await.unwrap();
        s.put("kv", "k", b"v".to_vec()).await.unwrap();
    }
    let s = Embedded::open(&path).unwrap();
    assert_eq!(conformance::bodies(&s.peek("q", 10).await.unwrap()), ["kept"]);
    assert_eq!(s.get("kv", "k").await.unwrap().unwrap().value, b"v");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a crash leaves of a blob being written (a temporary file, never
/// renamed into place) is never readable, is swept once it is older than
/// the sweep's cut-off, and is removed on reopening once a day old.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_sweeps_what_a_crash_left_of_a_blob() {
    use std::time::{Duration, SystemTime};
    use weft_store::durable::Blobs;
    let dir = temp("crash");
    let path = dir.join("events.db");
    let partial = dir.join("events.blobs/.partial");
    let s = Embedded::open(&path).unwrap();
    let left = |name: &str, age: Duration| {
        let file = std::fs::File::create(partial.join(name)).unwrap();
        std::io::Write::write_all(&mut &file, b"half a blob").unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    };
    left("0000000000000000000000000000aa", Duration::from_secs(2 * 3600));
    left("0000000000000000000000000000bb", Duration::from_secs(60));
    let later = SystemTime::now() + Duration::from_secs(1);
    assert!(
        s.list_blobs("b", later).await.unwrap().is_empty(),
        "a partial blob is never listed"
    );
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(s.sweep_unfinished("b", hour_ago).await.unwrap(), 1, "only the old one");
    assert!(
        partial.join("0000000000000000000000000000bb").exists(),
        "a write still going on is kept"
    );
    drop(s);

    left("0000000000000000000000000000cc", Duration::from_secs(2 * 24 * 3600));
    let _s = Embedded::open(&path).unwrap();
    assert!(
        !partial.join("0000000000000000000000000000cc").exists(),
        "removed on opening"
    );
    assert!(partial.join("0000000000000000000000000000bb").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
