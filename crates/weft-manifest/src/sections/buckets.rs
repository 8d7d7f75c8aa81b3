//! `[bucket.NAME]`: object buckets functions reach through an S3-compatible
//! API, with the largest object each keeps; `[[bucket.NAME.notify]]`,
//! where the S3 event notifications of its objects go; and
//! `buckets = [...]` in `[function.NAME]`, the buckets a function may read
//! and write (at `http://BUCKET.s3.weft.internal/KEY`).
//!
//! ```toml
//! [bucket.uploads]
//! max_object = "5GiB"                 # default and largest: 5 TiB, as S3's
//!
//! [[bucket.uploads.notify]]
//! events = ["ObjectCreated:*"]        # default: ObjectCreated:* and ObjectRemoved:*
//! prefix = "images/"                  # only keys that begin with this
//! suffix = ".jpg"                     # and end with this
//! function = "thumbnail"              # or queue, topic, bus
//! batch = 10                          # function targets: records per invocation
//! dead_letter = "failed"              # function targets: a standard queue
//!
//! [function.thumbnail]
//! source = "thumbnail.wasm"
//! buckets = ["uploads"]
//! ```
//!
//! Names follow S3's rules ([`check_bucket_name`]), so that a name that
//! works on S3 works here and the other way round; one with dots is quoted,
//! as in `[bucket."logs.2026"]`. Notifications are
//! checked as S3 checks a notification configuration: two that could both
//! take one event of one key are refused, as S3 refuses them
//! ("Configurations overlap"). Their targets are checked and retried as a
//! store's change targets are.
//!
//! This module must not know how objects are kept or how events are sent.

use std::fmt;
use std::ops::Range;

use toml_edit::{Table, TableLike};

use crate::names::Reported;
use crate::parse::{Checker, Kind, closest};
use crate::records::{Records, TARGET_KEYS, record_retry};
use crate::section::Section;
use crate::sections::app::Grant;
use crate::{Manifest, Retry, Target};

/// The largest object, and `max_object` when the manifest does not say:
/// S3's limit, 5 TiB.
pub const MAX_OBJECT: u64 = 5 << 40;
/// The longest key, and so the longest `prefix` or `suffix`: S3's, in bytes.
const MAX_OBJECT_KEY: usize = 1024;
/// Prefixes S3 keeps for itself.
const RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
/// Suffixes S3 keeps for itself (access point aliases, directory and table buckets).
const RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

const BUCKET: Kind = Kind {
    name: "bucket",
    keys: &["max_object", "notify"],
    example: "uploads",
    help: "write the bucket as `[bucket.NAME]` with its settings",
};
/// The keys of `[[bucket.NAME.notify]]` beside [`TARGET_KEYS`].
const FILTER_KEYS: &[&str] = &["events", "prefix", "suffix"];
const RECORDS: Records = Records {
    record: "notification",
    table: "[[bucket.NAME.notify]]",
};
const GRANT: Grant = Grant {
    key: "buckets",
    kind: "bucket",
    noun: "bucket",
    verb: "use",
    example: "uploads",
};

/// `[bucket.NAME]`: a bucket of objects functions read and write by key.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub name: String,
    /// The largest object, in bytes.
    pub max_object: u64,
    /// `[[bucket.NAME.notify]]`, in the order written: where the events of
    /// its objects go. No two take one event of one key.
    pub notify: Vec<Notify>,
}

/// One `[[bucket.NAME.notify]]`: which events of which keys, and where they go.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// The events it takes, each once and none included in another.
    pub events: Vec<ObjectEvent>,
    /// Only keys that begin with this (empty: every key).
    pub prefix: String,
    /// Only keys that end with this (empty: every key).
    pub suffix: String,
    /// A function (sent batches of S3 event records), queue, topic or bus
    /// (sent each record as one event).
    pub target: Target,
    /// Function targets: records per invocation.
    pub batch: u32,
    /// Function targets: invocations at once.
    pub concurrency: u32,
    /// Function targets: tried until `max_age` (24 hours), doubling the
    /// wait from one second, as a store's change targets are.
    pub retry: Retry,
    /// Function targets: a standard queue for records that could not be delivered.
    pub dead_letter: Option<String>,
}

