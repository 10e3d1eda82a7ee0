//! Restoring a whole-server run onto a server: the globals first, then every database.
//!
//! Plan, then execute, as for one database ([`super::restore`]). The plan reads the run's
//! backups from the catalog, picks the databases (`--only`/`--exclude` globs), refuses before
//! anything is written when a database exists on the target and was not named by `--overwrite
//! --confirm NAME`, and reads and splits the globals script ([`crate::globals`]). A dry run
//! stops there and also reads every picked database's object through `pg_restore --list`.
//!
//! Executing applies the globals statement by statement on the target: a role that already
//! exists there is kept exactly as it is (its `CREATE ROLE`, `ALTER ROLE`, `COMMENT ON ROLE`
//! and memberships granted to it are skipped and reported); a statement that fails (a
//! tablespace directory missing on the target, a privilege the restoring role lacks) is
//! reported and the rest goes on. Then each database is restored as one database is (into a
//! new database, renamed at the end; owners and grants of its objects kept, so the roles must
//! exist, which the globals saw to), and receives its owner, grants and settings from the
//! globals script. One database failing does not stop the others; the report names it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::restore::{check_intent, restore, RestoreAction, RestoreReport, RestoreRequest};
use super::Error;
use crate::backends::Services;
use crate::globals::{self, Statement};
use crate::model::{BackupId, BackupRecord, BackupStatus};
use crate::postgres::PgTarget;

/// A restore of a whole-server run.
#[derive(Debug, Clone)]
pub struct RunRestoreRequest {
    /// The run ([`BackupRecord::run_id`]).
    pub run_id: String,
    /// The server to restore onto (its database is used only to connect).
    pub server: PgTarget,
    /// Restore only databases matching one of these globs (all when empty).
    pub only: Vec<String>,
    /// Leave out databases matching one of these globs.
    pub exclude: Vec<String>,
    /// Replace databases that exist on the target, each only when also named in `confirm`.
    pub overwrite: bool,
    /// The existing databases to replace, typed again.
    pub confirm: Vec<String>,
    /// Plan and read everything; write nothing.
    pub dry_run: bool,
    /// pg_restore workers per database.
    pub jobs: u32,
    /// Where `jobs > 1` stages archives.
    pub staging_dir: Option<PathBuf>,
    /// Directory of the PostgreSQL client binaries.
    pub pg_bin: Option<PathBuf>,
    /// Who asks, for the audit trail.
    pub actor: String,
}

impl RunRestoreRequest {
    /// A restore of every database of `run_id` onto `server`, refusing existing databases.
    pub fn new(run_id: impl Into<String>, server: PgTarget) -> Self {
        RunRestoreRequest {
            run_id: run_id.into(),
            server,
            only: Vec::new(),
            exclude: Vec::new(),
            overwrite: false,
            confirm: Vec::new(),
            dry_run: false,
            jobs: 1,
            staging_dir: None,
            pg_bin: None,
            actor: "pgkeep".into(),
        }
    }
}

/// What the globals step did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GlobalsOutcome {
    /// The globals backup.
    pub backup_id: Option<BackupId>,
    /// Whether its script sets role passwords (else restored roles need theirs set again).
    pub role_passwords: bool,
    /// Roles created.
    pub roles_created: Vec<String>,
    /// Roles that already existed on the target and were left exactly as they were.
    pub roles_kept: Vec<String>,
    /// Statements run.
    pub statements_applied: usize,
    /// Statements left out because they would change an existing role, or concern a
    /// database not restored (described without their values).
    pub statements_skipped: Vec<String>,
    /// Statements the target refused, with its reason; the restore went on.
    pub statements_failed: Vec<StatementFailure>,
}

/// A statement the target refused.
#[derive(Debug, Clone, Serialize)]
pub struct StatementFailure {
    /// The statement, described without its values (no passwords).
    pub statement: String,
    /// The server's reason.
    pub error: String,
}

/// One database of the run and what happened to it.
#[derive(Debug, Clone, Serialize)]
pub struct RunDatabase {
    /// The database (restored under the same name).
    pub database: String,
    /// Its backup in the run.
    pub backup_id: BackupId,
    /// New, or replacing an existing one.
    pub action: Option<RestoreAction>,
    /// `planned` (dry run), `restored`, `failed`, or `unavailable` (its backup failed).
    pub outcome: String,
    /// Why it failed or is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Owner, grant and setting statements applied after the restore.
    pub settings_applied: usize,
    /// The single-database restore's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<RestoreReport>,
}

