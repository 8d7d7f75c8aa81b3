//! What a workflow's execution does to the app: the live effects the
//! interpreter runs through. A Task calls a function (a fresh instance, as
//! any invocation), sends to a queue, publishes to a topic or puts events
//! on a bus; timers follow the wall clock.
//!
//! A function task is `POST /` with the state's input as its JSON body,
//! and `weft-workflow-execution` and `weft-workflow-state` headers. A 2xx
//! answer is the result (JSON, or else the text as a JSON string). Any
//! other answer fails the task with the error named by the answer's
//! `weft-error-type` header, else its JSON body's `errorType` (Lambda's
//! error shape), else `States.TaskFailed`; the cause is the body's
//! `errorMessage`, else the body. A trap is `States.TaskFailed`; running
//! past the function's timeout is `States.Timeout`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};
use weft_store::{Outcome, Trigger};
use weft_telemetry::{SpanContext, SpanKind};
use weft_workflows::execution::{Effects, Failure, MAX_PAYLOAD, Step, TaskLimits};
use weft_workflows::resource::{ChildWait, FunctionCall, Integration};

use crate::call::Call;
use crate::node::Node;

/// How often a `.sync` task reads its child's record.
const CHILD_POLL: Duration = Duration::from_millis(100);

/// A child execution's name: the parent's and the step's, within Step
/// Functions' 80 characters, with a digest of both so none collide.
fn child_name(execution: &str, step: &Step) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{execution}\n{step}").as_bytes());
    let tag = hex(&digest[..4]);
    let parent = execution.split_once(':').map_or(execution, |(_, n)| n);
    let readable = super::executions::name_of_event(&format!("{parent}-{step}"));
    let readable: String = readable.chars().take(80 - tag.len() - 1).collect();
    format!("{readable}-{tag}")
}

/// The longest single sleep of a timer: the clock is read again after it.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The live effects of one execution.
pub(super) struct Live {
    pub node: Arc<Node>,
    /// `WORKFLOW:NAME`.
    pub execution: String,
    pub workflow: String,
    /// Express executions cannot wait for task tokens.
    pub express: bool,
    pub workflows: Arc<super::Workflows>,
    /// The key task tokens are signed with.
    pub token_key: Arc<Vec<u8>>,
    /// How many times the execution was redriven.
    pub redrives: u32,
    /// The execution's span, which every step's span is a child of.
    pub trace: Option<SpanContext>,
}

impl Live {
    /// A span for one step, child of the execution's.
    fn step_span(&self, step: &Step, what: &str) -> Option<crate::telemetry::Timed> {
        let parent = self.trace.as_ref()?;
        // `Branch#1/0/Charge#2.1`: the state is `Charge`.
        let state = step.rsplit('/').next().unwrap_or(step);
        let state = state.split('#').next().unwrap_or(state);
        Some(
            self.node
                .start_span(state.to_string(), SpanKind::Internal, Some(parent))?
                .with("weft.workflow", self.workflow.as_str())
                .with("weft.workflow.execution", self.execution.as_str())
                .with("weft.workflow.step", step.as_str())
                .with("weft.workflow.resource", what),
        )
    }

    /// Runs a Task's resource: calls the function, sends, publishes or
    /// puts, inside the step's span.
    async fn run(&self, step: &Step, resource: &str, input: Value) -> Result<Value, Failure> {
        let span = self.step_span(step, resource);
        let parent = span.as_ref().map(|s| s.context.clone());
        let result = self.integrate(step, resource, input, parent.as_ref()).await;
        if let Some(span) = span {
            span.end(&self.node, result.as_ref().err().map(|f| f.error.clone()));
        }
        result
    }

