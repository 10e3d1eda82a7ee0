//! Starting another pgkeep function without waiting for it: an asynchronous Lambda invocation
//! (`InvocationType=Event`). The status API starts dumps, verifications and restores this way,
//! and the dump function starts the verification of each new backup.
//!
//! Lambda queues the event and answers 202; retries and the dead-letter queue are the target
//! function's asynchronous invocation settings.

use async_trait::async_trait;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use crate::api::{DumpStarter, VerifyStarter};
use crate::aws::{describe, error_code, SdkConfig};
use crate::trigger::{DumpTrigger, VerifyEvent};

/// Invokes one function asynchronously.
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaInvoker {
    /// An invoker of `function` (name, ARN or partial ARN), using the AWS configuration loaded
    /// once per process.
    pub fn new(config: &SdkConfig, function: &str) -> Self {
        LambdaInvoker {
            client: aws_sdk_lambda::Client::new(config),
            function: function.to_owned(),
        }
    }

    /// The function invoked.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Queues `payload` for the function; returns once Lambda accepted it.
    pub async fn invoke(&self, payload: &serde_json::Value) -> Result<(), String> {
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload.to_string()))
            .send()
            .await
            .map_err(|e| {
                let hint = match error_code(&e) {
                    Some("ResourceNotFoundException") => " (check the function name and region)",
                    Some("AccessDeniedException") => " (grant lambda:InvokeFunction on it)",
                    _ => "",
                };
                format!(
                    "invoking the Lambda function {}: {}{hint}",
                    self.function,
                    describe(&e)
                )
            })?;
        match out.status_code() {
            202 => Ok(()),
            other => Err(format!(
                "invoking the Lambda function {}: expected 202 Accepted for an asynchronous invocation, got {other}",
                self.function
            )),
        }
    }
}

#[async_trait]
impl DumpStarter for LambdaInvoker {
    async fn start(&self, trigger: &DumpTrigger) -> Result<(), String> {
        self.invoke(&trigger.to_event()).await
    }
}

#[async_trait]
impl VerifyStarter for LambdaInvoker {
    async fn start(&self, event: &VerifyEvent) -> Result<(), String> {
        self.invoke(&event.to_event()).await
    }
}

/// Stands in for a function whose name is not configured: every start fails, naming the
/// variable to set (an API call that cannot start anything must say so, not answer 202).
#[derive(Debug, Clone, Copy)]
pub struct Unconfigured(pub &'static str);

#[async_trait]
impl DumpStarter for Unconfigured {
    async fn start(&self, _: &DumpTrigger) -> Result<(), String> {
        Err(format!("{} is not set, so nothing can be started", self.0))
    }
}

#[async_trait]
impl VerifyStarter for Unconfigured {
    async fn start(&self, _: &VerifyEvent) -> Result<(), String> {
        Err(format!("{} is not set, so nothing can be started", self.0))
    }
}
