//! Task tokens: a `.waitForTaskToken` Task hands its token (`$$.Task.Token`)
//! to a function, a queue, a topic or a bus, then waits until someone
//! answers with it: `SendTaskSuccess` (its output is the task's result),
//! `SendTaskFailure` (its error and cause fail the task), or
//! `SendTaskHeartbeat` (the task's `HeartbeatSeconds` start again).
//!
//! A token names its execution and step and carries an HMAC-SHA256 of both
//! under a key kept in the storage (`workflow-secrets`), so it cannot be
//! made up, and it is the same each time the step runs (a resumed
//! execution waits for the token it gave out). The answer is kept in
//! `workflow-callbacks` under `EXECUTION/STEP`: `waiting` once the token
//! is handed over (so a resumed execution does not hand it over again),
//! then `succeeded` or `failed`. A waiter on this node is woken at once;
//! one on another node reads the key again within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use weft_store::durable::{Storage, StorageError};
use weft_workflows::execution::{Failure, MAX_PAYLOAD};

pub(super) const CALLBACKS: &str = "workflow-callbacks";
const SECRETS: &str = "workflow-secrets";
const TOKEN_KEY: &str = "task-token-key";
/// The longest token accepted (one weft makes is far shorter).
const MAX_TOKEN: usize = 2048;
/// How long a waiter on another node may take to see an answer.
const RECHECK: Duration = Duration::from_secs(1);

/// Where a task token stands, as `workflow-callbacks` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub(super) enum Callback {
    Waiting {
        since_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        beat_ms: Option<i64>,
    },
    Succeeded {
        output: Value,
    },
    Failed {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        cause: Option<String>,
    },
    /// The task ran out of time before an answer came; one that comes
    /// now is refused.
    TimedOut {
        error: String,
        #[serde(default)]
        cause: Option<String>,
    },
}

/// What an answer to a token says.
pub enum Answer {
    Success(Value),
    Failure {
        error: Option<String>,
        cause: Option<String>,
    },
    Heartbeat,
}

/// Why an answer to a token was refused.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    /// Step Functions' error code: `InvalidToken`, `TaskTimedOut`, ...
    pub code: &'static str,
    pub message: String,
}

