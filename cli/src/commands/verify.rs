//! `pgkeep verify`: a scratch restore of one backup, compared with its manifest.

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
    let mut request = VerifyRequest::new(scratch, id);
    request.pg_bin = resolver.cli.pg_bin.clone();
    request.actor = resolver.actor(&args.actor);
    request.jobs = super::jobs_for_backup(&services, args.jobs, request.id.as_ref()).await?;
    verify(&services, &request, args.json).await
}

async fn verify(services: &Services, request: &VerifyRequest, json: bool) -> Result<u8, Failure> {
    let what = request.id.as_ref().map_or_else(
        || "the newest unverified backup".to_owned(),
        |id| format!("backup {id}"),
    );
    let bar = output::ProgressBar::start_with("verifying", &what, request.progress.clone());
    let result = tokio::select! {
        r = ops::verify::verify(services, request) => r,
        signal = pgkeep::signals::received() => {
            bar.finish();
            // Dropping the verification killed pg_restore; its scratch database is dropped here.
            ops::scratch::finish_cleanup().await;
            eprintln!("pgkeep: interrupted; the scratch database was dropped and the backup's status left as it was");
            return Ok(signal.exit_code());
        }
    };
    bar.finish();
    match result {
        Ok(report) => {
            output::print(json, &report.record, || output::print_verification(&report));
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