/// An S3 event type a notification takes, as S3 names it without the
/// `s3:` AWS writes in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectEvent {
    /// `ObjectCreated:*`: an object is created, however.
    Created,
    /// `ObjectCreated:Put`
    Put,
    /// `ObjectCreated:Copy`
    Copy,
    /// `ObjectCreated:CompleteMultipartUpload`
    CompleteMultipartUpload,
    /// `ObjectRemoved:*`: an object is removed, however.
    Removed,
    /// `ObjectRemoved:Delete`
    Delete,
}

impl ObjectEvent {
    /// Every event a notification may take, in the order messages list them.
    pub const ALL: [ObjectEvent; 6] = [
        ObjectEvent::Created,
        ObjectEvent::Put,
        ObjectEvent::Copy,
        ObjectEvent::CompleteMultipartUpload,
        ObjectEvent::Removed,
        ObjectEvent::Delete,
    ];

    /// The events a notification takes when it does not say.
    pub const DEFAULT: [ObjectEvent; 2] = [ObjectEvent::Created, ObjectEvent::Removed];

    /// S3's name without `s3:`, e.g. `ObjectCreated:Put`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectEvent::Created => "ObjectCreated:*",
            ObjectEvent::Put => "ObjectCreated:Put",
            ObjectEvent::Copy => "ObjectCreated:Copy",
            ObjectEvent::CompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
            ObjectEvent::Removed => "ObjectRemoved:*",
            ObjectEvent::Delete => "ObjectRemoved:Delete",
        }
    }

    /// The event S3 names `text`, with or without `s3:`.
    pub fn parse(text: &str) -> Option<ObjectEvent> {
        let text = text.strip_prefix("s3:").unwrap_or(text);
        ObjectEvent::ALL.into_iter().find(|e| e.as_str() == text)
    }

    /// Whether the event S3 names `event` (e.g. `ObjectCreated:Put`, with
    /// or without `s3:`) is this one, or one of those `*` stands for.
    pub fn includes(self, event: &str) -> bool {
        let event = event.strip_prefix("s3:").unwrap_or(event);
        match self.as_str().strip_suffix('*') {
            Some(family) => event.len() > family.len() && event.starts_with(family),
            None => event == self.as_str(),
        }
    }

    /// The events this and `other` both include, as the narrower of the
    /// two; `None` if they have none in common.
    fn common(self, other: ObjectEvent) -> Option<ObjectEvent> {
        if self.includes(other.as_str()) {
            Some(other)
        } else if other.includes(self.as_str()) {
            Some(self)
        } else {
            None
        }
    }
}

impl fmt::Display for ObjectEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Bucket {
    /// A bucket with the defaults and no notifications.
    pub fn new(name: &str) -> Bucket {
        Bucket {
            name: name.to_string(),
            max_object: MAX_OBJECT,
            notify: Vec::new(),
        }
    }
}

impl Notify {
    /// Whether the event S3 names `event` (e.g. `ObjectCreated:Put`, with
    /// or without `s3:`) of the object `key` goes to this target.
    ///
    /// ```
    /// let text = "[app]\nname = \"shop\"\n\n[queue.jobs]\n\n[bucket.uploads]\n\n\
    ///     [[bucket.uploads.notify]]\nevents = [\"s3:ObjectCreated:*\"]\nprefix = \"images/\"\nqueue = \"jobs\"\n";
    /// let manifest = weft_manifest::Manifest::parse(text, "weft.toml").unwrap();
    /// let notify = &manifest.bucket("uploads").unwrap().notify[0];
    /// assert!(notify.matches("ObjectCreated:Put", "images/cat.jpg"));
    /// assert!(!notify.matches("ObjectRemoved:Delete", "images/cat.jpg"));
    /// assert!(!notify.matches("ObjectCreated:Put", "docs/cat.jpg"));
    /// ```
    pub fn matches(&self, event: &str, key: &str) -> bool {
        self.events.iter().any(|e| e.includes(event)) && key.starts_with(&self.prefix) && key.ends_with(&self.suffix)
    }