    async fn integrate(
        &self,
        step: &Step,
        resource: &str,
        input: Value,
        parent: Option<&SpanContext>,
    ) -> Result<Value, Failure> {
        let integration = weft_workflows::resource::integration(resource, &input).map_err(Failure::runtime)?;
        match integration {
            Integration::Function(call) => self.function(step, call, parent).await,
            Integration::SendMessage {
                queue,
                body,
                group,
                dedup,
            } => self.send(step, queue, body, group, dedup, parent).await,
            Integration::Publish {
                topic,
                message,
                subject,
            } => self.publish(step, topic, message, subject, parent).await,
            Integration::PutEvents { entries } => self.put_events(entries, parent).await,
            Integration::StartExecution {
                workflow,
                input,
                name,
                wait,
            } => self.start_child(step, &workflow, input, name, wait, parent).await,
        }
    }

    /// Starts an execution of `workflow` (named after this execution and
    /// step unless `Name` is given, so a task run again finds the child it
    /// started) and, with `.sync`, waits for it to end.
    async fn start_child(
        &self,
        step: &Step,
        workflow: &str,
        input: Value,
        name: Option<String>,
        wait: ChildWait,
        parent: Option<&SpanContext>,
    ) -> Result<Value, Failure> {
        use super::StartError;
        let name = name.unwrap_or_else(|| child_name(&self.execution, step));
        let id = format!("{workflow}:{name}");
        let view = match self
            .workflows
            .start(&self.node, workflow, Some(name), input, parent)
            .await
        {
            Ok(started) => started.view,
            // Started by an earlier run of this task.
            Err(StartError::Exists { same_input: true, .. }) => self.child(&id).await?,
            Err(e) => {
                return Err(Failure::new(
                    "StepFunctions.ExecutionAlreadyExistsException",
                    e.to_string(),
                ));
            }
        };
        if wait == ChildWait::No {
            return Ok(json!({ "ExecutionArn": view["executionArn"], "StartDate": view["startDate"] }));
        }
        let mut view = view;
        while view["status"] == "RUNNING" {
            tokio::time::sleep(CHILD_POLL).await;
            view = self.child(&id).await?;
        }
        let as_text = |v: &Value| match wait {
            ChildWait::Text => Value::String(v.to_string()),
            _ => v.clone(),
        };
        let mut result = json!({
            "ExecutionArn": view["executionArn"],
            "StateMachineArn": format!("weft:workflow:{workflow}"),
            "Name": view["name"],
            "Status": view["status"],
            "StartDate": view["startDate"],
            "StopDate": view["stopDate"],
            "Input": as_text(&view["input"]),
        });
        if view["status"] == "SUCCEEDED" {
            result["Output"] = as_text(&view["output"]);
            return Ok(result);
        }
        result["Error"] = view["error"].clone();
        result["Cause"] = view["cause"].clone();
        Err(Failure::new("States.TaskFailed", result.to_string()))
    }

    /// A child execution's view, read again.
    async fn child(&self, id: &str) -> Result<Value, Failure> {
        loop {
            match super::executions::record(&self.node, id).await {
                Ok(Some((record, _))) => return Ok(record.view()),
                Ok(None) => return Err(Failure::new("States.TaskFailed", format!("execution {id} is gone"))),
                Err(e) => {
                    tracing::warn!("reading execution {id}: {e}");
                    tokio::time::sleep(CHILD_POLL).await;
                }
            }
        }
    }

