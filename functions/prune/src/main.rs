//! The `prune` Lambda function, on a schedule: fails runs left in progress too long, deletes
//! what the retention policy (`PGKEEP_KEEP_*`) does not keep, and sends a `stale` alert for
//! each database without a recent good backup. What it does is [`Jobs::run_prune`]. Hourly,
//! a health check event (`detail.check = "health"`) only checks: [`Jobs::run_health`].

use std::sync::Arc;

use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::lambda::{self, diagnostic, Diagnostic, Error};
use pgkeep::ops::jobs::Jobs;
use pgkeep::trigger::PruneTrigger;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda::init_tracing();
    let jobs = lambda::init(async {
        let settings = LambdaSettings::from_env()?;
        // An empty policy fails the container's start, not every night's prune.
        settings.retention.validate().map_err(|e| {
            format!("{e}: set at least one of PGKEEP_KEEP_LAST, _HOURLY, _DAILY, _WEEKLY, _MONTHLY, _YEARLY, _WITHIN")
        })?;
        // Records and objects only: no key.
        Ok(Arc::new(Jobs::connect(settings, KeyUse::None).await?))
    })
    .await?;
    lambda::serve(
        jobs,
        |jobs, event| async move { handle(&jobs, event).await },
    )
    .await
}

/// One schedule tick: prune, then check health; or (the hourly health check) only check.
async fn handle(jobs: &Jobs, event: Value) -> Result<Value, Diagnostic> {
    let trigger = PruneTrigger::from_event(&event).map_err(|e| diagnostic(&e.into()))?;
    let now = chrono::Utc::now();
    // Boxed: the job's future is large and deeply nested (keeps the stack and the
    // compiler's layout queries small).
    let outcome = match trigger {
        PruneTrigger::Prune => Box::pin(jobs.run_prune(now))
            .await
            .map(|o| serde_json::to_value(o).expect("outcomes serialize")),
        PruneTrigger::Health => Box::pin(jobs.run_health(now))
            .await
            .map(|o| serde_json::to_value(o).expect("outcomes serialize")),
    };
    outcome.map_err(|e| diagnostic(&e))
}

#[cfg(test)]
mod tests;
