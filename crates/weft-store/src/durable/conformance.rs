//! The behaviour every storage provider must show, written once. Each
//! check takes a `&dyn Storage`; a provider's test opens it and calls
//! [`run_all`]. Built with the `conformance` feature, for tests only.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Append, Change, Expect, Message, NewMessage, Receipt, Storage, StorageError, Write};

pub fn msg(id: &str, body: &str) -> NewMessage {
    NewMessage {
        id: id.into(),
        body: body.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn grouped(id: &str, group: &str) -> NewMessage {
    NewMessage {
        group: Some(group.into()),
        ..msg(id, id)
    }
}

pub const WINDOW: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(60);

pub fn bodies(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

async fn lease_ack_in_order(s: &dyn Storage) {
    s.append("q", vec![msg("1", "a"), msg("2", "b"), msg("3", "c")], WINDOW)
        .await
        .unwrap();
    let first = s.lease("q", 2, LONG, false).await.unwrap();
    assert_eq!(bodies(&first), ["a", "b"]);
    assert!(first.iter().all(|m| m.receive_count == 1));
    let stats = s.stats("q").await.unwrap();
    assert_eq!((stats.visible, stats.in_flight, stats.delayed), (1, 2, 0));
    let receipts: Vec<Receipt> = first.iter().map(|m| m.receipt()).collect();
    assert_eq!(s.ack("q", &receipts).await.unwrap(), 2);
    assert_eq!(s.ack("q", &receipts).await.unwrap(), 0, "a receipt acknowledges once");
    assert_eq!(bodies(&s.lease("q", 10, LONG, false).await.unwrap()), ["c"]);
    assert!(s.lease("q", 10, LONG, false).await.unwrap().is_empty());
}

async fn a_lapsed_lease_is_delivered_again(s: &dyn Storage) {
    s.append("lapse", vec![msg("1", "a")], WINDOW).await.unwrap();
    let first = s.lease("lapse", 1, Duration::from_millis(50), false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let again = s.lease("lapse", 1, LONG, false).await.unwrap();
    assert_eq!((again[0].seq, again[0].receive_count), (first[0].seq, 2));
    assert_eq!(
        s.ack("lapse", &[first[0].receipt()]).await.unwrap(),
        0,
        "the old lease's receipt is stale"
    );
    assert_eq!(s.ack("lapse", &[again[0].receipt()]).await.unwrap(), 1);
}

async fn release_delays_and_keeps_the_error(s: &dyn Storage) {
    s.append("rel", vec![msg("1", "a")], WINDOW).await.unwrap();
    let m = s.lease("rel", 1, LONG, false).await.unwrap().remove(0);
    assert!(
        s.release("rel", m.receipt(), Duration::from_millis(100), Some("boom".into()))
            .await
            .unwrap()
    );
    assert!(
        s.lease("rel", 1, LONG, false).await.unwrap().is_empty(),
        "not before its delay"
    );
    assert_eq!(s.stats("rel").await.unwrap().delayed, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let again = s.lease("rel", 1, LONG, false).await.unwrap().remove(0);
    assert_eq!((again.receive_count, again.last_error.as_deref()), (2, Some("boom")));
}

async fn duplicates_are_acknowledged_not_stored(s: &dyn Storage) {
    let a = s
        .append("dup", vec![msg("x", "1"), msg("x", "2")], WINDOW)
        .await
        .unwrap();
    assert!(!a[0].duplicate && a[1].duplicate);
    assert_eq!(a[0].seq, a[1].seq);
    assert_eq!(bodies(&s.peek("dup", 10).await.unwrap()), ["1"]);
    let outside = s.append("dup", vec![msg("x", "3")], Duration::ZERO).await.unwrap();
    assert!(!outside[0].duplicate, "outside the window the id is new again");
}

async fn delayed_messages_wait(s: &dyn Storage) {
    let delayed = NewMessage {
        delay: Duration::from_millis(100),
        ..msg("1", "later")
    };
    s.append("delay", vec![delayed, msg("2", "now")], WINDOW).await.unwrap();
    assert_eq!(bodies(&s.lease("delay", 10, LONG, false).await.unwrap()), ["now"]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(bodies(&s.lease("delay", 10, LONG, false).await.unwrap()), ["later"]);
}

/// FIFO: a group's messages come in order, and never two of one group at
/// once. Whether other groups are delivered beside it is the provider's
/// choice (the embedded one does; see [`groups_run_side_by_side`]).
async fn fifo_delivers_one_at_a_time_per_group(s: &dyn Storage) {
    s.append(
        "fifo",
        vec![grouped("a1", "a"), grouped("a2", "a"), grouped("b1", "b")],
        WINDOW,
    )
    .await
    .unwrap();
    let mut delivered = Vec::new();
    for _ in 0..10 {
        let leased = s.lease("fifo", 10, LONG, true).await.unwrap();
        let mut groups: Vec<_> = leased.iter().map(|m| m.group.clone()).collect();
        groups.dedup();
        assert_eq!(
            groups.len(),
            leased.len(),
            "two of one group at once: {:?}",
            bodies(&leased)
        );
        assert!(
            s.lease("fifo", 10, LONG, true).await.unwrap().is_empty(),
            "a group with a message in flight gives nothing more"
        );
        delivered.extend(bodies(&leased));
        let receipts: Vec<Receipt> = leased.iter().map(|m| m.receipt()).collect();
        s.ack("fifo", &receipts).await.unwrap();
        if delivered.len() == 3 {
            break;
        }
    }
    let order = |g: char| {
        delivered
            .iter()
            .filter(|b| b.starts_with(g))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (order('a'), order('b')),
        (vec!["a1".into(), "a2".into()], vec!["b1".to_string()])
    );
}

/// The embedded provider delivers the oldest message of every group at once.
pub async fn groups_run_side_by_side(s: &dyn Storage) {
    s.append(
        "fifo-side",
        vec![grouped("a1", "a"), grouped("a2", "a"), grouped("b1", "b")],
        WINDOW,
    )
    .await
    .unwrap();
    assert_eq!(
        bodies(&s.lease("fifo-side", 10, LONG, true).await.unwrap()),
        ["a1", "b1"]
    );
}

async fn transfer_moves_atomically(s: &dyn Storage) {
    s.append("src", vec![msg("1", "a"), msg("2", "b")], WINDOW)
        .await
        .unwrap();
    let leased = s.lease("src", 1, LONG, false).await.unwrap();
    let attrs = BTreeMap::from([("source".to_string(), "src".to_string())]);
    assert_eq!(
        s.transfer("src", &[leased[0].seq], "dlq", attrs, false).await.unwrap(),
        1
    );
    let moved = s.peek("dlq", 10).await.unwrap();
    assert_eq!((bodies(&moved), moved[0].receive_count), (vec!["a".to_string()], 1));
    assert_eq!(moved[0].attributes["source"], "src");
    assert_eq!(bodies(&s.peek("src", 10).await.unwrap()), ["b"]);
    assert_eq!(
        s.transfer("dlq", &[moved[0].seq], "src", BTreeMap::new(), true)
            .await
            .unwrap(),
        1
    );
    let back = s.peek("src", 10).await.unwrap();
    assert_eq!(
        (bodies(&back), back[1].receive_count),
        (vec!["b".to_string(), "a".to_string()], 0)
    );
}

async fn expire_drops_old_messages(s: &dyn Storage) {
    s.append("old", vec![msg("1", "a")], WINDOW).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.expire("old", Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(s.expire("old", Duration::from_millis(10)).await.unwrap(), 1);
    assert!(s.peek("old", 10).await.unwrap().is_empty());
}

async fn read_pages_through_a_stream_without_leasing(s: &dyn Storage) {
    let all: Vec<NewMessage> = (0..5).map(|i| msg(&i.to_string(), &i.to_string())).collect();
    s.append("log", all, WINDOW).await.unwrap();
    let first = s.read("log", 0, 2).await.unwrap();
    assert_eq!(bodies(&first), ["0", "1"]);
    let rest = s.read("log", first[1].seq, 10).await.unwrap();
    assert_eq!(bodies(&rest), ["2", "3", "4"]);
    assert!(s.read("log", rest[2].seq, 10).await.unwrap().is_empty());
    assert_eq!(s.stats("log").await.unwrap().in_flight, 0, "reading leases nothing");
    assert_eq!(bodies(&s.lease("log", 10, LONG, false).await.unwrap()).len(), 5);
}

async fn append_all_writes_several_streams_at_once(s: &dyn Storage) {
    let append = |stream: &str, id: &str| Append {
        stream: stream.into(),
        messages: vec![msg(id, id)],
        dedup_window: WINDOW,
    };
    let first = s
        .append_all(vec![append("many-a", "1"), append("many-b", "2")])
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|a| a.len() == 1 && !a[0].duplicate));
    let again = s
        .append_all(vec![append("many-b", "2"), append("many-a", "3")])
        .await
        .unwrap();
    assert!(again[0][0].duplicate, "deduplication holds per stream");
    assert!(!again[1][0].duplicate);
    assert_eq!(bodies(&s.peek("many-a", 10).await.unwrap()), ["1", "3"]);
    assert_eq!(bodies(&s.peek("many-b", 10).await.unwrap()), ["2"]);
}

async fn key_value_compare_and_set(s: &dyn Storage) {
    let r1 = s.create("kv", "k", b"1".to_vec()).await.unwrap();
    assert!(
        matches!(s.create("kv", "k", b"x".to_vec()).await, Err(StorageError::Conflict { current: Some(r) }) if r == r1)
    );
    let r2 = s.update("kv", "k", b"2".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    assert!(matches!(
        s.update("kv", "k", b"3".to_vec(), r1).await,
        Err(StorageError::Conflict { .. })
    ));
    let e = s.get("kv", "k").await.unwrap().unwrap();
    assert_eq!((e.value, e.revision), (b"2".to_vec(), r2));
    s.put("kv", "k2", b"x".to_vec()).await.unwrap();
    s.put("kv", "other", b"x".to_vec()).await.unwrap();
    assert_eq!(s.keys("kv", "k").await.unwrap(), ["k", "k2"]);
    assert!(s.delete("kv", "k").await.unwrap());
    assert!(s.get("kv", "k").await.unwrap().is_none());
    assert!(!s.delete("kv", "k").await.unwrap());
}

/// The changes a stream holds, in order.
async fn changes(s: &dyn Storage, stream: &str) -> Vec<Change> {
    let messages = s.read(stream, 0, 100).await.unwrap();
    for m in &messages {
        let change = Change::from_message(m).unwrap();
        assert_eq!(m.id, change.sequence_number(), "a change's id is its sequence number");
        assert_eq!(
            m.group.as_deref(),
            Some(change.key.as_str()),
            "a change's group is its key"
        );
    }
    messages.iter().map(|m| Change::from_message(m).unwrap()).collect()
}

fn value(c: &Change) -> (Option<&[u8]>, Option<&[u8]>) {
    (c.old.as_deref(), c.new.as_deref())
}

/// Every insert, modification and removal is one change on each of the
/// write's change streams, made in the write: a write that fails its
/// precondition, or removes nothing, records nothing.
async fn key_value_changes_are_written_with_the_change(s: &dyn Storage) {
    let streams = vec!["changes-a".to_string(), "changes-b".to_string()];
    let write = Write {
        changes: streams.clone(),
        ..Write::default()
    };
    let first = s.set("kvc", "cart", b"1".to_vec(), &write).await.unwrap();
    assert_eq!(first.old, None);
    let second = s.set("kvc", "cart", b"2".to_vec(), &write).await.unwrap();
    assert_eq!(second.old.as_ref().map(|e| e.value.as_slice()), Some(&b"1"[..]));
    let stale = Write {
        expect: Expect::Revision(first.revision),
        ..write.clone()
    };
    assert!(matches!(
        s.set("kvc", "cart", b"3".to_vec(), &stale).await,
        Err(StorageError::Conflict { current: Some(r) }) if r == second.revision
    ));
    let removed = s.remove("kvc", "cart", &write).await.unwrap().unwrap();
    assert_eq!(removed.old.map(|e| e.value), Some(b"2".to_vec()));
    assert!(s.remove("kvc", "cart", &write).await.unwrap().is_none());
    assert!(s.get("kvc", "cart").await.unwrap().is_none());
    for stream in &streams {
        let seen = changes(s, stream).await;
        let values: Vec<_> = seen.iter().map(value).collect();
        assert_eq!(
            values,
            [
                (None, Some(&b"1"[..])),
                (Some(&b"1"[..]), Some(&b"2"[..])),
                (Some(&b"2"[..]), None)
            ]
        );
        let revisions: Vec<u64> = seen.iter().map(|c| c.revision).collect();
        assert_eq!(revisions, [first.revision, second.revision, removed.revision]);
        assert!(seen.iter().all(|c| c.bucket == "kvc" && c.key == "cart" && !c.expired));
    }
    // A write without change streams records nothing anywhere.
    s.put("kvc", "quiet", b"x".to_vec()).await.unwrap();
    assert_eq!(changes(s, "changes-a").await.len(), 3);
}

/// A value written with a time to live reads as absent once it has run
/// out, and its removal is an expired change: made by `expire_keys`, or
/// by the next write of the key, whichever comes first.
async fn key_value_times_to_live_end_in_a_removal(s: &dyn Storage) {
    let streams = vec!["expiries".to_string()];
    let short = Write {
        ttl: Some(Duration::from_secs(2)),
        changes: streams.clone(),
        ..Write::default()
    };
    s.set("kvt", "a", b"1".to_vec(), &short).await.unwrap();
    let a = s.get("kvt", "a").await.unwrap().unwrap();
    s.set("kvt", "b", b"2".to_vec(), &short).await.unwrap();
    let kept = Write {
        changes: streams.clone(),
        ..Write::default()
    };
    s.set("kvt", "c", b"3".to_vec(), &kept).await.unwrap();
    assert_eq!(s.get("kvt", "c").await.unwrap().unwrap().expires_us, None);
    let b = s.get("kvt", "b").await.unwrap().unwrap();
    let (Some(a_ends), Some(b_ends)) = (a.expires_us, b.expires_us) else {
        panic!("values written with a time to live say when it ends: {a:?} {b:?}");
    };
    assert!(a_ends <= b_ends);
    let wait = b_ends - crate::now_us() + 200_000;
    tokio::time::sleep(Duration::from_micros(wait.max(0) as u64)).await;
    assert!(
        s.get("kvt", "a").await.unwrap().is_none(),
        "an expired key reads as absent"
    );
    assert_eq!(s.list("kvt", "", None, 10).await.unwrap(), ["c"]);
    // The next write of `a` first removes the expired value.
    let again = s.set("kvt", "a", b"new".to_vec(), &kept).await.unwrap();
    assert_eq!(again.old, None, "an expired value is not the old one");
    assert_eq!(
        s.expire_keys("kvt", &streams, 100).await.unwrap(),
        1,
        "only `b` was left"
    );
    assert_eq!(s.expire_keys("kvt", &streams, 100).await.unwrap(), 0);
    let seen = changes(s, "expiries").await;
    type Summary<'a> = (&'a str, bool, Option<&'a [u8]>, Option<&'a [u8]>);
    let summary: Vec<Summary> = seen
        .iter()
        .map(|c| (c.key.as_str(), c.expired, c.old.as_deref(), c.new.as_deref()))
        .collect();
    assert_eq!(
        summary[3..],
        [
            ("a", true, Some(&b"1"[..]), None),
            ("a", false, None, Some(&b"new"[..])),
            ("b", true, Some(&b"2"[..]), None),
        ]
    );
    let revisions: Vec<u64> = seen.iter().map(|c| c.revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
}

/// A removal that names a revision the key has left removes nothing and
/// records no change; one at the key's revision removes it.
async fn key_value_conditional_removal(s: &dyn Storage) {
    let streams = vec!["removals".to_string()];
    let write = Write {
        changes: streams.clone(),
        ..Write::default()
    };
    let first = s.set("kvd", "k", b"1".to_vec(), &write).await.unwrap();
    let second = s.set("kvd", "k", b"2".to_vec(), &write).await.unwrap();
    let stale = Write {
        expect: Expect::Revision(first.revision),
        ..write.clone()
    };
    assert!(matches!(
        s.remove("kvd", "k", &stale).await,
        Err(StorageError::Conflict { current: Some(r) }) if r == second.revision
    ));
    assert_eq!(s.get("kvd", "k").await.unwrap().unwrap().value, b"2");
    assert_eq!(
        changes(s, "removals").await.len(),
        2,
        "a refused removal records nothing"
    );
    let current = Write {
        expect: Expect::Revision(second.revision),
        ..write
    };
    let removed = s.remove("kvd", "k", &current).await.unwrap().unwrap();
    assert_eq!(removed.old.map(|e| e.value), Some(b"2".to_vec()));
    assert_eq!(changes(s, "removals").await.len(), 3);
}

/// A catch-up after writes that finished copies nothing twice: each
/// change is in its streams once, however often the catch-up runs.
async fn key_value_catch_up_copies_nothing_twice(s: &dyn Storage) {
    let streams = vec!["caught-up".to_string()];
    let write = Write {
        changes: streams.clone(),
        ..Write::default()
    };
    for v in ["1", "2", "3"] {
        s.set("kvu", "k", v.as_bytes().to_vec(), &write).await.unwrap();
    }
    // Past the time a provider leaves to writers still copying.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..2 {
        s.catch_up("kvu", &streams).await.unwrap();
    }
    let seen = changes(s, "caught-up").await;
    let news: Vec<Option<&[u8]>> = seen.iter().map(|c| c.new.as_deref()).collect();
    assert_eq!(news, [Some(&b"1"[..]), Some(&b"2"[..]), Some(&b"3"[..])]);
}

/// Each write's change goes to the streams that write named, and only
/// there: a later write of the key, or a catch-up, that finds the earlier
/// change sends it where it was meant, not where the later one goes.
async fn key_value_changes_keep_their_own_streams(s: &dyn Storage) {
    let to = |stream: &str| Write {
        changes: vec![stream.to_string()],
        ..Write::default()
    };
    s.set("kvs", "k", b"1".to_vec(), &to("inserts")).await.unwrap();
    s.remove("kvs", "k", &to("deletes")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.catch_up("kvs", &["deletes".to_string()]).await.unwrap();
    let inserts = changes(s, "inserts").await;
    let deletes = changes(s, "deletes").await;
    assert_eq!(inserts.len(), 1, "{inserts:?}");
    assert_eq!(inserts[0].new.as_deref(), Some(&b"1"[..]));
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].new, None);
}

/// A value of half the provider's `max_value` can be written twice with
/// changes (each change carries the old value beside the new one), and
/// its change holds both, byte for byte.
async fn key_value_large_values_with_changes(s: &dyn Storage) {
    let half = (s.max_value() / 2).min(256 * 1024) - 1024;
    let streams = vec!["large".to_string()];
    let write = Write {
        changes: streams.clone(),
        ..Write::default()
    };
    let (a, b) = (vec![b'a'; half], vec![b'b'; half]);
    s.set("kvb", "big", a.clone(), &write).await.unwrap();
    s.set("kvb", "big", b.clone(), &write).await.unwrap();
    let seen = changes(s, "large").await;
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[1].old.as_ref(), seen[1].new.as_ref()), (Some(&a), Some(&b)));
    assert_eq!(s.get("kvb", "big").await.unwrap().unwrap().value, b);
}

/// An empty key is refused, for every operation.
async fn key_value_refuses_empty_keys(s: &dyn Storage) {
    assert!(s.get("kve", "").await.is_err());
    assert!(s.put("kve", "", b"x".to_vec()).await.is_err());
    assert!(s.delete("kve", "").await.is_err());
}

/// Writers racing on one key with compare-and-set each land exactly once:
/// the counter ends at the number of writers. A provider that says it
/// cannot promise this (`serializes_compare_and_set`) is not held to it.
async fn key_value_compare_and_set_under_contention(s: Arc<dyn Storage>) {
    const WRITERS: u64 = 16;
    if !s.serializes_compare_and_set() {
        eprintln!("compare-and-set under contention: not checked, the provider does not serialize it");
        return;
    }
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let current = s.get("kvr", "counter").await.unwrap();
                let n: u64 = current
                    .as_ref()
                    .map_or(0, |e| String::from_utf8_lossy(&e.value).parse().unwrap());
                let next = (n + 1).to_string().into_bytes();
                let written = match current {
                    Some(e) => s.update("kvr", "counter", next, e.revision).await,
                    None => s.create("kvr", "counter", next).await,
                };
                match written {
                    Ok(_) => return,
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let e = s.get("kvr", "counter").await.unwrap().unwrap();
    assert_eq!(e.value, WRITERS.to_string().into_bytes());
}

/// Keys list in order, a page at a time, by prefix.
async fn key_value_lists_in_pages(s: &dyn Storage) {
    for k in ["p/3", "p/1", "q/1", "p/2", "p/10"] {
        s.put("kvl", k, b"x".to_vec()).await.unwrap();
    }
    assert_eq!(s.list("kvl", "p/", None, 2).await.unwrap(), ["p/1", "p/10"]);
    assert_eq!(s.list("kvl", "p/", Some("p/10"), 2).await.unwrap(), ["p/2", "p/3"]);
    assert!(s.list("kvl", "p/", Some("p/3"), 2).await.unwrap().is_empty());
    assert_eq!(s.list("kvl", "", None, 100).await.unwrap().len(), 5);

    // A prefix is exactly the keys that start with it: not the key just
    // past its range (`0` follows `/`), nor one that sorts before it;
    // keys with any character after the prefix are in.
    for k in ["p0", "p.", "p/~", "p/\u{e9}t\u{e9}", "p/\u{10FFFF}"] {
        s.put("kvl", k, b"x".to_vec()).await.unwrap();
    }
    assert_eq!(
        s.list("kvl", "p/", None, 100).await.unwrap(),
        ["p/1", "p/10", "p/2", "p/3", "p/~", "p/\u{e9}t\u{e9}", "p/\u{10FFFF}"]
    );
    assert_eq!(s.keys("kvl", "p/\u{e9}").await.unwrap(), ["p/\u{e9}t\u{e9}"]);
    // A page after a key that sorts before the prefix starts at the prefix.
    assert_eq!(s.list("kvl", "p/", Some("a"), 1).await.unwrap(), ["p/1"]);
    assert_eq!(
        s.list("kvl", "", Some("p/3"), 3).await.unwrap(),
        ["p/~", "p/\u{e9}t\u{e9}", "p/\u{10FFFF}"]
    );
    assert!(s.list("kvl", "q/", Some("q/1"), 10).await.unwrap().is_empty());
}

async fn objects_round_trip(s: &dyn Storage) {
    s.put_object("b", "one", vec![1, 2, 3]).await.unwrap();
    s.put_object("b", "two", vec![4]).await.unwrap();
    assert_eq!(s.get_object("b", "one").await.unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(s.list_objects("b").await.unwrap(), ["one", "two"]);
    assert!(s.delete_object("b", "one").await.unwrap());
    assert_eq!(s.get_object("b", "one").await.unwrap(), None);
}

/// Reads a blob's range to its end.
async fn read_range(s: &dyn Storage, bucket: &str, id: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut reader = s.read_blob(bucket, id, offset, len).await.unwrap()?;
    let mut out = Vec::new();
    while let Some(chunk) = reader.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    Some(out)
}

/// A blob written in many chunks reads back whole and by any range, is
/// listed once finished, and is gone once removed; ids the provider did
/// not make name nothing.
async fn blobs_stream_in_and_out_by_range(s: &dyn Storage) {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let started = std::time::SystemTime::now() - Duration::from_secs(1);
    let mut writer = s.create_blob("blobs").await.unwrap();
    for chunk in data.chunks(100_003) {
        writer.write(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let blob = writer.finish().await.unwrap();
    assert_eq!(blob.size, data.len() as u64);
    assert!(super::is_blob_id(&blob.id), "{}", blob.id);

    assert_eq!(read_range(s, "blobs", &blob.id, 0, u64::MAX).await.unwrap(), data);
    for (offset, len) in [
        (0, 1),
        (1, 262_144),
        (262_143, 2),
        (2_999_999, 10),
        (1_000_000, 1_500_000),
    ] {
        let end = (offset + len).min(data.len() as u64) as usize;
        assert_eq!(
            read_range(s, "blobs", &blob.id, offset, len).await.unwrap(),
            &data[offset as usize..end],
            "bytes {offset} and {len} after"
        );
    }
    assert_eq!(read_range(s, "blobs", &blob.id, 3_000_000, 5).await.unwrap(), b"");

    let later = std::time::SystemTime::now() + Duration::from_secs(1);
    assert_eq!(
        s.list_blobs("blobs", later).await.unwrap(),
        std::slice::from_ref(&blob.id)
    );
    assert!(
        s.list_blobs("blobs", started).await.unwrap().is_empty(),
        "finished after `before`"
    );
    assert!(s.list_blobs("other-blobs", later).await.unwrap().is_empty());

    for forged in [
        "../../etc/passwd",
        "",
        &format!("{}g", &blob.id[1..]),
        &format!("{}x", &blob.id),
    ] {
        assert!(s.read_blob("blobs", forged, 0, 1).await.unwrap().is_none(), "{forged}");
        assert!(!s.remove_blob("blobs", forged).await.unwrap(), "{forged}");
    }
    assert!(s.remove_blob("blobs", &blob.id).await.unwrap());
    assert!(!s.remove_blob("blobs", &blob.id).await.unwrap());
    assert!(s.read_blob("blobs", &blob.id, 0, 1).await.unwrap().is_none());
    assert!(s.list_blobs("blobs", later).await.unwrap().is_empty());
}

/// A writer dropped before it finishes leaves no blob to read or list.
async fn an_unfinished_blob_leaves_nothing(s: &dyn Storage) {
    let mut writer = s.create_blob("unfinished").await.unwrap();
    writer.write(bytes::Bytes::from_static(b"half of it")).await.unwrap();
    drop(writer);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = std::time::SystemTime::now() + Duration::from_secs(1);
    assert!(s.list_blobs("unfinished", later).await.unwrap().is_empty());
    let later = std::time::SystemTime::now() + Duration::from_secs(1);
    // What it wrote is gone at once, or at the first sweep.
    assert!(s.sweep_unfinished("unfinished", later).await.unwrap() <= 1);
    assert_eq!(s.sweep_unfinished("unfinished", later).await.unwrap(), 0);
    let empty = s.create_blob("unfinished").await.unwrap().finish().await.unwrap();
    assert_eq!(empty.size, 0);
    assert_eq!(read_range(s, "unfinished", &empty.id, 0, 10).await.unwrap(), b"");
}

/// Appends from many tasks at once: every one is kept, under its own
/// sequence number. The tasks start together, so their writes overlap.
pub async fn concurrent_appends_all_land(s: Arc<dyn Storage>) {
    const WRITERS: usize = 200;
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let s = s.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            s.append("many", vec![msg(&format!("m{i}"), "x")], WINDOW).await
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap()[0].seq);
    }
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), WRITERS);
    assert_eq!(s.stats("many").await.unwrap().visible, WRITERS as u64);
}

/// Runs every check against `s`, each on its own stream, bucket and key.
/// A provider passes when this returns.
/// A provider that reports commits reports every one: a write is at
/// least one more commit, each commit sits in exactly one bucket of
/// each histogram, and the operations they carried are at least as many.
/// A provider that keeps no commits of its own reports none, always.
async fn commit_stats_count_every_commit(s: &dyn Storage) {
    let before = s.commit_stats();
    s.append("stats", vec![msg("1", "a")], WINDOW).await.unwrap();
    s.append("stats", vec![msg("2", "b"), msg("3", "c")], WINDOW)
        .await
        .unwrap();
    let after = s.commit_stats();
    let (Some(before), Some(after)) = (before, after) else {
        assert_eq!((before, after), (None, None), "commit stats come and go");
        return;
    };
    assert!(after.commits >= before.commits + 2, "{before:?} then {after:?}");
    assert!(after.operations - before.operations >= after.commits - before.commits);
    assert_eq!(after.commit_us.iter().sum::<u64>(), after.commits, "{after:?}");
    assert_eq!(after.batch.iter().sum::<u64>(), after.commits, "{after:?}");
    assert!(after.commit_us_sum >= before.commit_us_sum);
}

pub async fn run_all(s: Arc<dyn Storage>) {
    lease_ack_in_order(&*s).await;
    a_lapsed_lease_is_delivered_again(&*s).await;
    release_delays_and_keeps_the_error(&*s).await;
    duplicates_are_acknowledged_not_stored(&*s).await;
    delayed_messages_wait(&*s).await;
    fifo_delivers_one_at_a_time_per_group(&*s).await;
    transfer_moves_atomically(&*s).await;
    expire_drops_old_messages(&*s).await;
    read_pages_through_a_stream_without_leasing(&*s).await;
    append_all_writes_several_streams_at_once(&*s).await;
    key_value_compare_and_set(&*s).await;
    key_value_changes_are_written_with_the_change(&*s).await;
    key_value_times_to_live_end_in_a_removal(&*s).await;
    key_value_lists_in_pages(&*s).await;
    key_value_refuses_empty_keys(&*s).await;
    key_value_conditional_removal(&*s).await;
    key_value_catch_up_copies_nothing_twice(&*s).await;
    key_value_changes_keep_their_own_streams(&*s).await;
    key_value_large_values_with_changes(&*s).await;
    key_value_compare_and_set_under_contention(s.clone()).await;
    objects_round_trip(&*s).await;
    blobs_stream_in_and_out_by_range(&*s).await;
    an_unfinished_blob_leaves_nothing(&*s).await;
    commit_stats_count_every_commit(&*s).await;
    concurrent_appends_all_land(s).await;
}
