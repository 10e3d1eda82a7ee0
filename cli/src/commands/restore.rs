//! `pgkeep restore`: into a new database, or over an existing one after a safety backup.

use pgkeep::backends::{KeyUse, Services};
use pgkeep::model::BackupId;
use pgkeep::ops;
use pgkeep::ops::restore::RestoreRequest;

use super::{failed, parse_id, usage, Failure};
use crate::args::RestoreArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &RestoreArgs) -> Result<u8, Failure> {
    let id = parse_id(&args.id)?;
    let database = resolver.database()?;
    let url = database.url.as_deref().ok_or_else(|| {
        usage("no server to restore on: set PGKEEP_DATABASE_URL or pass --database-url (its database is used only to connect)")
    })?;
    let server = database
        .auth
        .parse("--database-url", url)
        .map_err(ops::Error::from)?;
    resolver.warn_password_on_command_line(
        &server,
        "database_url",
        "the database",
        "PGKEEP_DATABASE_URL",
    );
    // Overwriting takes a safety backup, which needs the key for writing.
    let key_use = if args.overwrite && !args.dry_run {
        KeyUse::Write
    } else {
        KeyUse::Read
    };
    let iam = database.auth.iam;
    let (services, aws) = resolver.open_aws(key_use, iam).await?;
    let server = resolver
        .server(&database, iam, url, server, aws.as_ref())
        .await?;
    let mut request = RestoreRequest::new(id, server, args.target_db.clone());
    request.overwrite = args.overwrite;
    request.confirm = args.confirm.clone();
    request.dry_run = args.dry_run;
    request.jobs = args.jobs;
    request.no_owner = args.no_owner;
    request.staging_dir = args.staging_dir.clone();
    request.pg_bin = resolver.cli.pg_bin.clone();
    request.actor = resolver.actor(&args.actor);
    request.safety_backup_id = Some(BackupId::generate(chrono::Utc::now()));
    request.restore_id = Some(BackupId::generate(chrono::Utc::now()));
    restore(&services, &request, args.json).await
}

async fn restore(services: &Services, request: &RestoreRequest, json: bool) -> Result<u8, Failure> {
    let label = format!("backup {} into {:?}", request.id, request.target_db);
    let verb = if request.dry_run {
        "checking"
    } else {
        "restoring"
    };
    let bar = output::ProgressBar::start_with(verb, &label, request.progress.clone());
    let result = tokio::select! {
        r = ops::restore::restore(services, request) => r,
        signal = pgkeep::signals::received() => {
            bar.finish();
            // Dropping the restore killed pg_restore and removed any staged file; the new
            // database is dropped here, and an unfinished safety backup is recorded as failed.
            ops::scratch::finish_cleanup().await;
            if let Some(id) = &request.safety_backup_id {
                let why = format!("interrupted ({})", signal.name());
                if let Err(e) = ops::backup::end_interrupted(services, &request.target_db, id, &why).await {
                    eprintln!("pgkeep: could not record the interrupted safety backup: {e}");
                }
            }
            if let Some(id) = &request.restore_id {
                ops::restore::record_failure(services, id, &format!("interrupted ({})", signal.name())).await;
            }
            eprintln!("pgkeep: interrupted ({}); nothing was restored and {:?} was left as it was", signal.name(), request.target_db);
            return Ok(signal.exit_code());
        }
    };
    bar.finish();
    match result {
        Ok(report) => {
            output::print(json, &report, || output::print_restore(&report));
            Ok(0)
        }
        Err(e) => Err(failed(
            &e,
            format!("restore of backup {} failed: {e}", request.id),
        )),
    }
}
