//! `[schedule.NAME]`: fires a function, queue, topic, bus or workflow on a schedule
//! expression (see [`Expression`]) in a time zone.

use jiff::tz::TimeZone;
use toml_edit::Table;

use crate::names::TargetChoice;
use crate::parse::{Checker, Kind};
use crate::section::Section;
use crate::{Expression, Manifest, Target, TargetKind};

/// `[schedule.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub expression: Expression,
    /// The expression as written, for display.
    pub expression_text: String,
    /// IANA time zone name of cron expressions.
    pub timezone: String,
    /// A function, queue, topic, bus or workflow.
    pub target: Target,
    /// The fixed body each fire sends.
    pub payload: String,
    /// What to do, on start, with fires missed while weft was down.
    pub missed: Missed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Forget them.
    Skip,
    /// Fire once for all of them.
    FireOnce,
}

const SCHEDULE: Kind = Kind {
    name: "schedule",
    keys: &[
        "expression",
        "timezone",
        "function",
        "queue",
        "topic",
        "bus",
        "workflow",
        "payload",
        "missed",
    ],
    example: "nightly",
    help: "write `[schedule.NAME]` with `expression` and a target",
};

pub(crate) struct Schedules;

impl Section for Schedules {
    fn keys(&self) -> &[&str] {
        &["schedule"]
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        c.each_named(root, &SCHEDULE, |c, named| {
            let (skey, s, place, ok) = (named.key, named.table, named.place, named.name_ok);
            let expression = match c.required(
                s,
                "expression",
                &place,
                "\"rate(5 minutes)\"",
                skey.span(),
                "add `expression = \"rate(5 minutes)\"` or a `cron(...)`",
            ) {
                Some((text, span)) => match Expression::parse(text) {
                    Ok(e) => Some((e, text.to_string())),
                    Err(why) => {
                        c.error(
                            span,
                            format!("`expression` in {place}: {why}"),
                            "write `rate(5 minutes)` or `cron(0 3 * * ? *)`",
                        );
                        None
                    }
                },
                None => None,
            };
            let timezone = match c.string(s, "timezone", &place, "\"Europe/Paris\"") {
                Some((tz, span)) => match TimeZone::get(tz) {
                    Ok(_) => Some(tz.to_string()),
                    Err(_) => {
                        c.error(
                            span,
                            format!("`timezone` in {place}: `{tz}` is not a known time zone"),
                            "use an IANA name such as `UTC`, `Europe/Paris` or `America/New_York`",
                        );
                        None
                    }
                },
                None if s.contains_key("timezone") => None,
                None => Some("UTC".to_string()),
            };
            let target = c.target(
                s,
                &TargetChoice {
                    kinds: &[
                        (TargetKind::Function, "\"report\""),
                        (TargetKind::Queue, "\"jobs\""),
                        (TargetKind::Topic, "\"orders\""),
                        (TargetKind::Bus, "\"default\""),
                        (TargetKind::Workflow, "\"nightly-report\""),
                    ],
                    place: &place,
                    span: skey.span(),
                    missing: "has no target",
                    one: "a schedule fires one target: keep one of them",
                    verb: "fires",
                    standard_queue: None,
                },
            );
            let payload = match c.string(s, "payload", &place, "\"{\\\"kind\\\":\\\"nightly\\\"}\"") {
                Some((p, _)) => Some(p.to_string()),
                None if s.contains_key("payload") => None,
                None => Some(String::new()),
            };
            if let (Some(Target::Bus(b)), Some(p)) = (&target, &payload)
                && !p.is_empty()
                && !serde_json::from_str::<serde_json::Value>(p).is_ok_and(|v| v.is_object())
            {
                c.error(
                    skey.span(),
                    format!("{place} puts events on bus `{b}`, so its `payload` must be a JSON object (the events' `detail`)"),
                    "write e.g. payload = '{\"kind\": \"nightly\"}', or leave it out for an empty detail",
                );
            }
            let missed = match c.string(s, "missed", &place, "\"skip\"") {
                Some(("skip", _)) => Some(Missed::Skip),
                Some(("fire_once", _)) => Some(Missed::FireOnce),
                Some((other, span)) => {
                    c.error(
                        span,
                        format!("`missed` in {place} is `{other}`"),
                        "use `skip` (the default) or `fire_once`",
                    );
                    None
                }
                None if s.contains_key("missed") => None,
                None => Some(Missed::Skip),
            };
            if let (
                true,
                Some((expression, expression_text)),
                Some(timezone),
                Some(target),
                Some(payload),
                Some(missed),
            ) = (ok, expression, timezone, target, payload, missed)
            {
                manifest.schedules.push(Schedule {
                    name: named.name.to_string(),
                    expression,
                    expression_text,
                    timezone,
                    target,
                    payload,
                    missed,
                });
            }
        });
    }
}
