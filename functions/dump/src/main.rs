//! The `dump` Lambda function: one backup per event, whether the event is an EventBridge
//! schedule, a console invocation `{"database": "...", "kind": "manual"}`, or the status API's
//! asynchronous invocation with a pre-allocated id. What a dump does (idempotency, alerts,
//! metrics, starting the verification) is [`Jobs::run_dump`]; this file parses and answers.

use std::sync::Arc;

use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::lambda::{self, diagnostic, Diagnostic, Error};
use pgkeep::ops::jobs::Jobs;
use pgkeep::trigger::{DumpTrigger, TaskStopped};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda::init_tracing();
    let jobs = lambda::init(async {
        let settings = LambdaSettings::from_env()?;
        // A new backup may need a new data key, so the key is for writing.
        Ok(Arc::new(Jobs::connect(settings, KeyUse::Write).await?))
    })
    .await?;
    lambda::serve(
        jobs,
        |jobs, event| async move { handle(&jobs, event).await },
    )
    .await
}

/// One event: which database, then the dump. A failed dump fails the invocation. ECS's event
/// of a stopped Fargate task (the task-state rule) makes sure its failure is recorded and
/// alerted once.
async fn handle(jobs: &Jobs, event: Value) -> Result<Value, Diagnostic> {
    if let Some(stopped) = TaskStopped::from_event(&event).map_err(|e| diagnostic(&e.into()))? {
        let outcome = jobs
            .run_task_stopped(&stopped)
            .await
            .map_err(|e| diagnostic(&e))?;
        return Ok(serde_json::to_value(outcome).expect("outcomes serialize"));
    }
    let trigger = DumpTrigger::from_event(&event).map_err(|e| diagnostic(&e.into()))?;
    // Boxed: the job's future is large and deeply nested (keeps the stack and the
    // compiler's layout queries small).
    let outcome = Box::pin(jobs.run_dump(&trigger))
        .await
        .map_err(|e| diagnostic(&e))?;
    Ok(serde_json::to_value(outcome).expect("outcomes serialize"))
}

#[cfg(test)]
mod tests;
