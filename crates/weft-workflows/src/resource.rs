//! What a Task's `Resource` names, in the forms unchanged Step Functions
//! definitions use: `function:NAME`, a Lambda function's ARN (its
//! `function:NAME` segment names the weft function; a version or alias
//! after it is ignored), and the integration
//! `arn:aws:states:::lambda:invoke`, whose `FunctionName` parameter names
//! the function and whose `Payload` is its input.

use serde_json::{Value, json};

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
}
