//! One invocation: a fresh store and instance, the request in, the response
//! out, and a [`Completion`] that says how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::engine::root_message;
use crate::host::Host;
use crate::host::http::Outbound;
use crate::logs::{OutputCapture, OutputLine, now_us};
use crate::{FunctionImage, Runtime};

/// Called with the completion of an invocation, on its own task.
pub type OnComplete = Box<dyn FnOnce(&Completion) + Send>;

/// What the caller supplies for one invocation.
pub struct InvocationContext {
    pub request_id: String,
    /// Where the function's outbound HTTP requests go: the policy of
    /// outgoing wasi:http. Each interface a function may be granted has
    /// its policy here, one field each.
    pub outbound: Arc<dyn Outbound>,
    /// The key-value stores the function may open, and what their
    /// operations do: the policy of wasi:keyvalue and Spin's key-value.
    pub stores: Arc<dyn crate::host::keyvalue::Stores>,
    /// Called from another function: runs without taking a top-level slot.
    pub nested: bool,
    /// Runs on the invocation's own task as soon as the instance is gone,
    /// before the completion is sent to [`Invocation::completion`].
    pub on_complete: Option<OnComplete>,
}

/// What the function answered.
pub enum Answer {
    /// Response headers; the body streams as the function writes it.
    Response(hyper::Response<HyperOutgoingBody>),
    /// The function answered with a wasi:http error code instead.
    Refused(String),
    /// The function ended without answering; see [`Completion::exit`].
    Nothing,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Exit {
    /// `handle` returned.
    Returned,
    /// The guest trapped or panicked.
    Trap(String),
    /// The deadline passed.
    Timeout(Duration),
    /// The guest asked for more memory than its limit.
    MemoryLimit { limit: u64 },
    /// The instance could not be created, or the request could not be passed in.
    Failed(String),
}

/// Everything known once an invocation is over.
#[derive(Debug, Clone)]
pub struct Completion {
    pub exit: Exit,
    pub cold: bool,
    /// Microseconds since the Unix epoch.
    pub start_us: i64,
    pub duration: Duration,
    /// Time spent creating the instance, within `duration`.
    pub instantiate: Duration,
    pub peak_memory: u64,
    /// The status the function answered with, if it answered.
    pub status: Option<u16>,
    pub output: Vec<OutputLine>,
}

/// A running invocation.
pub struct Invocation {
    pub answer: Answer,
    /// Resolves when the instance is gone; the response body may still be
    /// streaming until then.
    pub completion: oneshot::Receiver<Completion>,
}

impl Runtime {
    /// Runs one request on a fresh instance of `image`.
    pub async fn invoke<B>(
        &self,
        image: Arc<FunctionImage>,
        request: hyper::Request<B>,
        mut ctx: InvocationContext,
    ) -> Invocation
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let mut on_complete = ctx.on_complete.take();
        let finish = move |completion: Completion, on_complete: Option<OnComplete>| {
            if let Some(f) = on_complete {
                f(&completion);
            }
            let _ = done_tx.send(completion);
        };
        let permit = if ctx.nested {
            None
        } else {
            match self.slots.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => {
                    finish(
                        failed(&image, "the runtime is shutting down".into()),
                        on_complete.take(),
                    );
                    return Invocation {
                        answer: Answer::Nothing,
                        completion: done_rx,
                    };
                }
            }
        };

        let output = OutputCapture::default();
        let host = Host::new(&image, &output, &ctx);
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.meter);
        let timeout = image.limits.timeout;
        let deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let (answer_tx, answer_rx) = oneshot::channel();
        let status = Arc::new(AtomicU16::new(0));
        let answered = status.clone();
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|req| {
                Ok((
                    req,
                    store
                        .data_mut()
                        .http()
                        .new_response_outparam_from_callback(move |answer| {
                            if let Ok(response) = &answer {
                                answered.store(response.status().as_u16(), Ordering::Relaxed);
                            }
                            let _ = answer_tx.send(answer);
                        })?,
                ))
            });
        let (req, out) = match prepared {
            Ok(pair) => pair,
            Err(e) => {
                let why = format!("the request cannot be passed to the function: {}", root_message(&e));
                finish(failed(&image, why), on_complete.take());
                return Invocation {
                    answer: Answer::Nothing,
                    completion: done_rx,
                };
            }
        };

        let cold = !image.warm.swap(true, Ordering::Relaxed);
        let start_us = now_us();
        let live = Live::new(self.live.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let mut instantiate = Duration::ZERO;
            let run = tokio::time::timeout(timeout, async {
                let proxy = image.pre.instantiate_async(&mut store).await?;
                instantiate = started.elapsed();
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            let duration = started.elapsed();
            let meter = &store.data().meter;
            let peak_memory = meter.peak();
            let mut lines = output.take_lines();
            let exit = match run {
                Ok(Ok(())) => Exit::Returned,
                Err(_elapsed) => Exit::Timeout(timeout),
                Ok(Err(_)) if meter.exceeded.is_some() => Exit::MemoryLimit {
                    limit: image.limits.memory,
                },
                Ok(Err(e)) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => Exit::Timeout(timeout),
                Ok(Err(e)) => Exit::Trap(with_panic_message(root_message(&e), &lines)),
            };
            if let Exit::Timeout(t) = &exit {
                lines.push(OutputLine {
                    stream: "stderr",
                    time_us: now_us(),
                    line: format!("[weft] stopped: the timeout of {t:?} passed"),
                });
            }
            drop(store);
            drop(live);
            let status = Some(status.load(Ordering::Relaxed)).filter(|s| *s != 0);
            let completion = Completion {
                exit,
                cold,
                start_us,
                duration,
                instantiate,
                peak_memory,
                status,
                output: lines,
            };
            finish(completion, on_complete);
        });

        let answer = match answer_rx.await {
            Ok(Ok(response)) => Answer::Response(response),
            Ok(Err(code)) => Answer::Refused(format!("{code:?}")),
            Err(_) => Answer::Nothing,
        };
        Invocation {
            answer,
            completion: done_rx,
        }
    }
}

/// Counts one instance alive until dropped, however its task ends.
struct Live(Arc<std::sync::atomic::AtomicUsize>);

impl Live {
    fn new(count: Arc<std::sync::atomic::AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::Relaxed);
        Live(count)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn failed(image: &FunctionImage, why: String) -> Completion {
    Completion {
        exit: Exit::Failed(why),
        cold: image.is_cold(),
        start_us: now_us(),
        duration: Duration::ZERO,
        instantiate: Duration::ZERO,
        peak_memory: 0,
        status: None,
        output: Vec::new(),
    }
}

/// A Rust guest's panic prints `... panicked at FILE:LINE:COL:` and then the
/// message on stderr before trapping; put that message in the error.
fn with_panic_message(trap: String, lines: &[OutputLine]) -> String {
    let panic = lines
        .iter()
        .position(|l| l.stream == "stderr" && l.line.contains("panicked at"))
        .and_then(|i| lines.get(i + 1))
        .map(|l| l.line.trim().to_string())
        .filter(|m| !m.is_empty());
    match panic {
        Some(message) => format!("the function panicked: {message} ({trap})"),
        None => trap,
    }
}
