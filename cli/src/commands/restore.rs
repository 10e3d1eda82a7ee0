//! `pgkeep restore`: into a new database, or over an existing one after a safety backup.

use pgkeep::backends::{KeyUse, Services};
use pgkeep::model::BackupId;
use pgkeep::ops;
use pgkeep::ops::restore::RestoreRequest;
use pgkeep::ops::restore_run::RunRestoreRequest;

use super::{failed, parse_id, usage, Failure};
use crate::args::RestoreArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &RestoreArgs) -> Result<u8, Failure> {
    if let Some(run_id) = &args.run {
        return restore_run(resolver, args, run_id).await;
    }
    let id = parse_id(args.id.as_deref().unwrap_or_default())?;
    let target_db = args.target_db.clone().unwrap_or_default();
    if args.confirm.len() > 1 {
        return Err(usage(
            "--confirm names the one target database; give it once",
        ));
    }
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
    let mut request = RestoreRequest::new(id, server, target_db);
    request.overwrite = args.overwrite;
    request.confirm = args.confirm.first().cloned();
    request.dry_run = args.dry_run;
    request.jobs = super::jobs_for_backup(&services, args.jobs, Some(&request.id)).await?;
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

/// `restore --run`: a whole-server run onto the --target-url server.
async fn restore_run(
    resolver: &Resolver<'_>,
    args: &RestoreArgs,
    run_id: &str,
) -> Result<u8, Failure> {
    run_id
        .parse::<BackupId>()
        .map_err(|_| usage(format!("{run_id:?} is not a run id (the RUN column of `pgkeep list`, e.g. 20261124T153512123Z-9f3a1c2b)")))?;
    let database = resolver.database()?;
    let (url, from) = match (&args.target_url, &database.url) {
        (Some(url), _) => (url.clone(), "target_url"),
        (None, Some(url)) => (url.clone(), "database_url"),
        (None, None) => {
            return Err(usage(
                "no server to restore on: pass --target-url URL (or PGKEEP_TARGET_URL); its database is used only to connect",
            ))
        }
    };
    let server = database
        .auth
        .parse("--target-url", &url)
        .map_err(ops::Error::from)?;
    resolver.warn_password_on_command_line(&server, from, "the target server", "PGKEEP_TARGET_URL");
    let key_use = if args.overwrite && !args.dry_run {
        KeyUse::Write
    } else {
        KeyUse::Read
    };
    let iam = database.auth.iam;
    let (services, aws) = resolver.open_aws(key_use, iam).await?;
    let server = resolver
        .server(&database, iam, &url, server, aws.as_ref())
        .await?;
    let mut request = RunRestoreRequest::new(run_id, server);
    request.only = args.only.clone();
    request.exclude = args.exclude.clone();
    request.overwrite = args.overwrite;
    request.confirm = args.confirm.clone();
    request.dry_run = args.dry_run;
    request.jobs = args.jobs.unwrap_or(1);
    request.staging_dir = args.staging_dir.clone();
    request.pg_bin = resolver.cli.pg_bin.clone();
    request.actor = resolver.actor(&args.actor);
    let result = tokio::select! {
        r = ops::restore_run::restore_run(&services, &request) => r,
        signal = pgkeep::signals::received() => {
            ops::scratch::finish_cleanup().await;
            eprintln!("pgkeep: interrupted ({}); the database being restored was not created; those restored before it stay", signal.name());
            return Ok(signal.exit_code());
        }
    };
    let report = result.map_err(|e| failed(&e, format!("restore of run {run_id} failed: {e}")))?;
    output::print(args.json, &report, || output::print_run_restore(&report));
    if !report.globals.role_passwords && !report.globals.roles_created.is_empty() {
        eprintln!("pgkeep: the run's globals hold no role passwords (the backing-up role could not read pg_authid): set the passwords of the created roles again");
    }
    if report.ok() {
        Ok(0)
    } else {
        Err(Failure {
            code: 1,
            message: format!(
                "restore of run {run_id}: not restored: {}",
                report.failed.join(", ")
            ),
        })
    }
}
