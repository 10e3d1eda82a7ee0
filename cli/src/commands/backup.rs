//! `pgkeep backup`: labels, selection and database checked before anything is touched, then
//! one backup with a progress bar; SIGINT or SIGTERM records the run as failed (exit 130, 143).
//! With `PGKEEP_HEARTBEAT_URL` set, the heartbeat hears `/start`, success or `/fail`, and
//! `/fail` for an earlier run of the database that was killed (found abandoned first).

use std::sync::Arc;

use pgkeep::alert::{send_logged, started_logged, Alert, AlertKind, Notifier, RunKind};
use pgkeep::backends::{KeyUse, Services};
use pgkeep::labels::Labels;
use pgkeep::model::BackupId;
use pgkeep::ops;
use pgkeep::ops::backup::BackupRequest;
use pgkeep::ops::server::RunRequest;
use pgkeep::pipeline::Progress;
use pgkeep::selection::Selection;

use super::{failed, Failure};
use crate::args::BackupArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &BackupArgs) -> Result<u8, Failure> {
    // Refuse bad labels, patterns and database settings before touching anything.
    let labels = Labels::parse_args(&args.labels).map_err(ops::Error::from)?;
    let selection = Selection {
        include_schemas: args.schemas.clone(),
        exclude_schemas: args.exclude_schemas.clone(),
        include_tables: args.tables.clone(),
        exclude_tables: args.exclude_tables.clone(),
        exclude_table_data: args.exclude_table_data.clone(),
    };
    selection.validate().map_err(ops::Error::from)?;
    let database = resolver.database()?;
    let notifier = resolver.notifier()?;
    if let Some(url) = database.check_source().map_err(ops::Error::from)? {
        resolver.warn_password_on_command_line(
            &url,
            "database_url",
            "the database",
            "PGKEEP_DATABASE_URL",
        );
    }
    let (services, aws) = resolver
        .open_aws(KeyUse::Write, database.needs_aws())
        .await?;
    let target = database
        .source_target(aws.as_ref())
        .await
        .map_err(ops::Error::from)?;
    if args.all_databases {
        let mut request = RunRequest::new(target, args.kind);
        request.include = args.include.clone();
        request.exclude = args.exclude.clone();
        request.compression = args.compression;
        request.lease_ttl = args.lease_ttl();
        request.pg_bin = resolver.cli.pg_bin.clone();
        request.abandon_after = resolver.abandon_after;
        request.labels = labels;
        request.run_id = Some(BackupId::generate(chrono::Utc::now()).to_string());
        return backup_all(&services, &request, args.json).await;
    }
    let mut request = BackupRequest::new(target, args.kind);
    request.compression = args.compression;
    request.lease_ttl = args.lease_ttl();
    request.id = Some(BackupId::generate(chrono::Utc::now()));
    request.pg_bin = resolver.cli.pg_bin.clone();
    request.abandon_after = resolver.abandon_after;
    request.labels = labels;
    request.selection = selection;
    request.requested_by = Some(resolver.cli_user());
    request.jobs =
        pgkeep::config::jobs_or_setting(args.jobs, &crate::resolve::env, request.database_name())
            .map_err(ops::Error::from)?;
    backup(&services, &request, args.json, notifier.as_ref()).await
}

async fn backup(
    services: &Services,
    request: &BackupRequest,
    json: bool,
    notifier: &dyn Notifier,
) -> Result<u8, Failure> {
    let id = request.id.clone().expect("the command names its backup");
    let database = request.database_name().to_owned();
    let notice = |kind: AlertKind, why: &str| {
        Alert::new(kind, &database, Some(id.clone()), why, chrono::Utc::now())
    };
    // Earlier runs of this database that died (killed, crashed) are failed and alerted
    // first: nobody else would send their heartbeat's `/fail`.
    ops::reaper::reap_and_alert(
        services,
        Some(&database),
        chrono::Utc::now(),
        request.abandon_after,
        notifier,
    )
    .await;
    started_logged(notifier, RunKind::Backup, &database).await;
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(request.target.database(), progress.clone());

    let result = tokio::select! {
        r = ops::backup::backup(services, request, progress.clone()) => r,
        signal = pgkeep::signals::received() => {
            bar.finish();
            // Dropping the backup future killed pg_dump and discarded the partial object; the
            // record, any upload left and the lease are settled here.
            let why = format!("interrupted ({})", signal.name());
            match ops::backup::end_interrupted(services, request.database_name(), &id, &why).await {
                Ok(ops::backup::Ended::MarkedFailed) => {
                    eprintln!("pgkeep: {why}; backup {id} recorded as failed");
                    send_logged(notifier, &notice(AlertKind::BackupFailed, &why)).await;
                }
                Ok(ops::backup::Ended::AlreadyEnded(status)) => {
                    eprintln!("pgkeep: {why}; backup {id} had already ended ({status})");
                }
                Ok(ops::backup::Ended::NeverRecorded) => {
                    eprintln!("pgkeep: {why} before backup {id} started; nothing was recorded");
                }
                Err(e) => eprintln!("pgkeep: {why}; could not record it: {e}"),
            }
            return Ok(signal.exit_code());
        }
    };
    bar.finish();
    match result {
        Ok(record) => {
            send_logged(
                notifier,
                &notice(AlertKind::BackupOk, "the backup completed"),
            )
            .await;
            output::print(json, &record, || output::print_backup_done(&record));
            Ok(0)
        }
        Err(e) => {
            // Refused because another run holds the database: that run is the one that counts.
            if !matches!(e, ops::Error::LeaseHeld { .. }) {
                send_logged(notifier, &notice(AlertKind::BackupFailed, &e.to_string())).await;
            }
            if json {
                if let Ok(record) = services.catalog.get(&id).await {
                    output::print_json(&record);
                }
            }
            Err(failed(&e, format!("backup {id} failed: {e}")))
        }
    }
}

/// `--all-databases`: the run, its report, and a non-zero exit when any backup failed.
async fn backup_all(services: &Services, request: &RunRequest, json: bool) -> Result<u8, Failure> {
    let run_id = request.run_id.clone().expect("the command names its run");
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start_with("backing up", "the whole server", progress.clone());
    let result = tokio::select! {
        r = ops::server::backup_all(services, request, progress.clone()) => r,
        signal = pgkeep::signals::received() => {
            bar.finish();
            let why = format!("interrupted ({})", signal.name());
            match ops::server::end_interrupted_run(services, &run_id, &why).await {
                Ok(ended) => eprintln!("pgkeep: {why}; run {run_id}: {} backup(s) in progress recorded as failed", ended.len()),
                Err(e) => eprintln!("pgkeep: {why}; could not record it: {e}"),
            }
            return Ok(signal.exit_code());
        }
    };
    bar.finish();
    let report = result.map_err(|e| failed(&e, format!("run {run_id} failed: {e}")))?;
    output::print(json, &report, || output::print_run(&report));
    if report.role_passwords == Some(false) {
        eprintln!("pgkeep: role passwords were left out of the globals backup: the role cannot read pg_authid (pg_dumpall --no-role-passwords); set them again after restoring");
    }
    if report.ok() {
        Ok(0)
    } else {
        Err(Failure {
            code: 1,
            message: format!(
                "run {run_id}: {} of {} backups failed: {}",
                report.failed.len(),
                report.databases.len() + 1,
                report.failed.join(", ")
            ),
        })
    }
}
