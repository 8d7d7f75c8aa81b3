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
