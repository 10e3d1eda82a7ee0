//! What every Lambda function does the same way, so that each `functions/*/src/main.rs` is
//! only its own event and its one call: logging, the invocation's error, and the serving loop.
//! [`http`] translates API Gateway requests for the status function.
//!
//! Behind the `lambda` feature: the command line does not link the Lambda runtime.

pub mod http;

use std::future::Future;

use serde_json::Value;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use crate::alert::redact;
use crate::ops::jobs::JobError;

pub use lambda_runtime::{Diagnostic, Error};

/// JSON lines on stdout (CloudWatch Logs adds the time and the request id). The level is
/// chosen as the runtime's own default subscriber chooses it
/// (`lambda_runtime::tracing::init_default_subscriber`): `AWS_LAMBDA_LOG_LEVEL` (Lambda's
/// logging controls), else `RUST_LOG`, else `info`; `RUST_LOG` directives such as
/// `pgkeep=debug` apply on top. Unlike that subscriber the output is always JSON, whatever
/// `AWS_LAMBDA_LOG_FORMAT` says, so that log queries do not depend on a console setting.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::builder()
                .with_default_directive(log_level(|name| std::env::var(name).ok()).into())
                .from_env_lossy(),
        )
        .with_current_span(false)
        .without_time()
        .init();
}

/// The default level: the first of `AWS_LAMBDA_LOG_LEVEL` and `RUST_LOG` that is set, read as
/// a level (`FATAL` or a list of directives reads as `info`, as in the runtime).
fn log_level(get: impl Fn(&str) -> Option<String>) -> LevelFilter {
    get("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|| get("RUST_LOG"))
        .and_then(|level| level.parse().ok())
        .unwrap_or(LevelFilter::INFO)
}

/// The invocation's error: a stable type (what alarms and retries look at) and the message,
/// with any secret redacted (the runtime writes it to the log and to the caller).
pub fn diagnostic(e: &JobError) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_owned(),
        error_message: redact(&e.to_string()),
    }
}

/// Builds a function's state once per container (settings, clients). When that fails, the
/// error goes to the Runtime API's init-error endpoint before the process exits, so the
/// invocation that started the container fails at once with the reason (instead of waiting
/// out its timeout), and to the log.
pub async fn init<S>(build: impl Future<Output = Result<S, Error>>) -> Result<S, Error> {
    match build.await {
        Ok(state) => Ok(state),
        Err(e) => {
            let message = redact(&e.to_string());
            tracing::error!(error = %message, "the function could not start");
            if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") {
                report_init_error(&api, &message).await;
            }
            Err(e)
        }
    }
}

/// `POST /2018-06-01/runtime/init/error`
/// (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html#runtimes-api-initerror>).
async fn report_init_error(api: &str, message: &str) {
    let body = serde_json::json!({
        "errorType": "Runtime.InitError",
        "errorMessage": message,
    });
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    if let Err(e) = sent {
        tracing::error!(error = %e, "could not report the start-up failure to the Runtime API");
    }
}

/// Serves invocations until the runtime stops: each event's JSON payload goes to `handler`
/// together with `state`, built once per container by the caller (clients are not made per
/// invocation).
pub async fn serve<S, F, Fut>(state: S, handler: F) -> Result<(), Error>
where
    S: Clone,
    F: Fn(S, Value) -> Fut,
    Fut: Future<Output = Result<Value, Diagnostic>>,
{
    // Lambda sends SIGTERM only at shutdown and only with extensions; handled, it ends a run
    // honestly like the invocation's time limit does (see `signals::stop_requested`).
    if let Err(e) = crate::signals::install() {
        tracing::warn!(error = %e, "could not handle SIGTERM");
    }
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| {
            let deadline =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
            crate::signals::with_deadline(deadline, handler(state.clone(), event.payload))
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::TriggerError;

    fn level(pairs: &[(&str, &str)]) -> LevelFilter {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        log_level(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn the_level_is_info_unless_lambda_or_rust_log_says_otherwise() {
        assert_eq!(level(&[]), LevelFilter::INFO);
        assert_eq!(level(&[("RUST_LOG", "debug")]), LevelFilter::DEBUG);
        assert_eq!(
            level(&[("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("RUST_LOG", "debug")]),
            LevelFilter::WARN,
            "Lambda's logging controls win"
        );
        assert_eq!(
            level(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]),
            LevelFilter::INFO
        );
        assert_eq!(level(&[("RUST_LOG", "pgkeep=debug")]), LevelFilter::INFO);
    }

    #[test]
    fn a_diagnostic_names_the_error_and_redacts_secrets() {
        let e = JobError::Event(TriggerError::Field(
            "postgresql://u:hunter2@db/shop is not a database name".into(),
        ));
        let d = diagnostic(&e);
        assert_eq!(d.error_type, "InvalidEvent");
        assert!(!d.error_message.contains("hunter2"), "{}", d.error_message);
    }
}
