//! `pgkeep verify`: a scratch restore of one backup, compared with its manifest.

use pgkeep::alert::{send_logged, started_logged, Alert, AlertKind, Notifier, RunKind};
use pgkeep::backends::{KeyUse, Services};
use pgkeep::ops;
use pgkeep::ops::verify::VerifyRequest;
use pgkeep::postgres::PgTarget;

use super::{failed, parse_id, usage, Failure};
use crate::args::VerifyArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &VerifyArgs) -> Result<u8, Failure> {
    let id = args.id.as_deref().map(parse_id).transpose()?;
    let database = resolver.database()?;
    let notifier = resolver.notifier()?;
    let url = args
        .scratch_url
        .as_deref()
        .or(database.url.as_deref())
        .ok_or_else(|| {
            usage("no scratch server to verify on: set PGKEEP_SCRATCH_URL (or --scratch-url), or PGKEEP_DATABASE_URL to use the source server")
        })?;
    let scratch = PgTarget::parse(url).map_err(ops::Error::Scratch)?;
    resolver.warn_password_on_command_line(
        &scratch,
        "scratch_url",
        "the scratch server's",
        "PGKEEP_SCRATCH_URL",
    );
    // IAM authentication is the --database-url server's; a scratch URL has its own.
    let iam = database.auth.iam && args.scratch_url.is_none();
    let (services, aws) = resolver.open_aws(KeyUse::Read, iam).await?;
    let scratch = resolver
        .server(&database, iam, url, scratch, aws.as_ref())
        .await?;
    // The backup is chosen here rather than inside the verification so the heartbeat's
    // `/start` can name its database.
    let id = match id {
        Some(id) => Some(id),
        None => ops::verify::next_to_verify(&services)
            .await?
            .map(|record| record.id),
    };
    let mut request = VerifyRequest::new(scratch, id);
    request.pg_bin = resolver.cli.pg_bin.clone();
    request.actor = resolver.actor(&args.actor);
    request.jobs = super::jobs_for_backup(&services, args.jobs, request.id.as_ref()).await?;
    verify(&services, &request, args.json, notifier.as_ref()).await
}

async fn verify(
    services: &Services,
    request: &VerifyRequest,
    json: bool,
    notifier: &dyn Notifier,
) -> Result<u8, Failure> {
    let what = request.id.as_ref().map_or_else(
        || "the newest unverified backup".to_owned(),
        |id| format!("backup {id}"),
    );
    // The heartbeat hears `/start`, then success or `/fail`, as from the verify function.
    let verified = match &request.id {
        Some(id) => services.catalog.get(id).await.ok(),
        None => None,
    };
    if let Some(record) = &verified {
        started_logged(notifier, RunKind::Verification, &record.database).await;
    }
    let failure = |why: &str| {
        verified
            .as_ref()
            .map(|record| Alert::verification_failed(record, why, chrono::Utc::now()))
    };
    let bar = output::ProgressBar::start_with("verifying", &what, request.progress.clone());
    let result = tokio::select! {
        r = ops::verify::verify(services, request) => r,
        signal = pgkeep::signals::received() => {
            bar.finish();
            // Dropping the verification killed pg_restore; its scratch database is dropped here.
            ops::scratch::finish_cleanup().await;
            if let Some(alert) = failure(&format!("interrupted ({})", signal.name())) {
                send_logged(notifier, &alert).await;
            }
            eprintln!("pgkeep: interrupted; the scratch database was dropped and the backup's status left as it was");
            return Ok(signal.exit_code());
        }
    };
    bar.finish();
    match result {
        Ok(report) => {
            output::print(json, &report.record, || output::print_verification(&report));
            let reason = report.verification().and_then(|v| v.reason.clone());
            match (&report.failure, &report.record) {
                (None, Some(record)) => {
                    let ok = Alert::about(
                        AlertKind::VerificationOk,
                        record,
                        "the backup was verified",
                        chrono::Utc::now(),
                    );
                    send_logged(notifier, &ok).await;
                }
                (Some(_), Some(record)) => {
                    let why = reason
                        .clone()
                        .unwrap_or_else(|| "verification failed".into());
                    send_logged(
                        notifier,
                        &Alert::verification_failed(record, &why, chrono::Utc::now()),
                    )
                    .await;
                }
                _ => {}
            }
            if let Some(kind) = report.failure {
                if json {
                    // The human output above already said why; JSON readers get it on stderr.
                    let reason = report
                        .verification()
                        .and_then(|v| v.reason.clone())
                        .unwrap_or_default();
                    eprintln!("pgkeep: error: verification failed: {reason}");
                }
                return Ok(kind.exit_code() as u8);
            }
            Ok(0)
        }
        Err(e) => {
            if let Some(alert) = failure(&e.to_string()) {
                send_logged(notifier, &alert).await;
            }
            if json {
                if let Some(id) = &request.id {
                    if let Ok(record) = services.catalog.get(id).await {
                        output::print_json(&record);
                    }
                }
            }
            Err(failed(&e, format!("could not verify {what}: {e}")))
        }
    }
}