    /// A `.waitForTaskToken` task: hands the token over (once, across
    /// resumes), then waits for its answer.
    async fn callback(&self, step: &Step, resource: &str, input: Value, limits: TaskLimits) -> Result<Value, Failure> {
        if self.express {
            return Err(Failure::runtime(
                "an express workflow cannot wait for a task token (nor can one on Step Functions): make it standard",
            ));
        }
        let key = super::tokens::callback_key(&self.execution, step);
        let tokens = &self.workflows.tokens;
        let storage = &self.node.storage;
        if let Some(answered) = tokens.hand_over(storage, &key, self.run(step, resource, input)).await? {
            return answered;
        }
        tokens.wait(storage, &key, limits.heartbeat).await
    }
    async fn function(&self, step: &Step, call: FunctionCall, parent: Option<&SpanContext>) -> Result<Value, Failure> {
        let deployment = self.node.deployment();
        let Some(function) = deployment.functions.get(&call.name) else {
            return Err(Failure::new(
                "States.TaskFailed",
                format!("function `{}` is not deployed", call.name),
            ));
        };
        let body = serde_json::to_vec(&call.payload).unwrap_or_default();
        let request = hyper::Request::builder()
            .method("POST")
            .uri("/")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(crate::body::full(body));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Err(Failure::new("States.Runtime", e.to_string())),
        };
        let trusted = [
            ("weft-workflow-execution", self.execution.as_str()),
            ("weft-workflow-state", step.as_str()),
        ];
        let handled = self
            .node
            .invoke(
                function,
                request,
                Call {
                    trusted: &trusted,
                    trace: crate::call::Traced {
                        parent: parent.cloned(),
                        ..Default::default()
                    },
                    ..Call::new(Trigger::Workflow)
                },
            )
            .await;
        let status = handled.response.status();
        let error_type = handled
            .response
            .headers()
            .get("weft-error-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(handled.response.into_body(), MAX_PAYLOAD)
            .collect()
            .await
            .map(|c| c.to_bytes());
        let record = handled.record.await.ok();
        match record.as_ref().map(|r| r.outcome) {
            Some(Outcome::Timeout) => {
                return Err(Failure::new(
                    "States.Timeout",
                    format!("function `{}` ran past its timeout", call.name),
                ));
            }
            Some(Outcome::Success) | None => {}
            Some(_) => {
                let why = record.and_then(|r| r.error).unwrap_or_default();
                return Err(Failure::new(
                    "States.TaskFailed",
                    format!("function `{}` failed: {why}", call.name),
                ));
            }
        }
        let body = match body {
            Ok(b) => b,
            Err(_) => {
                return Err(Failure::new(
                    "States.DataLimitExceeded",
                    format!(
                        "function `{}` answered more than {MAX_PAYLOAD} bytes, the most a task result may be",
                        call.name
                    ),
                ));
            }
        };
        let answer = parse(&body);
        if status.is_success() {
            return Ok(call.result(answer));
        }
        let error = error_type
            .or_else(|| answer.get("errorType").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "States.TaskFailed".into());
        let cause = match answer.get("errorMessage").and_then(Value::as_str) {
            Some(message) => message.to_string(),
            None => format!(
                "function `{}` answered {}: {}",
                call.name,
                status.as_u16(),
                String::from_utf8_lossy(&body[..body.len().min(4096)])
            ),
        };
        Err(Failure::new(error, cause))
    }

    /// The id a message sent by `step` carries: a task run again after a
    /// crash sends nothing twice.
    fn message_id(&self, step: &Step) -> String {
        match self.redrives {
            0 => format!("{}/{step}", self.execution),
            // A redriven task sends anew.
            n => format!("{}/{step}/redrive-{n}", self.execution),
        }
    }

    async fn send(
        &self,
        step: &Step,
        queue: String,
        body: String,
        group: Option<String>,
        dedup: Option<String>,
        parent: Option<&SpanContext>,
    ) -> Result<Value, Failure> {
        use md5::Digest as _;
        let digest = md5::Md5::digest(body.as_bytes());
        let message = weft_events::Outgoing {
            id: Some(dedup.unwrap_or_else(|| self.message_id(step))),
            group,
            content_type: Some(content_type(&body).into()),
            body: body.into_bytes(),
            ..Default::default()
        };
        let name = queue.clone();
        let sent = self
            .node
            .produce("queue", &name, parent, |trace| async move {
                let mut message = message;
                message.trace = trace;
                self.node.queues.send(&queue, vec![message]).await
            })
            .await
            .map_err(|e| Failure::new("SQS.SdkClientException", e.to_string()))?;
        let id = sent.first().map(|s| s.id.clone()).unwrap_or_default();
        Ok(json!({ "MessageId": id, "MD5OfMessageBody": hex(&digest) }))
    }

