//! Schedule expressions, as EventBridge Scheduler writes them:
//! `rate(5 minutes)` and `cron(MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR)`.
//!
//! Cron fields take `*`, lists (`1,15`), ranges (`1-5`), steps (`0/15`,
//! `*/10`), month names (`JAN`) and day names (`MON`); day-of-week counts
//! 1 = Sunday as EventBridge does, and one of the two day fields must be
//! `?`. Cron schedules run in their `timezone`. Rates are aligned to the
//! Unix epoch, so a restart keeps the same fire times; besides minutes,
//! hours and days, weft accepts seconds.

use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    Rate(Duration),
    Cron(Box<Cron>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    minutes: Vec<u8>,
    hours: Vec<u8>,
    days: Option<Vec<u8>>,
    months: Vec<u8>,
    /// 1 = Sunday .. 7 = Saturday.
    weekdays: Option<Vec<u8>>,
    years: Option<Vec<u16>>,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Expression {
    pub fn parse(text: &str) -> Result<Expression, String> {
        let t = text.trim();
        if let Some(inner) = t.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            return parse_rate(inner).map(Expression::Rate);
        }
        if let Some(inner) = t.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
            return parse_cron(inner).map(|c| Expression::Cron(Box::new(c)));
        }
        Err(format!(
            "`{t}` is not `rate(N unit)` or `cron(MIN HOUR DAY MONTH WEEKDAY YEAR)`"
        ))
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Expression::Rate(every) => {
                let every = every.as_millis() as i64;
                let now = after.as_millisecond();
                let next = (now.div_euclid(every) + 1) * every;
                Timestamp::from_millisecond(next).ok()
            }
            Expression::Cron(cron) => cron.next_after(after, tz),
        }
    }
}

fn parse_rate(inner: &str) -> Result<Duration, String> {
    let (n, unit) = inner
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("`rate({inner})` needs a number and a unit, like `rate(5 minutes)`"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{n}` in `rate({inner})` is not a whole number"))?;
    if n == 0 {
        return Err("a rate of 0 never fires: use 1 or more".into());
    }
    let unit = match unit.trim() {
        "second" | "seconds" => 1,
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        other => {
            return Err(format!(
                "`{other}` is not a rate unit: use seconds, minutes, hours or days"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(unit)))
}

fn parse_cron(inner: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = inner.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "`cron({inner})` has {} fields; it needs 6: minutes hours day-of-month month day-of-week year, e.g. `cron(0 3 * * ? *)`",
            fields.len()
        ));
    }
    let minutes = field(fields[0], "minutes", 0, 59, &[])?.ok_or("minutes cannot be `?`")?;
    let hours = field(fields[1], "hours", 0, 23, &[])?.ok_or("hours cannot be `?`")?;
    let days = field(fields[2], "day-of-month", 1, 31, &[])?;
    let months = field(fields[3], "month", 1, 12, &MONTHS)?.ok_or("month cannot be `?`")?;
    let weekdays = field(fields[4], "day-of-week", 1, 7, &WEEKDAYS)?;
    let years = field(fields[5], "year", 1970, 2199, &[])?.map(|y| y.into_iter().map(|v| v as u16).collect());
    if (fields[2] == "?") == (fields[4] == "?") {
        return Err("exactly one of day-of-month and day-of-week must be `?`, e.g. `cron(0 3 * * ? *)` or `cron(0 3 ? * MON *)`".into());
    }
    let narrow = |v: Vec<u32>| v.into_iter().map(|x| x as u8).collect::<Vec<u8>>();
    Ok(Cron {
        minutes: narrow(minutes),
        hours: narrow(hours),
        days: days.map(narrow),
        months: narrow(months),
        weekdays: weekdays.map(narrow),
        years,
    })
}

/// The values a cron field allows, sorted; `None` for `?`.
fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<Option<Vec<u32>>, String> {
    if text == "?" {
        return Ok(None);
    }
    let value = |v: &str| -> Result<u32, String> {
        let upper = v.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(min + i as u32);
        }
        v.parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("`{v}` is not a valid {name} (from {min} to {max})"))
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{s}` is not a step in {name}"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, max),
                None => (value(r)?, value(r)?),
            },
        };
        if lo > hi {
            return Err(format!("`{range}` in {name} runs backwards"));
        }
        out.extend((lo..=hi).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        let month_ok = self.months.contains(&(date.month() as u8));
        let year_ok = self.years.as_ref().is_none_or(|y| y.contains(&(date.year() as u16)));
        let day_ok = match (&self.days, &self.weekdays) {
            (Some(days), _) => days.contains(&(date.day() as u8)),
            // jiff: Sunday is 0 from `to_sunday_zero_offset`; EventBridge: 1.
            (None, Some(weekdays)) => weekdays.contains(&(date.weekday().to_sunday_zero_offset() as u8 + 1)),
            (None, None) => true,
        };
        month_ok && year_ok && day_ok
    }

    fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).date();
        let mut date = start;
        // Five years of days is enough for any valid expression to fire.
        for _ in 0..(5 * 366) {
            if self.day_matches(date) {
                for &h in &self.hours {
                    for &m in &self.minutes {
                        let civil = DateTime::from_parts(date, Time::new(h as i8, m as i8, 0, 0).ok()?);
                        let at = civil.to_zoned(tz.clone()).ok()?.timestamp();
                        if at > after {
                            return Some(at);
                        }
                    }
                }
            }
            date = date.checked_add(1.day()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn rates_align_to_the_epoch() {
        let e = Expression::parse("rate(5 minutes)").unwrap();
        assert_eq!(
            e.next_after(at("2026-11-23T10:02:00Z"), &TimeZone::UTC),
            Some(at("2026-11-23T10:05:00Z"))
        );
        assert_eq!(
            e.next_after(at("2026-11-23T10:05:00Z"), &TimeZone::UTC),
            Some(at("2026-11-23T10:10:00Z"))
        );
        assert_eq!(
            Expression::parse("rate(1 second)").unwrap(),
            Expression::Rate(Duration::from_secs(1))
        );
    }

    #[test]
    fn cron_in_a_time_zone() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let e = Expression::parse("cron(0 3 * * ? *)").unwrap();
        // 03:00 in Paris is 02:00 UTC in winter.
        assert_eq!(
            e.next_after(at("2026-11-23T10:00:00Z"), &paris),
            Some(at("2026-11-24T02:00:00Z"))
        );
        let weekdays = Expression::parse("cron(30 9 ? * MON-FRI *)").unwrap();
        // 2026-11-28 is a Saturday: the next weekday is Monday the 30th.
        assert_eq!(
            weekdays.next_after(at("2026-11-27T12:00:00Z"), &TimeZone::UTC),
            Some(at("2026-11-30T09:30:00Z"))
        );
        let every15 = Expression::parse("cron(0/15 * * * ? *)").unwrap();
        assert_eq!(
            every15.next_after(at("2026-11-23T10:16:00Z"), &TimeZone::UTC),
            Some(at("2026-11-23T10:30:00Z"))
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        for (text, why) in [
            ("every 5 minutes", "is not `rate(N unit)`"),
            ("rate(5 fortnights)", "is not a rate unit"),
            ("rate(0 minutes)", "never fires"),
            ("cron(0 3 * * *)", "it needs 6"),
            ("cron(0 3 * * MON *)", "exactly one of day-of-month and day-of-week"),
            ("cron(61 3 * * ? *)", "`61` is not a valid minutes"),
            ("cron(0 3 ? FOO MON *)", "`FOO` is not a valid month"),
        ] {
            let err = Expression::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