    /// An event of some key both this and `other` would take: the event,
    /// and the longer prefix and suffix of the two.
    fn overlap<'a>(&'a self, other: &'a Notify) -> Option<(ObjectEvent, &'a str, &'a str)> {
        let prefix = longer(&self.prefix, &other.prefix, |a, b| a.starts_with(b))?;
        let suffix = longer(&self.suffix, &other.suffix, |a, b| a.ends_with(b))?;
        let event = self
            .events
            .iter()
            .find_map(|a| other.events.iter().find_map(|b| a.common(*b)))?;
        Some((event, prefix, suffix))
    }
}

/// Of two key filters, the longer, if it holds the shorter as
/// `within(longer, shorter)` says: the keys that match both are the
/// longer's.
fn longer<'a>(a: &'a str, b: &'a str, within: fn(&str, &str) -> bool) -> Option<&'a str> {
    if within(a, b) {
        Some(a)
    } else if within(b, a) {
        Some(b)
    } else {
        None
    }
}

/// Checks a bucket name against S3's rules for general purpose buckets; the
/// error completes "bucket name `NAME` ...", as [`crate::check_name`]'s do.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    bucket_name_rule(name).map_err(|(why, _)| why)
}

/// What is wrong with a bucket name, and how to fix it.
fn bucket_name_rule(name: &str) -> Result<(), (String, String)> {
    let refuse = |why: String, fix: &str| Err((why, fix.to_string()));
    let length = name.chars().count();
    if length < 3 {
        return refuse(
            format!("is {length} characters long, fewer than 3"),
            "give it 3 to 63 characters, like `uploads`",
        );
    }
    if length > 63 {
        return refuse(
            format!("is {length} characters long, more than 63"),
            "shorten it to 63 characters at most",
        );
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        let why = match c.is_ascii_uppercase() {
            true => format!("has the uppercase letter `{c}`"),
            false => format!("has `{c}`, which bucket names may not hold"),
        };
        let fixed: String = name
            .chars()
            .map(|c| Some(c.to_ascii_lowercase()).filter(|c| allowed(*c)).unwrap_or('-'))
            .collect();
        let fix = match bucket_name_rule(&fixed) {
            Ok(()) => format!("write `{fixed}`: bucket names hold lowercase letters, digits, `.` and `-`"),
            Err(_) => "use only lowercase letters, digits, `.` and `-`".to_string(),
        };
        return Err((why, fix));
    }
    let letter_or_digit = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if let Some(c) = name.chars().next().filter(|c| !letter_or_digit(*c)) {
        return refuse(
            format!("begins with `{c}`"),
            "begin it with a lowercase letter or digit",
        );
    }
    if let Some(c) = name.chars().last().filter(|c| !letter_or_digit(*c)) {
        return refuse(format!("ends with `{c}`"), "end it with a lowercase letter or digit");
    }
    if name.contains("..") {
        return refuse(
            "has two dots in a row".into(),
            "keep one `.` between two parts of the name",
        );
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 4
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()))
    {
        return refuse(
            "is shaped like an IP address".into(),
            "add a letter, or write `-` for the dots",
        );
    }
    if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Err((
            format!("begins with `{prefix}`, which S3 reserves"),
            format!("choose a name that does not begin with `{prefix}`"),
        ));
    }
    if let Some(suffix) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        return Err((
            format!("ends with `{suffix}`, which S3 reserves"),
            format!("choose a name that does not end with `{suffix}`"),
        ));
    }
    Ok(())
}

pub(crate) struct Buckets;

impl Section for Buckets {
    fn keys(&self) -> &[&str] {
        &["bucket"]
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        let mut buckets = Vec::new();
        c.each_named_by(root, &BUCKET, &bucket_name_rule, |c, named| {
            if let Some(bucket) = c.bucket(named.name, named.table, &named.place) {
                buckets.push(bucket);
            }
        });
        manifest.buckets = buckets;
        c.grants(root, manifest, &GRANT, |f| &mut f.buckets);
    }
}

