//! What a Task's `Resource` names, in the forms unchanged Step Functions
//! definitions use: `function:NAME`, a Lambda function's ARN (its
//! `function:NAME` segment names the weft function; a version or alias
//! after it is ignored), and the integration
//! `arn:aws:states:::lambda:invoke`, whose `FunctionName` parameter names
//! the function and whose `Payload` is its input. The SQS, SNS and
//! EventBridge integrations (`sqs:sendMessage`, `sns:publish`,
//! `events:putEvents`) name a queue, a topic or a bus of the app by the
//! last segment of their URL or ARN.

use serde_json::{Value, json};

use crate::definition::{State, StateKind, StateMachine};

/// What a Task does, read from its `Resource` and its input.
#[derive(Debug, Clone, PartialEq)]
pub enum Integration {
    Function(FunctionCall),
    /// `arn:aws:states:::sqs:sendMessage`: `QueueUrl`, `MessageBody`,
    /// and for a FIFO queue `MessageGroupId` and `MessageDeduplicationId`.
    SendMessage {
        queue: String,
        body: String,
        group: Option<String>,
        dedup: Option<String>,
    },
    /// `arn:aws:states:::sns:publish`: `TopicArn`, `Message`, `Subject`.
    Publish {
        topic: String,
        message: String,
        subject: Option<String>,
    },
    /// `arn:aws:states:::events:putEvents`: `Entries`, each with
    /// `EventBusName` (else `default`), `Source`, `DetailType`, `Detail`.
    PutEvents {
        entries: Vec<Value>,
    },
    /// `arn:aws:states:::states:startExecution`: `StateMachineArn` (its
    /// last segment names the workflow), `Input`, `Name`; with `.sync`
    /// (the child's `Output` as a string, as Step Functions gives it) or
    /// `.sync:2` (as JSON), the task waits for the child to end.
    StartExecution {
        workflow: String,
        input: Value,
        name: Option<String>,
        wait: ChildWait,
    },
}

/// Whether a task that starts an execution waits for it to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildWait {
    /// Answers as soon as the child has started.
    No,
    /// `.sync`: waits; the child's input and output as JSON text.
    Text,
    /// `.sync:2`: waits; the child's input and output as JSON.
    Json,
}

const SEND_MESSAGE: &str = "arn:aws:states:::sqs:sendMessage";
const PUBLISH: &str = "arn:aws:states:::sns:publish";
const PUT_EVENTS: &str = "arn:aws:states:::events:putEvents";
const START_EXECUTION: &str = "arn:aws:states:::states:startExecution";

/// What a Task with `resource` does with `input` (its parameters), or why
/// it can do nothing.
pub fn integration(resource: &str, input: &Value) -> Result<Integration, String> {
    let resource = resource.strip_suffix(".waitForTaskToken").unwrap_or(resource);
    let text = |key: &str| -> Option<String> {
        input
            .get(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    };
    let need =
        |key: &str, what: &str| text(key).ok_or_else(|| format!("{resource} needs Parameters with {key} ({what})"));
    match resource {
        SEND_MESSAGE => Ok(Integration::SendMessage {
            queue: last_segment(&need("QueueUrl", "the queue's URL or name")?, '/'),
            body: need("MessageBody", "the message")?,
            group: text("MessageGroupId"),
            dedup: text("MessageDeduplicationId"),
        }),
        PUBLISH => Ok(Integration::Publish {
            topic: last_segment(&need("TopicArn", "the topic's ARN or name")?, ':'),
            message: need("Message", "what to publish")?,
            subject: text("Subject"),
        }),
        PUT_EVENTS => match input.get("Entries") {
            Some(Value::Array(entries)) if !entries.is_empty() && entries.len() <= 10 => Ok(Integration::PutEvents {
                entries: entries.clone(),
            }),
            _ => Err(format!(
                "{resource} needs Parameters with Entries, an array of 1 to 10 events"
            )),
        },
        _ if resource.starts_with(START_EXECUTION) => {
            let wait = match &resource[START_EXECUTION.len()..] {
                "" => ChildWait::No,
                ".sync" => ChildWait::Text,
                ".sync:2" => ChildWait::Json,
                other => return Err(format!("{resource}: `{other}` is not .sync or .sync:2")),
            };
            let input_of = match input.get("Input") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(text)) => serde_json::from_str(text)
                    .map_err(|e| format!("{resource}: Input is a string that is not JSON ({e})"))?,
                Some(other) => other.clone(),
            };
            Ok(Integration::StartExecution {
                workflow: last_segment(&need("StateMachineArn", "the workflow's ARN or name")?, ':'),
                input: input_of,
                name: text("Name"),
                wait,
            })
        }
        _ => function_call(resource, input).map(Integration::Function),
    }
}

