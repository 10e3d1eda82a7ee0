//! Built once per container: JSON logs, settings from the environment (fail fast), the AWS
//! configuration, backends, notifiers and the verify starter.

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

/// Everything a dump needs; a new backup may need a new data key, so the key is for writing.
pub async fn jobs() -> Result<Jobs, Error> {
    let settings = LambdaSettings::from_env()?;
    Ok(Jobs::connect(settings, KeyUse::Write).await?)
}

/// The invocation's error: a stable type and the message, with any secret redacted.
pub fn diagnostic(e: &JobError) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_owned(),
        error_message: redact(&e.to_string()),
    }
}