impl Checker {
    fn bucket(&mut self, name: &str, table: &dyn TableLike, place: &str) -> Option<Bucket> {
        let max_object = self.size_in(table, "max_object", place, MAX_OBJECT, (1, MAX_OBJECT));
        let mut ok = true;
        let mut notify: Vec<Notify> = Vec::new();
        if let Some((key, item)) = table.get_key_value("notify") {
            let tables = self.located_tables(
                key,
                item,
                &format!("bucket.{name}.notify"),
                &format!(
                    "write each notification as `[[bucket.{name}.notify]]` with `function`, `queue`, `topic` or `bus`"
                ),
            );
            for (n, (t, span)) in tables.into_iter().enumerate() {
                let place = format!("notification #{} of [bucket.{name}]", n + 1);
                let Some(this) = self.notify(t, &place, span.clone()) else {
                    ok = false;
                    continue;
                };
                for (earlier, other) in notify.iter().enumerate() {
                    if let Some((event, prefix, suffix)) = this.overlap(other) {
                        self.error(
                            span.clone(),
                            format!(
                                "{place} overlaps notification #{}: both take `{event}` events {}",
                                earlier + 1,
                                of_keys(prefix, suffix)
                            ),
                            "S3 refuses notifications that overlap, so that no event goes to two places: give them events, prefixes or suffixes that do not overlap, or notify a topic and subscribe each target to it",
                        );
                        ok = false;
                    }
                }
                notify.push(this);
            }
        }
        Some(Bucket {
            name: name.to_string(),
            max_object: max_object?,
            notify,
        })
        .filter(|_| ok)
    }

    fn notify(&mut self, t: &dyn TableLike, place: &str, span: Option<Range<usize>>) -> Option<Notify> {
        let keys: Vec<&str> = FILTER_KEYS.iter().chain(TARGET_KEYS).copied().collect();
        self.unknown_keys(t, &keys, place);
        let events = self.events(t, place);
        let prefix = self.key_filter(t, "prefix", place, "\"images/\"");
        let suffix = self.key_filter(t, "suffix", place, "\".jpg\"");
        let target = self.record_target(t, place, span, &RECORDS)?;
        Some(Notify {
            events: events.ok()?,
            prefix: prefix?,
            suffix: suffix?,
            target: target.target,
            batch: target.batch,
            concurrency: 1,
            retry: record_retry(),
            dead_letter: target.dead_letter,
        })
    }

    /// `events` of one notification, each an event S3 names, once.
    fn events(&mut self, t: &dyn TableLike, place: &str) -> Result<Vec<ObjectEvent>, Reported> {
        let Some(array) = self.array(t, "events", place, "[\"ObjectCreated:*\"]")? else {
            return Ok(ObjectEvent::DEFAULT.to_vec());
        };
        if array.is_empty() {
            self.error(
                array.span(),
                format!("`events` of {place} is empty"),
                "list the events to send, e.g. `events = [\"ObjectCreated:*\"]`, or remove `events` to send every one",
            );
            return Err(Reported);
        }
        // Each event with where it is written, to point at the one to remove.
        let mut events: Vec<(ObjectEvent, Option<Range<usize>>)> = Vec::new();
        let mut ok = true;
        for value in array.iter() {
            let Some(text) = value.as_str() else {
                self.error(
                    value.span(),
                    format!(
                        "`events` entries in {place} must be strings, found {}",
                        value.type_name()
                    ),
                    "write each event in quotes, e.g. `events = [\"ObjectCreated:*\"]`",
                );
                ok = false;
                continue;
            };
            let Some(event) = ObjectEvent::parse(text) else {
                self.unknown_event(text, value.span(), place);
                ok = false;
                continue;
            };
            let found = events
                .iter()
                .find_map(|(e, span)| e.common(event).map(|narrow| (*e, span.clone(), narrow)));
            match found {
                None => events.push((event, value.span())),
                Some((earlier, _, _)) if earlier == event => {
                    self.error(
                        value.span(),
                        format!("`events` of {place} lists `{event}` twice"),
                        "remove one of them",
                    );
                    ok = false;
                }
                Some((earlier, earlier_span, narrow)) => {
                    let (wide, span) = match narrow == event {
                        true => (earlier, value.span()),
                        false => (event, earlier_span),
                    };
                    self.error(
                        span,
                        format!("`events` of {place} lists `{narrow}`, which `{wide}` includes"),
                        format!("remove `{narrow}`"),
                    );
                    ok = false;
                }
            }
        }
        match ok {
            true => Ok(events.into_iter().map(|(e, _)| e).collect()),
            false => Err(Reported),
        }
    }