/// The part of `text` after its last `sep`: a queue's name in its URL, a
/// topic's in its ARN, or the name itself.
fn last_segment(text: &str, sep: char) -> String {
    text.rsplit(sep).next().unwrap_or(text).to_string()
}

/// What a definition's Tasks name that can be checked before it runs: a
/// function, queue, topic or bus written out (not chosen by a path), each
/// with the JSON path of its state, as (`function`|`queue`|`topic`|`bus`,
/// name, location).
pub fn references(machine: &StateMachine) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    collect(&machine.states, &mut out);
    out
}

/// Every Task's `Resource`, with the JSON path of its state.
pub fn resources(machine: &StateMachine) -> Vec<(String, String)> {
    fn walk(states: &[State], out: &mut Vec<(String, String)>) {
        for state in states {
            match &state.kind {
                StateKind::Task(task) => out.push((task.resource.clone(), state.location.clone())),
                StateKind::Parallel(parallel) => parallel.branches.iter().for_each(|b| walk(&b.states, out)),
                StateKind::Map(map) => walk(&map.processor.states, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&machine.states, &mut out);
    out
}

fn collect(states: &[State], out: &mut Vec<(&'static str, String, String)>) {
    for state in states {
        match &state.kind {
            StateKind::Task(task) => {
                let fixed = state.parameters.clone().unwrap_or(Value::Null);
                let named = |key: &str| fixed.get(key).and_then(Value::as_str).map(str::to_string);
                let resource = task
                    .resource
                    .strip_suffix(".waitForTaskToken")
                    .unwrap_or(&task.resource);
                let found = match resource {
                    SEND_MESSAGE => named("QueueUrl").map(|q| ("queue", last_segment(&q, '/'))),
                    PUBLISH => named("TopicArn").map(|t| ("topic", last_segment(&t, ':'))),
                    resource if resource.starts_with(START_EXECUTION) => {
                        named("StateMachineArn").map(|w| ("workflow", last_segment(&w, ':')))
                    }
                    PUT_EVENTS => {
                        if let Some(Value::Array(entries)) = fixed.get("Entries") {
                            for entry in entries {
                                let bus = entry.get("EventBusName").and_then(Value::as_str).unwrap_or("default");
                                out.push(("bus", last_segment(bus, '/'), state.location.clone()));
                            }
                        }
                        None
                    }
                    resource if resource.starts_with("arn:aws:states:::lambda:invoke") => {
                        named("FunctionName").map(|f| ("function", function_name(&f).unwrap_or(&f).to_string()))
                    }
                    resource => function_name(resource).map(|f| ("function", f.to_string())),
                };
                if let Some((kind, name)) = found {
                    out.push((kind, name, state.location.clone()));
                }
            }
            StateKind::Parallel(parallel) => {
                for branch in &parallel.branches {
                    collect(&branch.states, out);
                }
            }
            StateKind::Map(map) => collect(&map.processor.states, out),
            _ => {}
        }
    }
}

/// A function a Task calls, and what the call looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionCall {
    /// The weft function.
    pub name: String,
    /// What the function receives.
    pub payload: Value,
    /// The answer comes back wrapped as `lambda:invoke` wraps it
    /// (`{"Payload": ..., "StatusCode": 200, ...}`).
    pub wrapped: bool,
}

impl FunctionCall {
    /// The Task's result, from the function's answer.
    pub fn result(&self, answer: Value) -> Value {
        if !self.wrapped {
            return answer;
        }
        json!({
            "ExecutedVersion": "$LATEST",
            "Payload": answer,
            "StatusCode": 200,
        })
    }
}

/// The function call a Task's `resource` and `input` (its parameters)
/// make, or why they make none.
pub fn function_call(resource: &str, input: &Value) -> Result<FunctionCall, String> {
    let invoke = resource
        .strip_prefix("arn:aws:states:::lambda:invoke")
        .is_some_and(|rest| rest.is_empty() || rest == ".waitForTaskToken");
    if invoke {
        let Some(named) = input.get("FunctionName").and_then(Value::as_str) else {
            return Err(format!(
                "{resource} needs Parameters with a FunctionName (the weft function, or a Lambda ARN naming it)"
            ));
        };
        let name = function_name(named).unwrap_or(named).to_string();
        let payload = input.get("Payload").cloned().unwrap_or_else(|| json!({}));
        return Ok(FunctionCall {
            name,
            payload,
            wrapped: true,
        });
    }
    match function_name(resource) {
        Some(name) => Ok(FunctionCall {
            name: name.to_string(),
            payload: input.clone(),
            wrapped: false,
        }),
        None => Err(format!(
            "Resource {resource:?} names no function; write function:NAME, a Lambda function ARN, or \
             arn:aws:states:::lambda:invoke with a FunctionName"
        )),
    }
}

/// `NAME` in `function:NAME` or `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
fn function_name(text: &str) -> Option<&str> {
    let rest = match text.strip_prefix("function:") {
        Some(rest) => rest,
        None => {
            let (_, rest) = text.strip_prefix("arn:")?.split_once(":function:")?;
            rest
        }
    };
    let name = rest.split(':').next().unwrap_or(rest);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_names_its_function() {
        let input = json!({ "order": 7 });
        for resource in [
            "function:charge",
            "arn:aws:lambda:us-east-1:123456789012:function:charge",
            "arn:aws:lambda:us-east-1:123456789012:function:charge:live",
        ] {
            let call = function_call(resource, &input).unwrap();
            assert_eq!(
                (call.name.as_str(), &call.payload, call.wrapped),
                ("charge", &input, false)
            );
        }
        let call = function_call(
            "arn:aws:states:::lambda:invoke",
            &json!({ "FunctionName": "arn:aws:lambda:eu-west-1:1:function:charge:2", "Payload": { "order": 7 } }),
        )
        .unwrap();
        assert_eq!(
            (call.name.as_str(), &call.payload, call.wrapped),
            ("charge", &input, true)
        );
        assert_eq!(call.result(json!("ok"))["Payload"], "ok");
        assert!(
            function_call("arn:aws:states:::lambda:invoke", &input)
                .unwrap_err()
                .contains("FunctionName")
        );
        assert!(function_call("arn:aws:states:::sqs:sendMessage", &input).is_err());
    }

    #[test]
    fn integrations_name_their_queue_topic_or_bus() {
        let sent = integration(
            SEND_MESSAGE,
            &json!({ "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/orders", "MessageBody": { "id": 7 } }),
        )
        .unwrap();
        assert_eq!(
            sent,
            Integration::SendMessage {
                queue: "orders".into(),
                body: r#"{"id":7}"#.into(),
                group: None,
                dedup: None,
            }
        );
        let published = integration(
            PUBLISH,
            &json!({ "TopicArn": "arn:aws:sns:us-east-1:123456789012:shipped", "Message": "done" }),
        )
        .unwrap();
        assert!(
            matches!(published, Integration::Publish { topic, message, .. } if topic == "shipped" && message == "done")
        );
        assert!(
            integration(SEND_MESSAGE, &json!({ "QueueUrl": "q" }))
                .unwrap_err()
                .contains("MessageBody")
        );
        assert!(
            integration(PUT_EVENTS, &json!({ "Entries": [] }))
                .unwrap_err()
                .contains("1 to 10")
        );
        let definition = json!({
            "StartAt": "Both",
            "States": {
                "Both": { "Type": "Parallel", "Next": "Tell", "Branches": [
                    { "StartAt": "Charge", "States": { "Charge": { "Type": "Task", "Resource": "function:charge", "End": true } } },
                    { "StartAt": "Dynamic", "States": { "Dynamic": { "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                        "Parameters": { "FunctionName.$": "$.fn" }, "End": true } } }
                ]},
                "Tell": { "Type": "Task", "Resource": PUT_EVENTS, "Parameters": { "Entries": [ { "Source": "s", "DetailType": "d", "Detail": {} } ] }, "End": true }
            }
        });
        let machine = crate::validate::load(&definition).unwrap();
        let found: Vec<(&str, String)> = references(&machine).into_iter().map(|(k, n, _)| (k, n)).collect();
        assert_eq!(
            found,
            [("function", "charge".to_string()), ("bus", "default".to_string())]
        );
    }
}