impl Refused {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<StorageError> for Refused {
    fn from(e: StorageError) -> Refused {
        Refused::new(503, "ServiceUnavailable", e.to_string())
    }
}

/// The tokens' key and the waiters on this node.
#[derive(Default)]
pub struct Tokens {
    key: tokio::sync::OnceCell<Arc<Vec<u8>>>,
    waiters: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

pub(super) fn callback_key(execution: &str, step: &str) -> String {
    format!("{execution}/{step}")
}

fn mac(key: &[u8], execution: &str, step: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(execution.as_bytes());
    mac.update(b"\n");
    mac.update(step.as_bytes());
    mac
}

/// The token of `step` of `execution`.
pub(super) fn token(key: &[u8], execution: &str, step: &str) -> String {
    let tag = mac(key, execution, step).finalize().into_bytes();
    format!(
        "{}.{}.{}",
        B64.encode(execution),
        B64.encode(step),
        B64.encode(&tag[..16])
    )
}

/// The execution and step a token names, if weft made it.
fn verify(key: &[u8], token: &str) -> Result<(String, String), Refused> {
    let invalid = || Refused::new(400, "InvalidToken", "the task token is not one this app gave out");
    if token.len() > MAX_TOKEN {
        return Err(invalid());
    }
    let mut parts = token.split('.');
    let (Some(execution), Some(step), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let text = |part: &str| {
        B64.decode(part)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(invalid)
    };
    let (execution, step) = (text(execution)?, text(step)?);
    let tag = B64.decode(tag).map_err(|_| invalid())?;
    if tag.len() != 16 {
        return Err(invalid());
    }
    mac(key, &execution, &step)
        .verify_truncated_left(&tag)
        .map_err(|_| invalid())?;
    Ok((execution, step))
}

async fn read(storage: &dyn Storage, key: &str) -> Result<Option<(Callback, u64)>, StorageError> {
    let Some(entry) = storage.get(CALLBACKS, key).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&entry.value).ok().map(|c| (c, entry.revision)))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Tokens {
    /// The key tokens are signed with: made once, kept in the storage.
    pub async fn key(&self, storage: &Arc<dyn Storage>) -> Result<Arc<Vec<u8>>, StorageError> {
        self.key
            .get_or_try_init(|| async {
                let fresh: [u8; 32] = rand::random();
                match storage.create(SECRETS, TOKEN_KEY, fresh.to_vec()).await {
                    Ok(_) => Ok(Arc::new(fresh.to_vec())),
                    Err(StorageError::Conflict { .. }) => match storage.get(SECRETS, TOKEN_KEY).await? {
                        Some(entry) => Ok(Arc::new(entry.value)),
                        None => Err(StorageError::Other("the task-token key vanished".into())),
                    },
                    Err(e) => Err(e),
                }
            })
            .await
            .cloned()
    }

    fn waiter(&self, key: &str) -> Arc<tokio::sync::Notify> {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn done_waiting(&self, key: &str) {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Whether the token of `key` was handed over already; if not, marks
    /// it handed over once `hand_over` succeeds. An answer that came first
    /// is the task's result.
    pub(super) async fn hand_over<F>(
        &self,
        storage: &Arc<dyn Storage>,
        key: &str,
        hand_over: F,
    ) -> Result<Option<Result<Value, Failure>>, Failure>
    where
        F: std::future::Future<Output = Result<Value, Failure>>,
    {
        // Handed over before (a resumed execution): answered, or waiting.
        if let Some((callback, _)) = read(&**storage, key).await.map_err(storage_failure)? {
            return Ok(finished(callback));
        }
        hand_over.await?;
        let waiting = Callback::Waiting {
            since_ms: now_ms(),
            beat_ms: None,
        };
        let value = serde_json::to_vec(&waiting).unwrap_or_default();
        match storage.create(CALLBACKS, key, value).await {
            // An answer may have come while it was handed over.
            Ok(_) | Err(StorageError::Conflict { .. }) => Ok(None),
            Err(e) => Err(storage_failure(e)),
        }
    }

    /// Waits for the answer to the token of `key`, or for its heartbeat to
    /// run out.
    pub(super) async fn wait(
        &self,
        storage: &Arc<dyn Storage>,
        key: &str,
        heartbeat: Option<Duration>,
    ) -> Result<Value, Failure> {
        let notify = self.waiter(key);
        let outcome = loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut next = RECHECK;
            match read(&**storage, key).await {
                Ok(Some((callback, _))) => {
                    if let Some(done) = finished(callback.clone()) {
                        break done;
                    }
                    if let (Some(limit), Callback::Waiting { since_ms, beat_ms }) = (heartbeat, callback) {
                        let last = beat_ms.unwrap_or(since_ms);
                        let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
                        let left = last.saturating_add(limit_ms).saturating_sub(now_ms());
                        if left <= 0 {
                            let failure = Failure::new(
                                "States.HeartbeatTimeout",
                                format!("no heartbeat for {}s, the task's HeartbeatSeconds", limit.as_secs()),
                            );
                            if let Err(e) = self.time_out(storage, key, &failure).await {
                                tracing::warn!(
                                    "task token {key} ran out of heartbeats, but its answer could not be closed: {e}"
                                );
                            }
                            break Err(failure);
                        }
                        next = next.min(Duration::from_millis(left as u64));
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("waiting for task token {key}: {e}"),
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(next) => {}
            }
        };
        self.done_waiting(key);
        outcome
    }

    /// Closes the token of `key`, whose task ran out of time, to answers:
    /// unless an answer came first, which stays (the task's timeout won).
    pub(super) async fn time_out(
        &self,
        storage: &Arc<dyn Storage>,
        key: &str,
        failure: &Failure,
    ) -> Result<(), StorageError> {
        let closed = Callback::TimedOut {
            error: failure.error.clone(),
            cause: failure.cause.clone(),
        };
        let value = serde_json::to_vec(&closed).unwrap_or_default();
        for _ in 0..10 {
            let written = match read(&**storage, key).await? {
                Some((Callback::Waiting { .. }, revision)) => {
                    storage.update(CALLBACKS, key, value.clone(), revision).await
                }
                // Answered, closed already, or never handed over (a task
                // that waits for no token).
                _ => return Ok(()),
            };
            match written {
                Ok(_) => return Ok(()),
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Forgets the token answers of `execution` that are not successes,
    /// so a redriven task hands its token over again and waits anew.
    pub(super) async fn forget_unanswered(
        &self,
        storage: &Arc<dyn Storage>,
        execution: &str,
    ) -> Result<(), StorageError> {
        for key in storage.keys(CALLBACKS, &format!("{execution}/")).await? {
            if let Some((callback, _)) = read(&**storage, &key).await?
                && !matches!(callback, Callback::Succeeded { .. })
            {
                storage.delete(CALLBACKS, &key).await?;
            }
        }
        Ok(())
    }

    /// Answers a token: success, failure or heartbeat.
    pub async fn answer(&self, node: &crate::node::Node, token: &str, answer: Answer) -> Result<String, Refused> {
        let key = self.key(&node.storage).await?;
        let (execution, step) = verify(&key, token)?;
        match super::executions::record(node, &execution).await? {
            Some((record, _)) if record.status == super::executions::Status::Running => {}
            Some(_) => {
                return Err(Refused::new(
                    400,
                    "TaskTimedOut",
                    format!("execution {execution} has ended"),
                ));
            }
            None => return Err(Refused::new(400, "InvalidToken", "the task token names no execution")),
        }
        if let Answer::Success(output) = &answer {
            let size = serde_json::to_vec(output).map_or(usize::MAX, |b| b.len());
            if size > MAX_PAYLOAD {
                return Err(Refused::new(
                    400,
                    "InvalidOutput",
                    format!("the output is {size} bytes, more than the {MAX_PAYLOAD} a task result may be"),
                ));
            }
        }
        let ck = callback_key(&execution, &step);
        for _ in 0..10 {
            let current = read(&*node.storage, &ck).await?;
            let next = match (&current, &answer) {
                (Some((Callback::Succeeded { .. } | Callback::Failed { .. }, _)), _) => {
                    return Err(Refused::new(400, "TaskTimedOut", "the task has been answered already"));
                }
                (Some((Callback::TimedOut { error, .. }, _)), _) => {
                    return Err(Refused::new(
                        400,
                        "TaskTimedOut",
                        format!("the task timed out ({error}) before this answer came"),
                    ));
                }
                (Some((Callback::Waiting { since_ms, .. }, _)), Answer::Heartbeat) => Callback::Waiting {
                    since_ms: *since_ms,
                    beat_ms: Some(now_ms()),
                },
                (None, Answer::Heartbeat) => Callback::Waiting {
                    since_ms: now_ms(),
                    beat_ms: Some(now_ms()),
                },
                (_, Answer::Success(output)) => Callback::Succeeded { output: output.clone() },
                (_, Answer::Failure { error, cause }) => Callback::Failed {
                    error: error.clone(),
                    cause: cause.clone(),
                },
            };
            let value = serde_json::to_vec(&next).unwrap_or_default();
            let written = match current {
                Some((_, revision)) => node.storage.update(CALLBACKS, &ck, value, revision).await,
                None => node.storage.create(CALLBACKS, &ck, value).await,
            };
            match written {
                Ok(_) => {
                    let waiter = self.waiters.lock().unwrap_or_else(|p| p.into_inner()).get(&ck).cloned();
                    if let Some(waiter) = waiter {
                        waiter.notify_waiters();
                    }
                    return Ok(execution);
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Refused::new(
            503,
            "ServiceUnavailable",
            "the task's answer kept changing; try again",
        ))
    }
}

/// The task's result, once the token is answered.
fn finished(callback: Callback) -> Option<Result<Value, Failure>> {
    match callback {
        Callback::Waiting { .. } => None,
        Callback::Succeeded { output } => Some(Ok(output)),
        Callback::Failed { error, cause } => Some(Err(Failure {
            error: error.unwrap_or_else(|| "States.TaskFailed".into()),
            cause,
        })),
        Callback::TimedOut { error, cause } => Some(Err(Failure { error, cause })),
    }
}

fn storage_failure(e: StorageError) -> Failure {
    Failure::new("States.TaskFailed", format!("the task's token could not be kept: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_step_and_cannot_be_made_up() {
        let key = b"0123456789abcdef0123456789abcdef";
        let token = token(key, "order:o-1", "Approve#1");
        assert_eq!(verify(key, &token).unwrap(), ("order:o-1".into(), "Approve#1".into()));
        assert_eq!(token, super::token(key, "order:o-1", "Approve#1"), "the same each time");
        // Another key, another step, a changed tag, or junk: refused.
        assert!(verify(b"another key", &token).is_err());
        let (head, _) = token.rsplit_once('.').unwrap();
        let other = super::token(key, "order:o-2", "Approve#1");
        let (_, other_tag) = other.rsplit_once('.').unwrap();
        assert!(verify(key, &format!("{head}.{other_tag}")).is_err());
        for junk in ["", "a.b", "a.b.c.d", "!!.??.**", &"x".repeat(5000)] {
            let refused = verify(key, junk).unwrap_err();
            assert_eq!((refused.status, refused.code), (400, "InvalidToken"), "{junk:.20}");
        }
    }
}
