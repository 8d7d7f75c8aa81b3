//! Durable executions cut off and resumed from their journal: a journalled
//! task is not run again, a Wait ends at its first deadline, and the
//! history reads as one run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use weft_workflows::durable::{Durable, Entry, Journal, history};
use weft_workflows::execution::{Identity, Outcome, run_with};
use weft_workflows::local::{Local, Mock};

/// A journal in memory.
#[derive(Default)]
struct Memory(Mutex<Vec<Entry>>);

#[async_trait::async_trait]
impl Journal for Memory {
    async fn append(&self, entries: Vec<Entry>) -> Result<(), String> {
        self.0.lock().unwrap().extend(entries);
        Ok(())
    }
}

impl Memory {
    fn entries(&self) -> Vec<Entry> {
        self.0.lock().unwrap().clone()
    }
}

/// A journal that refuses every write.
struct Broken;

#[async_trait::async_trait]
impl Journal for Broken {
    async fn append(&self, _: Vec<Entry>) -> Result<(), String> {
        Err("the disk is full".into())
    }
}

fn identity(started: Option<jiff::Timestamp>) -> Identity {
    Identity {
        id: "weft:execution:order:o-1".into(),
        name: "o-1".into(),
        machine: "order".into(),
        started,
    }
}

fn mocks(answers: &[(&str, Value)]) -> HashMap<String, Mock> {
    answers
        .iter()
        .map(|(name, answer)| (name.to_string(), Mock::from_json(answer).unwrap()))
        .collect()
}

fn epoch() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn machine(definition: Value) -> weft_workflows::definition::StateMachine {
    weft_workflows::validate::load(&definition).unwrap()
}