    fn unknown_event(&mut self, text: &str, span: Option<Range<usize>>, place: &str) {
        let (s3, bare) = match text.strip_prefix("s3:") {
            Some(bare) => ("s3:", bare),
            None => ("", text),
        };
        let known: Vec<&str> = ObjectEvent::ALL.iter().map(|e| e.as_str()).collect();
        let list = format!("{}, each with or without `s3:` in front", known.join(", "));
        let help = match closest(bare, &known) {
            Some(near) => format!("did you mean `{s3}{near}`? The events are: {list}"),
            None => format!("write one of the events: {list}"),
        };
        self.error(
            span,
            format!("`{text}` in `events` of {place} is not an object event weft sends"),
            help,
        );
    }

    /// `prefix` or `suffix`: empty when absent.
    fn key_filter(&mut self, t: &dyn TableLike, key: &str, place: &str, example: &str) -> Option<String> {
        let Some((text, span)) = self.string(t, key, place, example) else {
            return (!t.contains_key(key)).then(String::new);
        };
        if text.len() > MAX_OBJECT_KEY {
            self.error(
                span,
                format!(
                    "`{key}` in {place} is {} bytes long, more than the {MAX_OBJECT_KEY} of the longest key",
                    text.len()
                ),
                format!("shorten it to {MAX_OBJECT_KEY} bytes at most: no longer key could match it"),
            );
            return None;
        }
        Some(text.to_string())
    }
}