    async fn publish(
        &self,
        step: &Step,
        topic: String,
        message: String,
        subject: Option<String>,
        parent: Option<&SpanContext>,
    ) -> Result<Value, Failure> {
        let id = self.message_id(step);
        let mut extensions = std::collections::BTreeMap::new();
        if let Some(subject) = subject {
            extensions.insert("subject".to_string(), subject);
        }
        let event = weft_events::CloudEvent {
            id: id.clone(),
            source: format!("/weft/workflows/{}", self.workflow),
            event_type: "weft.workflow.message".into(),
            time: None,
            content_type: Some(content_type(&message).into()),
            data: message.into_bytes(),
            extensions,
        };
        super::super::topics::publish(&self.node, &topic, vec![event], parent.cloned())
            .await
            .map_err(|e| Failure::new("SNS.SdkClientException", e.to_string()))?;
        Ok(json!({ "MessageId": id }))
    }

    async fn put_events(&self, entries: Vec<Value>, parent: Option<&SpanContext>) -> Result<Value, Failure> {
        // Step Functions lets a definition give Detail as JSON; the API
        // takes it as a string.
        let entries: Vec<Value> = entries
            .into_iter()
            .map(|mut entry| {
                if let Some(detail) = entry.get_mut("Detail")
                    && !detail.is_string()
                {
                    *detail = Value::String(detail.to_string());
                }
                entry
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "Entries": entries })).unwrap_or_default();
        let (status, answer) = super::super::bus::put_events(&self.node, &body, None, parent).await;
        if status != 200 {
            let why = answer["error"]
                .as_str()
                .unwrap_or("the events were refused")
                .to_string();
            return Err(Failure::new("EventBridge.InvalidArgument", why));
        }
        if answer["FailedEntryCount"].as_u64().unwrap_or(0) > 0 {
            return Err(Failure::new("EventBridge.FailedEntry", answer["Entries"].to_string()));
        }
        Ok(answer)
    }
}

/// Returns once the wall clock says `until`, reading it again at least
/// every [`MAX_SLEEP`] (so a changed clock is followed).
async fn sleep_until(until: jiff::Timestamp) {
    loop {
        let left = until.as_millisecond() - jiff::Timestamp::now().as_millisecond();
        if left <= 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(left as u64).min(MAX_SLEEP)).await;
    }
}

/// An answer's body as JSON; text that is not JSON as a JSON string;
/// nothing as null.
fn parse(body: &Bytes) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn content_type(text: &str) -> &'static str {
    match serde_json::from_str::<Value>(text) {
        Ok(_) => "application/json",
        Err(_) => "text/plain; charset=utf-8",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait::async_trait]
impl Effects for Live {
    fn task_timed_out(&self, step: &Step) {
        // A `.waitForTaskToken` task's token is refused from now on; the
        // write is its own task, as the interpreter goes on at once.
        let (node, workflows) = (self.node.clone(), self.workflows.clone());
        let key = super::tokens::callback_key(&self.execution, step);
        tokio::spawn(async move {
            let failure = Failure::new("States.Timeout", "the task ran longer than its TimeoutSeconds");
            if let Err(e) = workflows.tokens.time_out(&node.storage, &key, &failure).await {
                tracing::warn!("task token {key} timed out, but its answer could not be closed: {e}");
            }
        });
    }

    async fn task(&self, step: &Step, resource: &str, input: Value, limits: TaskLimits) -> Result<Value, Failure> {
        match resource.strip_suffix(".waitForTaskToken") {
            Some(base) => self.callback(step, base, input, limits).await,
            None => self.run(step, resource, input).await,
        }
    }

    fn task_token(&self, step: &Step) -> String {
        super::tokens::token(&self.token_key, &self.execution, step)
    }

    async fn wait_until(&self, step: &Step, until: jiff::Timestamp) {
        // A Wait state's wait is a step of its own; timeouts and backoffs are not.
        let span = (!step.contains("/timeout") && step != "execution-timeout")
            .then(|| self.step_span(step, "wait"))
            .flatten();
        sleep_until(until).await;
        if let Some(span) = span {
            span.end(&self.node, None);
        }
    }

    async fn sleep(&self, _step: &Step, delay: Duration) {
        tokio::time::sleep(delay).await;
    }

    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }

    fn random(&self, _step: &Step) -> f64 {
        rand::random()
    }
}