fn types(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn called(local: &Local) -> Vec<String> {
    local.calls().into_iter().map(|c| c.function).collect()
}

/// Reserve, wait a minute, charge.
fn reserve_wait_charge() -> Value {
    json!({
        "StartAt": "Reserve",
        "States": {
            "Reserve": { "Type": "Task", "Resource": "function:reserve", "ResultPath": "$.reserved", "Next": "Pause" },
            "Pause": { "Type": "Wait", "Seconds": 60, "Next": "Charge" },
            "Charge": { "Type": "Task", "Resource": "function:charge", "ResultPath": "$.charged", "End": true }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn an_execution_cut_off_in_a_wait_resumes_at_its_deadline_without_running_a_task_again() {
    let machine = machine(reserve_wait_charge());
    let answers = [("reserve", json!({"held": 2})), ("charge", json!({"paid": true}))];
    let journal = Arc::new(Memory::default());

    // The whole run, uninterrupted, for its history.
    let whole = Arc::new(Memory::default());
    let local = Local::new(mocks(&answers)).starting_at(epoch());
    let durable = Durable::new(&local, whole.clone(), Vec::new());
    let finished = run_with(&machine, identity(None), json!({"order": 7}), &durable, true).await;
    durable.finish().await.unwrap();
    assert!(finished.history.is_empty(), "the durable effects keep the history");
    let Outcome::Succeeded(expected) = finished.outcome else {
        panic!("{:?}", finished.outcome)
    };

    // Cut off 30 s into the Wait.
    let first = Local::new(mocks(&answers)).starting_at(epoch());
    {
        let durable = Durable::new(&first, journal.clone(), Vec::new());
        let run = run_with(&machine, identity(None), json!({"order": 7}), &durable, true);
        assert!(tokio::time::timeout(Duration::from_secs(30), run).await.is_err());
    }
    assert_eq!(called(&first), ["reserve"]);
    let past = journal.entries();
    assert!(
        past.iter()
            .any(|e| matches!(e, Entry::Timer { step, .. } if step == "Pause#1")),
        "the Wait's deadline is journalled before it waits: {past:?}"
    );

    // Resumed: the clock has moved on 30 s; the Wait has 30 s left.
    let started = tokio::time::Instant::now();
    let second = Local::new(mocks(&answers)).starting_at(epoch().checked_add(Duration::from_secs(30)).unwrap());
    let durable = Durable::new(&second, journal.clone(), past);
    let finished = run_with(&machine, identity(Some(epoch())), json!({"order": 7}), &durable, true).await;
    durable.finish().await.unwrap();
    assert_eq!(finished.outcome, Outcome::Succeeded(expected));
    assert_eq!(
        called(&second),
        ["charge"],
        "Reserve's result was journalled: not run again"
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(30),
        "the Wait ends at its first deadline"
    );
    let resumed = history(&journal.entries());
    assert_eq!(types(&resumed), types(&history(&whole.entries())));
    for (i, event) in resumed.iter().enumerate() {
        assert_eq!(event["id"], json!(i + 1));
        assert_eq!(event["previousEventId"], json!(i));
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_cut_off_while_it_runs_runs_again_and_is_in_the_history_once() {
    let machine = machine(reserve_wait_charge());
    let journal = Arc::new(Memory::default());
    let slow = [("reserve", json!({"Return": {"held": 2}, "Delay": 100}))];
    let first = Local::new(mocks(&slow)).starting_at(epoch());
    {
        let durable = Durable::new(&first, journal.clone(), Vec::new());
        let run = run_with(&machine, identity(None), json!({}), &durable, true);
        assert!(tokio::time::timeout(Duration::from_secs(10), run).await.is_err());
    }
    let past = journal.entries();
    let scheduled = history(&past);
    assert_eq!(
        types(&scheduled),
        ["ExecutionStarted", "TaskStateEntered", "TaskScheduled"],
        "the events before a task are journalled before it starts"
    );

    let answers = [("reserve", json!({"held": 2})), ("charge", json!({"paid": true}))];
    let second = Local::new(mocks(&answers)).starting_at(epoch());
    let durable = Durable::new(&second, journal.clone(), past);
    let finished = run_with(&machine, identity(Some(epoch())), json!({}), &durable, true).await;
    durable.finish().await.unwrap();
    assert!(
        matches!(finished.outcome, Outcome::Succeeded(_)),
        "{:?}",
        finished.outcome
    );
    assert_eq!(called(&second), ["reserve", "charge"], "an unfinished task runs again");
    let events = types(&history(&journal.entries()));
    assert_eq!(events.iter().filter(|t| *t == "TaskScheduled").count(), 2, "{events:?}");
    assert_eq!(
        events,
        [
            "ExecutionStarted",
            "TaskStateEntered",
            "TaskScheduled",
            "TaskSucceeded",
            "TaskStateExited",
            "WaitStateEntered",
            "WaitStateExited",
            "TaskStateEntered",
            "TaskScheduled",
            "TaskSucceeded",
            "TaskStateExited",
            "ExecutionSucceeded",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn parallel_branches_resume_with_each_finished_task_kept() {
    let machine = machine(json!({
        "StartAt": "Both",
        "States": {
            "Both": {
                "Type": "Parallel",
                "End": true,
                "Branches": [
                    { "StartAt": "Fast", "States": { "Fast": { "Type": "Task", "Resource": "function:fast", "End": true } } },
                    { "StartAt": "Slow", "States": { "Slow": { "Type": "Task", "Resource": "function:slow", "End": true } } }
                ]
            }
        }
    }));
    let journal = Arc::new(Memory::default());
    let answers = [
        ("fast", json!({"Return": "f", "Delay": 1})),
        ("slow", json!({"Return": "s", "Delay": 100})),
    ];
    let first = Local::new(mocks(&answers)).starting_at(epoch());
    {
        let durable = Durable::new(&first, journal.clone(), Vec::new());
        let run = run_with(&machine, identity(None), json!({}), &durable, true);
        assert!(tokio::time::timeout(Duration::from_secs(10), run).await.is_err());
    }
    let second = Local::new(mocks(&answers)).starting_at(epoch());
    let durable = Durable::new(&second, journal.clone(), journal.entries());
    let finished = run_with(&machine, identity(Some(epoch())), json!({}), &durable, true).await;
    durable.finish().await.unwrap();
    assert_eq!(finished.outcome, Outcome::Succeeded(json!(["f", "s"])));
    assert_eq!(called(&second), ["slow"], "the fast branch's task was journalled");
    let events = types(&history(&journal.entries()));
    assert_eq!(events.iter().filter(|t| *t == "TaskSucceeded").count(), 2, "{events:?}");
    assert_eq!(
        events.iter().filter(|t| *t == "ParallelStateEntered").count(),
        1,
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_journal_that_cannot_be_written_stops_the_execution_before_its_task() {
    let machine = machine(reserve_wait_charge());
    let local = Local::new(mocks(&[("reserve", json!(1))])).starting_at(epoch());
    let durable = Durable::new(&local, Arc::new(Broken), Vec::new());
    let run = run_with(&machine, identity(None), json!({}), &durable, true);
    let why = tokio::select! {
        finished = run => panic!("the execution went on without its journal: {:?}", finished.outcome),
        why = durable.broken() => why,
    };
    assert_eq!(why, "the disk is full");
    assert!(
        local.calls().is_empty(),
        "no task runs before its events are journalled"
    );
}

#[test]
fn journal_entries_read_back_as_written() {
    let entries = vec![
        Entry::Event {
            event: json!({"type": "ExecutionStarted", "timestamp": "2026-01-01T00:00:00Z", "executionStartedEventDetails": {"input": "{}"}}),
        },
        Entry::Task {
            step: "A#1".into(),
            output: Some(json!({"x": 1})),
            error: None,
            cause: None,
        },
        Entry::Task {
            step: "A#1.1".into(),
            output: None,
            error: Some("Boom".into()),
            cause: Some("it broke".into()),
        },
        Entry::Timer {
            step: "W#1".into(),
            at_ms: 1_767_225_600_000,
        },
        Entry::Random {
            step: "A#1".into(),
            value: 0.25,
        },
    ];
    let text = serde_json::to_string(&entries).unwrap();
    let back: Vec<Entry> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, entries);
}

#[tokio::test(start_paused = true)]
async fn the_last_write_failing_ends_the_run_with_the_error_rather_than_hanging() {
    let machine = machine(json!({ "StartAt": "P", "States": { "P": { "Type": "Pass", "End": true } } }));
    let local = Local::new(HashMap::new()).starting_at(epoch());
    let durable = Durable::new(&local, Arc::new(Broken), Vec::new());
    let finished = run_with(&machine, identity(None), json!({}), &durable, true).await;
    assert!(matches!(finished.outcome, Outcome::Succeeded(_)));
    let last = tokio::time::timeout(Duration::from_secs(5), durable.finish()).await;
    assert_eq!(last.expect("finish returns"), Err("the disk is full".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_task_that_timed_out_is_not_called_again_when_the_execution_resumes() {
    let machine = machine(json!({
        "StartAt": "Slow",
        "States": {
            "Slow": { "Type": "Task", "Resource": "function:slow", "TimeoutSeconds": 5,
                "Catch": [ { "ErrorEquals": ["States.Timeout"], "ResultPath": "$.late", "Next": "Pause" } ], "End": true },
            "Pause": { "Type": "Wait", "Seconds": 60, "End": true }
        }
    }));
    let answers = [("slow", json!({"Return": 1, "Delay": 100}))];
    let journal = Arc::new(Memory::default());
    let first = Local::new(mocks(&answers)).starting_at(epoch());
    {
        let durable = Durable::new(&first, journal.clone(), Vec::new());
        let run = run_with(&machine, identity(None), json!({}), &durable, true);
        assert!(tokio::time::timeout(Duration::from_secs(20), run).await.is_err());
    }
    assert_eq!(called(&first), ["slow"]);
    let second = Local::new(mocks(&answers)).starting_at(epoch().checked_add(Duration::from_secs(20)).unwrap());
    let durable = Durable::new(&second, journal.clone(), journal.entries());
    let finished = run_with(&machine, identity(Some(epoch())), json!({}), &durable, true).await;
    durable.finish().await.unwrap();
    assert!(
        matches!(&finished.outcome, Outcome::Succeeded(out) if out["late"]["Error"] == "States.Timeout"),
        "{:?}",
        finished.outcome
    );
    assert!(
        called(&second).is_empty(),
        "the timed-out task ran again: {:?}",
        called(&second)
    );
    let events = types(&history(&journal.entries()));
    assert_eq!(events.iter().filter(|t| *t == "TaskTimedOut").count(), 1, "{events:?}");
}