/// How a run's restore went.
#[derive(Debug, Clone, Serialize)]
pub struct RunRestoreReport {
    /// The run.
    pub run_id: String,
    /// The server, without password.
    pub server: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// The globals step.
    pub globals: GlobalsOutcome,
    /// The databases, in name order.
    pub databases: Vec<RunDatabase>,
    /// Databases not restored (failed, or unavailable in the run).
    pub failed: Vec<String>,
}

impl RunRestoreReport {
    /// Whether every picked database was restored (or, in a dry run, can be).
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Restores (or plans) a whole-server run. Refusals change nothing; see the module's text.
pub async fn restore_run(
    services: &Services,
    request: &RunRestoreRequest,
) -> Result<RunRestoreReport, Error> {
    let started_at = Utc::now();
    let members = super::server::run_members(services, &request.run_id).await?;
    let globals_record = members
        .iter()
        .filter(|r| r.globals.is_some() && r.status.has_object())
        .max_by(|a, b| a.start_order().cmp(&b.start_order()))
        .cloned()
        .ok_or_else(|| {
            Error::Config(crate::config::ConfigError::Missing(format!(
                "run {:?} has no usable globals backup (it failed or was deleted), so its roles cannot be restored; restore its databases one by one with `pgkeep restore ID --target-db NAME --no-owner`",
                request.run_id
            )))
        })?;

    // The newest backup of each picked database in the run.
    let mut picked: BTreeMap<String, BackupRecord> = BTreeMap::new();
    for r in members.iter().filter(|r| r.globals.is_none()) {
        if !globals::picked(&r.database, &request.only, &request.exclude) {
            continue;
        }
        match picked.get(&r.database) {
            Some(have) if have.start_order() >= r.start_order() => {}
            _ => {
                picked.insert(r.database.clone(), r.clone());
            }
        }
    }
    if picked.is_empty() {
        return Err(Error::Config(crate::config::ConfigError::Missing(format!(
            "no database of run {:?} matches --only {:?} --exclude {:?}",
            request.run_id, request.only, request.exclude
        ))));
    }

    // Refusals first, before anything is written.
    let client = admin_client(request, &picked).await?;
    let q = |e: tokio_postgres::Error| Error::Postgres(request.server.query_error(&e));
    let existing_dbs: BTreeSet<String> = client
        .query("SELECT datname::text FROM pg_catalog.pg_database", &[])
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (name, record) in &picked {
        if !record.status.has_object() {
            continue;
        }
        if existing_dbs.contains(name) {
            if !request.overwrite {
                return Err(Error::Confirmation(format!(
                    "database {name:?} already exists on {}: leave it out (--exclude {name:?}) or replace it with --overwrite --confirm {name:?}",
                    server_address(&request.server)
                )));
            }
            let confirm = request
                .confirm
                .iter()
                .find(|c| *c == name)
                .map(String::as_str);
            check_intent(name, true, confirm)?;
        } else {
            check_intent(name, false, None)?;
        }
    }

    let script = read_script(services, &globals_record.id).await?;
    let existing_roles: BTreeSet<String> = client
        .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut outcome = GlobalsOutcome {
        backup_id: Some(globals_record.id.clone()),
        role_passwords: globals_record
            .globals
            .as_ref()
            .is_some_and(|g| g.role_passwords),
        ..GlobalsOutcome::default()
    };
    let mut per_database: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for statement in globals::split(&script) {
        let kind = globals::classify(&statement);
        let skip = match &kind {
            Statement::CreateRole(role) if existing_roles.contains(role) => {
                if !outcome.roles_kept.contains(role) {
                    outcome.roles_kept.push(role.clone());
                }
                true
            }
            Statement::AlterRole(role) => existing_roles.contains(role),
            Statement::Membership { members, .. } => {
                members.iter().any(|m| existing_roles.contains(m))
            }
            Statement::Database(db) => {
                if picked.contains_key(db) {
                    per_database
                        .entry(db.clone())
                        .or_default()
                        .push(statement.clone());
                    continue;
                }
                true
            }
            _ => false,
        };
        if skip {
            outcome.statements_skipped.push(describe(&kind, &statement));
            continue;
        }
        if let Statement::CreateRole(role) = &kind {
            outcome.roles_created.push(role.clone());
        }
        if request.dry_run {
            continue;
        }
        match client.batch_execute(&statement).await {
            Ok(()) => outcome.statements_applied += 1,
            Err(e) => {
                if let Statement::CreateRole(role) = &kind {
                    outcome.roles_created.retain(|r| r != role);
                }
                outcome.statements_failed.push(StatementFailure {
                    statement: describe(&kind, &statement),
                    error: crate::postgres::describe(&e),
                });
            }
        }
    }

    let mut databases = Vec::new();
    let mut failed = Vec::new();
    for (name, record) in &picked {
        let mut db = RunDatabase {
            database: name.clone(),
            backup_id: record.id.clone(),
            action: None,
            outcome: String::new(),
            error: None,
            settings_applied: 0,
            report: None,
        };
        if !record.status.has_object() {
            db.outcome = "unavailable".into();
            db.error = Some(match &record.error {
                Some(e) => format!("its backup is {}: {e}", record.status),
                None => format!("its backup is {}", record.status),
            });
            failed.push(name.clone());
            databases.push(db);
            continue;
        }
        let replacing = existing_dbs.contains(name);
        let mut single = RestoreRequest::new(record.id.clone(), request.server.clone(), name);
        single.overwrite = replacing;
        single.confirm = replacing.then(|| name.clone());
        single.dry_run = request.dry_run;
        single.jobs = request.jobs;
        single.staging_dir = request.staging_dir.clone();
        single.pg_bin = request.pg_bin.clone();
        single.actor = request.actor.clone();
        if replacing {
            single.safety_backup_id = Some(BackupId::generate(Utc::now()));
        }
        match restore(services, &single).await {
            Ok(mut report) => {
                db.action = Some(report.action);
                report.listing = None;
                db.report = Some(report);
                db.outcome = if request.dry_run {
                    "planned".into()
                } else {
                    "restored".into()
                };
            }
            Err(e) => {
                db.outcome = "failed".into();
                db.error = Some(e.to_string());
                failed.push(name.clone());
                databases.push(db);
                continue;
            }
        }
        for statement in per_database.remove(name).unwrap_or_default() {
            if request.dry_run {
                continue;
            }
            let kind = globals::classify(&statement);
            match client.batch_execute(&statement).await {
                Ok(()) => db.settings_applied += 1,
                Err(e) => outcome.statements_failed.push(StatementFailure {
                    statement: describe(&kind, &statement),
                    error: crate::postgres::describe(&e),
                }),
            }
        }
        databases.push(db);
    }
    Ok(RunRestoreReport {
        run_id: request.run_id.clone(),
        server: server_address(&request.server),
        dry_run: request.dry_run,
        started_at,
        finished_at: Utc::now(),
        globals: outcome,
        databases,
        failed,
    })
}

/// A connection to the target server on a database the restore does not replace.
async fn admin_client(
    request: &RunRestoreRequest,
    picked: &BTreeMap<String, BackupRecord>,
) -> Result<tokio_postgres::Client, Error> {
    let mut target = request.server.clone();
    for candidate in ["postgres", "template1"] {
        if !picked.contains_key(target.database()) {
            break;
        }
        target = request.server.with_database(candidate);
    }
    Ok(target.connect().await?)
}

/// The whole globals script of backup `id`, checked to its end (checksum, every chunk).
pub async fn read_script(services: &Services, id: &BackupId) -> Result<String, Error> {
    let (record, mut stream) = super::read::open_archive(services, id).await?;
    if record.globals.is_none() {
        return Err(Error::Unusable {
            id: record.id,
            status: record.status,
            why: "it is not a globals backup".into(),
        });
    }
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Error::from_read("reading the globals backup", e))?;
    String::from_utf8(bytes).map_err(|e| Error::Io {
        context: "reading the globals script",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// A statement for reports: what it is and whom it concerns, never its values (passwords).
fn describe(kind: &Statement, statement: &str) -> String {
    match kind {
        Statement::CreateRole(r) => format!("CREATE ROLE {}", crate::model::quote_ident(r)),
        Statement::AlterRole(r) => format!("ALTER ROLE {}", crate::model::quote_ident(r)),
        Statement::Membership { roles, members } => {
            format!("GRANT {} TO {}", roles.join(", "), members.join(", "))
        }
        Statement::Database(db) => {
            let words: Vec<&str> = statement.split_whitespace().take(3).collect();
            format!("{} … (database {db})", words.join(" "))
        }
        Statement::Session | Statement::Other => {
            let head: String = statement
                .split(['\'', '$'])
                .next()
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect();
            head.trim().to_owned()
        }
    }
}

fn server_address(target: &PgTarget) -> String {
    let url = target.redacted();
    match url
        .strip_prefix("postgresql://")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((authority, _)) => format!("postgresql://{authority}"),
        None => url,
    }
}

/// Whether `status` leaves a run member restorable (for callers listing a run).
pub fn restorable(status: BackupStatus) -> bool {
    status.has_object()
}
