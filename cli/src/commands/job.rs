//! `pgkeep job`: one job of the Lambda functions, run here with their settings (the entry
//! point of the Fargate task). Everything it does is [`Jobs::run_job`].

use std::io::Read;

use pgkeep::alert::redact;
use pgkeep::config::LambdaSettings;
use pgkeep::ops::jobs::{key_use, JobError, Jobs};
use pgkeep::trigger::Job;

use super::{usage, Failure};
use crate::args::JobArgs;

pub async fn run(args: &JobArgs) -> Result<u8, Failure> {
    let text = match &args.event {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| usage(format!("reading the job from stdin: {e}")))?;
            text
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| usage(format!("reading the job from {}: {e}", path.display())))?,
        None => std::env::var("PGKEEP_JOB").map_err(|_| {
            usage("PGKEEP_JOB is not set: give the job as JSON there, or with --event PATH|-")
        })?,
    };
    let job = Job::parse(&text).map_err(|e| usage(e.to_string()))?;
    let settings = LambdaSettings::from_env().map_err(|e| usage(redact(&e.to_string())))?;
    let jobs = Jobs::connect_here(settings, key_use(job.function))
        .await
        .map_err(|e| usage(redact(&e.to_string())))?;
    match Box::pin(jobs.run_job(&job)).await {
        Ok(outcome) => {
            println!("{outcome}");
            Ok(0)
        }
        Err(e) => Err(Failure {
            code: exit_code(&e),
            message: redact(&e.to_string()),
        }),
    }
}

/// A signal's own code (143 for ECS's SIGTERM), else the failure's kind.
fn exit_code(e: &JobError) -> u8 {
    if let Some(signal) = pgkeep::signals::received_now() {
        return signal.exit_code();
    }
    match e {
        JobError::Event(_) => 2,
        JobError::Failed { source, .. } => source.kind().exit_code() as u8,
        JobError::AlreadyFailed { .. } | JobError::Unalerted { .. } => 1,
    }
}
