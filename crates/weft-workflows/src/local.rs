//! Effects for running a definition without deploying it, as Step
//! Functions Local and TestState do: tasks answered by mocks, waits and
//! retries timed by tokio's clock (real in `weft workflows run`, paused and
//! advanced in tests, so a test of an hour of backoff takes no time).
//!
//! A mock is JSON: `{"Return": VALUE}`, `{"Throw": {"Error": ..., "Cause":
//! ...}}`, either with `"Delay": SECONDS` beside it, `{"Sequence": [MOCK,
//! ...]}` for successive calls (the last repeats), or any other value,
//! which is returned as it is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::execution::{Effects, Failure, Step};
use crate::resource;

/// One answer of a mocked function.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub outcome: Result<Value, Failure>,
    /// How long the function takes.
    pub delay: Duration,
}

/// A mocked function's answers, in turn; the last repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Mock(Vec<Answer>);

impl Mock {
    /// Reads a mock from its JSON.
    pub fn from_json(value: &Value) -> Result<Mock, String> {
        if let Some(sequence) = value.get("Sequence") {
            let Some(items) = sequence.as_array().filter(|a| !a.is_empty()) else {
                return Err("Sequence must be a non-empty array of mocks".into());
            };
            let answers = items.iter().map(answer).collect::<Result<Vec<_>, _>>()?;
            return Ok(Mock(answers));
        }
        Ok(Mock(vec![answer(value)?]))
    }
}

fn answer(value: &Value) -> Result<Answer, String> {
    let Some(object) = value.as_object() else {
        return Ok(Answer {
            outcome: Ok(value.clone()),
            delay: Duration::ZERO,
        });
    };
    let delay = match object.get("Delay") {
        None => Duration::ZERO,
        Some(d) => d
            .as_f64()
            .filter(|s| (0.0..=1e7).contains(s))
            .map(Duration::from_secs_f64)
            .ok_or("Delay must be a number of seconds")?,
    };
    let outcome = match (object.get("Return"), object.get("Throw")) {
        (Some(_), Some(_)) => return Err("a mock has Return or Throw, not both".into()),
        (Some(v), None) => Ok(v.clone()),
        (None, Some(t)) => {
            let Some(error) = t.get("Error").and_then(Value::as_str) else {
                return Err("Throw needs an Error (a string)".into());
            };
            Err(Failure {
                error: error.to_string(),
                cause: t
                    .get("Cause")
                    .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string)),
            })
        }
        (None, None) if object.contains_key("Delay") => return Err("a Delay goes with a Return or a Throw".into()),
        (None, None) => Ok(value.clone()),
    };
    Ok(Answer { outcome, delay })
}

/// A call a mocked function received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub function: String,
    pub payload: Value,
}

/// Effects with mocked functions and tokio's clock.
pub struct Local {
    mocks: HashMap<String, Mock>,
    calls: Mutex<Vec<Call>>,
    counts: Mutex<HashMap<String, usize>>,
    sleeps: Mutex<Vec<Duration>>,
    /// The wall-clock time at `origin`, so `now` moves with tokio's clock.
    epoch: jiff::Timestamp,
    origin: tokio::time::Instant,
    seed: u64,
}

impl Local {
    pub fn new(mocks: HashMap<String, Mock>) -> Local {
        Local {
            mocks,
            calls: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
            sleeps: Mutex::new(Vec::new()),
            epoch: jiff::Timestamp::now(),
            origin: tokio::time::Instant::now(),
            seed: rand::random(),
        }
    }

    /// Starts the clock at `epoch` (tests pin it).
    pub fn starting_at(mut self, epoch: jiff::Timestamp) -> Local {
        self.epoch = epoch;
        self
    }

    /// Makes `JitterStrategy: FULL` repeatable.
    pub fn seeded(mut self, seed: u64) -> Local {
        self.seed = seed;
        self
    }

    /// The calls the mocks received, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The delays slept before retries, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl Effects for Local {
    async fn task(
        &self,
        _step: &Step,
        resource: &str,
        input: Value,
        _timeout: crate::execution::TaskLimits,
    ) -> Result<Value, Failure> {
        let call = resource::function_call(resource, &input).map_err(|e| Failure::new("States.TaskFailed", e))?;
        let Some(mock) = self.mocks.get(&call.name) else {
            return Err(Failure::new(
                "States.TaskFailed",
                format!(
                    "function {:?} has no mock; pass --mock {}=@answer.json",
                    call.name, call.name
                ),
            ));
        };
        let turn = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(call.name.clone()).or_default();
            *n += 1;
            *n - 1
        };
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(Call {
            function: call.name.clone(),
            payload: call.payload.clone(),
        });
        let answer = &mock.0[turn.min(mock.0.len() - 1)];
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        answer.outcome.clone().map(|v| call.result(v))
    }

    async fn wait_until(&self, _step: &Step, until: jiff::Timestamp) {
        let left = until.duration_since(self.now());
        if left.is_positive() {
            tokio::time::sleep(left.unsigned_abs()).await;
        }
    }

    async fn sleep(&self, _step: &Step, delay: Duration) {
        self.sleeps.lock().unwrap_or_else(|p| p.into_inner()).push(delay);
        tokio::time::sleep(delay).await;
    }

    fn now(&self) -> jiff::Timestamp {
        let elapsed = self.origin.elapsed();
        self.epoch.checked_add(elapsed).unwrap_or(self.epoch)
    }

    fn random(&self, step: &Step) -> f64 {
        // Repeatable per step for one seed.
        let mut hash = self.seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in step.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (hash >> 11) as f64 / (1u64 << 53) as f64
    }
}
