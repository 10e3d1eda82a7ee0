//! The `prune` Lambda function, on a schedule: fails runs left in progress too long, deletes
//! what the retention policy (`PGKEEP_KEEP_*`) does not keep, and sends a `stale` alert for
//! each database without a recent good backup. What it does is [`Jobs::run_prune`].

use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use pgkeep::ops::jobs::Jobs;
use pgkeep::trigger::PruneTrigger;
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

/// One schedule tick: prune, then check health.
async fn handle(jobs: &Jobs, event: Value) -> Result<Value, Diagnostic> {
    PruneTrigger::from_event(&event).map_err(|e| setup::diagnostic(&e.into()))?;
    // Boxed: the job's future is large and deeply nested (keeps the stack and the
    // compiler's layout queries small).
    let outcome = Box::pin(jobs.run_prune(chrono::Utc::now()))
        .await
        .map_err(|e| setup::diagnostic(&e))?;
    Ok(serde_json::to_value(outcome).expect("outcomes serialize"))
}

#[cfg(test)]
mod tests;