/// The keys of a prefix and a suffix, as an overlap names them.
fn of_keys(prefix: &str, suffix: &str) -> String {
    match (prefix.is_empty(), suffix.is_empty()) {
        (true, true) => "of every key".to_string(),
        (false, true) => format!("of keys that begin with `{prefix}`"),
        (true, false) => format!("of keys that end with `{suffix}`"),
        (false, false) => format!("of keys that begin with `{prefix}` and end with `{suffix}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"
[app]
name = "shop"

[queue.jobs]

[queue.failed]

[topic.uploads]

[bus.audit]

[function.thumbnail]
source = "thumbnail.wasm"
buckets = ["uploads", "logs.2026"]

[function.report]
source = "report.wasm"

[bucket.uploads]
max_object = "5GiB"

[[bucket.uploads.notify]]
events = ["ObjectCreated:*", "s3:ObjectRemoved:Delete"]
prefix = "images/"
suffix = ".jpg"
function = "thumbnail"
batch = 10
dead_letter = "failed"

[[bucket.uploads.notify]]
events = ["s3:ObjectCreated:Put"]
prefix = "images/"
suffix = ".png"
queue = "jobs"

[[bucket.uploads.notify]]
prefix = "docs/"
topic = "uploads"

[[bucket.uploads.notify]]
events = ["ObjectRemoved:*"]
prefix = "images/"
suffix = ".png"
bus = "audit"

[bucket."logs.2026"]
"#;

    #[test]
    fn a_manifest_with_buckets_parses_fully() {
        let m = Manifest::parse(APP, "weft.toml").unwrap();
        let notify = |events: &[ObjectEvent], prefix: &str, suffix: &str, target: Target| Notify {
            events: events.to_vec(),
            prefix: prefix.into(),
            suffix: suffix.into(),
            target,
            batch: 100,
            concurrency: 1,
            retry: Retry {
                max_attempts: u32::MAX,
                backoff: std::time::Duration::from_secs(1),
                max_age: Some(crate::CHANGE_RETENTION),
            },
            dead_letter: None,
        };
        assert_eq!(
            m.buckets,
            [
                Bucket {
                    name: "uploads".into(),
                    max_object: 5 << 30,
                    notify: vec![
                        Notify {
                            batch: 10,
                            dead_letter: Some("failed".into()),
                            ..notify(
                                &[ObjectEvent::Created, ObjectEvent::Delete],
                                "images/",
                                ".jpg",
                                Target::Function("thumbnail".into())
                            )
                        },
                        notify(&[ObjectEvent::Put], "images/", ".png", Target::Queue("jobs".into())),
                        notify(&ObjectEvent::DEFAULT, "docs/", "", Target::Topic("uploads".into())),
                        notify(&[ObjectEvent::Removed], "images/", ".png", Target::Bus("audit".into())),
                    ],
                },
                Bucket::new("logs.2026"),
            ]
        );
        assert_eq!(m.bucket("logs.2026").unwrap().max_object, MAX_OBJECT);
        assert_eq!(m.bucket("logs"), None);
        assert_eq!(m.function("thumbnail").unwrap().buckets, ["uploads", "logs.2026"]);
        assert!(m.function("report").unwrap().buckets.is_empty());
    }

    #[test]
    fn a_notification_matches_its_events_and_keys() {
        let m = Manifest::parse(APP, "weft.toml").unwrap();
        let notify = &m.bucket("uploads").unwrap().notify;
        let first = &notify[0];
        for event in [
            "ObjectCreated:Put",
            "s3:ObjectCreated:Copy",
            "ObjectCreated:CompleteMultipartUpload",
            "ObjectRemoved:Delete",
        ] {
            assert!(first.matches(event, "images/cat.jpg"), "{event}");
        }
        assert!(!first.matches("ObjectRemoved:DeleteMarkerCreated", "images/cat.jpg"));
        assert!(!first.matches("ObjectCreated:", "images/cat.jpg"));
        assert!(!first.matches("ObjectCreated:Put", "images/cat.png"));
        assert!(!first.matches("ObjectCreated:Put", "docs/images/cat.jpg"));
        assert!(first.matches("ObjectCreated:Put", "images/.jpg"));
        assert!(notify[1].matches("ObjectCreated:Put", "images/a.png"));
        assert!(!notify[1].matches("ObjectCreated:Copy", "images/a.png"));
        assert!(notify[2].matches("ObjectRemoved:Delete", "docs/a"));
        assert!(notify[2].matches("ObjectCreated:Put", "docs/"));
        assert!(!notify[2].matches("ObjectCreated:Put", "doc"));
        assert!(notify[3].matches("s3:ObjectRemoved:Delete", "images/a.png"));
        let to = |event: &str, key: &str| notify.iter().filter(|n| n.matches(event, key)).count();
        assert_eq!(to("ObjectCreated:Put", "images/a.png"), 1, "no two overlap");
    }

    #[test]
    fn events_are_named_as_s3_names_them() {
        for event in ObjectEvent::ALL {
            assert_eq!(ObjectEvent::parse(event.as_str()), Some(event));
            assert_eq!(ObjectEvent::parse(&format!("s3:{event}")), Some(event));
        }
        assert_eq!(ObjectEvent::parse("ObjectCreated:Post"), None);
        assert_eq!(ObjectEvent::parse("S3:ObjectCreated:Put"), None);
        assert_eq!(ObjectEvent::Created.common(ObjectEvent::Copy), Some(ObjectEvent::Copy));
        assert_eq!(
            ObjectEvent::Delete.common(ObjectEvent::Removed),
            Some(ObjectEvent::Delete)
        );
        assert_eq!(ObjectEvent::Put.common(ObjectEvent::Copy), None);
        assert_eq!(ObjectEvent::Created.common(ObjectEvent::Removed), None);
    }

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for good in [
            "abc",
            "uploads",
            "logs.2026",
            "1-2",
            "a.b-c",
            &"a".repeat(63),
            "192.168.5",
        ] {
            assert_eq!(check_bucket_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("ab", "is 2 characters long, fewer than 3"),
            (&"a".repeat(64), "is 64 characters long, more than 63"),
            ("Uploads", "has the uppercase letter `U`"),
            ("my_uploads", "has `_`, which bucket names may not hold"),
            ("-uploads", "begins with `-`"),
            ("uploads.", "ends with `.`"),
            ("logs..2026", "has two dots in a row"),
            ("192.168.5.4", "is shaped like an IP address"),
            ("xn--uploads", "begins with `xn--`, which S3 reserves"),
            ("sthree-uploads", "begins with `sthree-`, which S3 reserves"),
            ("amzn-s3-demo-uploads", "begins with `amzn-s3-demo-`, which S3 reserves"),
            ("uploads-s3alias", "ends with `-s3alias`, which S3 reserves"),
            ("uploads--ol-s3", "ends with `--ol-s3`, which S3 reserves"),
            ("uploads.mrap", "ends with `.mrap`, which S3 reserves"),
            ("uploads--x-s3", "ends with `--x-s3`, which S3 reserves"),
            ("uploads--table-s3", "ends with `--table-s3`, which S3 reserves"),
        ] {
            assert_eq!(check_bucket_name(bad), Err(why.to_string()), "{bad}");
        }
    }
}
