//! The `verify` Lambda function: proves a backup by restoring it into a scratch database, when
//! a schedule fires (the newest backup not yet verified), when invoked with `{"backup_id":
//! "..."}`, and when the dump function hands it a new backup. It also runs the restores the
//! status API queues (`{"restore": {...}}`). What each does is [`Jobs::run_verify_event`].

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use pgkeep::ops::jobs::Jobs;
use pgkeep::trigger::VerifyEvent;
use serde_json::Value;

mod setup;

#[tokio::main]
async fn main() -> Result<(), Error> {
    setup::tracing();
    let jobs = Arc::new(setup::jobs().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let jobs = jobs.clone();
        async move { handle(&jobs, event.payload).await }
    }))
    .await
}

/// One event: what to verify (or restore), then do it.
async fn handle(jobs: &Jobs, event: Value) -> Result<Value, Diagnostic> {
    let event = VerifyEvent::from_event(&event).map_err(|e| setup::diagnostic(&e.into()))?;
    // Boxed: the job's future is large and deeply nested (keeps the stack and the
    // compiler's layout queries small).
    let outcome = Box::pin(jobs.run_verify_event(&event))
        .await
        .map_err(|e| setup::diagnostic(&e))?;
    Ok(serde_json::to_value(outcome).expect("outcomes serialize"))
}

#[cfg(test)]
mod tests;
