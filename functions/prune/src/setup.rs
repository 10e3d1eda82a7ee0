//! Built once per container: JSON logs, settings from the environment (fail fast), the AWS
//! configuration, backends and notifiers. The retention policy is checked here: an empty one
//! fails the first invocation instead of every night's prune.

use lambda_runtime::{Diagnostic, Error};
use pgkeep::alert::redact;
use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::ops::jobs::{JobError, Jobs};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// JSON lines on stdout (CloudWatch Logs adds the time), `info` unless `RUST_LOG` says
/// otherwise.
pub fn tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::builder()
                .with_default_directive(LevelFilter::INFO.into())
                .from_env_lossy(),
        )
        .with_current_span(false)
        .without_time()
        .init();
}

/// Everything a prune needs: records and objects, no key.
pub async fn jobs() -> Result<Jobs, Error> {
    let settings = LambdaSettings::from_env()?;
    settings.retention.validate().map_err(|e| {
        format!("{e}: set at least one of PGKEEP_KEEP_LAST, _HOURLY, _DAILY, _WEEKLY, _MONTHLY, _YEARLY, _WITHIN")
    })?;
    Ok(Jobs::connect(settings, KeyUse::None).await?)
}

/// The invocation's error: a stable type and the message, with any secret redacted.
pub fn diagnostic(e: &JobError) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_owned(),
        error_message: redact(&e.to_string()),
    }
}
