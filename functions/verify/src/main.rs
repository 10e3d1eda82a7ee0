//! The `verify` Lambda function: proves a backup by restoring it into a scratch database, when
//! a schedule fires (the newest backup not yet verified), when invoked with `{"backup_id":
//! "..."}`, and when the dump function hands it a new backup. It also runs the restores the
//! status API queues (`{"restore": {...}}`). What each does is [`Jobs::run_verify_event`].

use std::sync::Arc;

use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::lambda::{self, diagnostic, Diagnostic, Error};
use pgkeep::ops::jobs::Jobs;
use pgkeep::trigger::VerifyEvent;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda::init_tracing();
    let jobs = lambda::init(async {
        let settings = LambdaSettings::from_env()?;
        // The key is only read (an overwriting restore's safety backup takes a new data key from
        // the same key: KMS, or the existing key file).
        Ok(Arc::new(Jobs::connect(settings, KeyUse::Read).await?))
    })
    .await?;
    lambda::serve(
        jobs,
        |jobs, event| async move { handle(&jobs, event).await },
    )
    .await
}

/// One event: what to verify (or restore), then do it.
async fn handle(jobs: &Jobs, event: Value) -> Result<Value, Diagnostic> {
    let event = VerifyEvent::from_event(&event).map_err(|e| diagnostic(&e.into()))?;
    // Boxed: the job's future is large and deeply nested (keeps the stack and the
    // compiler's layout queries small).
    let outcome = Box::pin(jobs.run_verify_event(&event))
        .await
        .map_err(|e| diagnostic(&e))?;
    Ok(serde_json::to_value(outcome).expect("outcomes serialize"))
}

#[cfg(test)]
mod tests;
