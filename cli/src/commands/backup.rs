//! `pgkeep backup`: labels, selection and database checked before anything is touched, then
//! one backup with a progress bar; Ctrl-C records the run as failed.

use std::sync::Arc;

use pgkeep::backends::{KeyUse, Services};
use pgkeep::labels::Labels;
use pgkeep::model::BackupId;
use pgkeep::ops;
use pgkeep::ops::backup::BackupRequest;
use pgkeep::pipeline::Progress;
use pgkeep::selection::Selection;

use super::{failed, Failure, EXIT_INTERRUPTED};
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
    let mut request = BackupRequest::new(target, args.kind);
    request.compression = args.compression;
    request.lease_ttl = chrono::Duration::minutes(i64::from(args.lease_minutes));
    request.id = Some(BackupId::generate(chrono::Utc::now()));
    request.pg_bin = resolver.cli.pg_bin.clone();
    request.abandon_after = resolver.abandon_after;
    request.labels = labels;
    request.selection = selection;
    backup(&services, &request, args.json).await
}

async fn backup(services: &Services, request: &BackupRequest, json: bool) -> Result<u8, Failure> {
    let id = request.id.clone().expect("the command names its backup");
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(request.target.database(), progress.clone());

    let result = tokio::select! {
        r = ops::backup::backup(services, request, progress.clone()) => r,
        _ = tokio::signal::ctrl_c() => {
            bar.finish();
            // Dropping the backup future killed pg_dump and discarded the partial object.
            if let Err(e) = ops::backup::mark_failed(services, &id, "interrupted by the user").await {
                eprintln!("pgkeep: could not record the interruption: {e}");
            }
            eprintln!("pgkeep: interrupted; backup {id} recorded as failed");
            return Ok(EXIT_INTERRUPTED);
        }
    };
    bar.finish();
    match result {
        Ok(record) => {
            output::print(json, &record, || output::print_backup_done(&record));
            Ok(0)
        }
        Err(e) => {
            if json {
                if let Ok(record) = services.catalog.get(&id).await {
                    output::print_json(&record);
                }
            }
            Err(failed(&e, format!("backup {id} failed: {e}")))
        }
    }
}
