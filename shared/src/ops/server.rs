//! The whole server in one run: every database as its own backup, plus one globals backup.
//!
//! `backup --all-databases` finds the server's databases (`pg_database`: not templates,
//! `datallowconn`, then `--include`/`--exclude` globs), takes the globals backup first (roles,
//! memberships, role settings and tablespaces from `pg_dumpall --globals-only`, then each
//! picked database's owner, grants and settings: see [`crate::globals`]) and then one normal
//! backup per database, all carrying one run id ([`BackupRecord::run_id`]). Each backup is an
//! ordinary backup with its own record, lease and failure: one database failing fails only its
//! record, and the run's report names it. A role that cannot read `pg_authid` (an RDS or
//! Aurora master user) gets a globals script without role passwords, and the record says so
//! ([`GlobalsInfo::role_passwords`]).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::backup::{backup, BackupRequest};
use super::Error;
use crate::backends::Services;
use crate::catalog::ListQuery;
use crate::globals::{self, DatabaseGlobals, DatabaseGrant};
use crate::labels::Labels;
use crate::model::{
    BackupId, BackupKind, BackupRecord, BackupStatus, CompressionChoice, GlobalsInfo, RoleInfo,
    GLOBALS_NAME,
};
use crate::pipeline::crypt::Header;
use crate::pipeline::pg_dump::PgDump;
use crate::pipeline::{store_bytes, Progress, StreamOptions};
use crate::postgres::{locate_tool, server_version, PgTarget};
use crate::retention::Span;

/// The largest globals script read (roles and settings only; far beyond any real server).
const MAX_GLOBALS_BYTES: u64 = 256 << 20;

/// A whole-server run: what to back up and how.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// A connection to the server (its database is used only to connect and for the globals).
    pub server: PgTarget,
    /// Back up only databases matching one of these globs (all when empty).
    pub include: Vec<String>,
    /// Leave out databases matching one of these globs.
    pub exclude: Vec<String>,
    /// Why the backups are taken.
    pub kind: BackupKind,
    /// Compression inside the encryption, and its level.
    pub compression: CompressionChoice,
    /// Directory of the PostgreSQL client binaries; searched when `None`.
    pub pg_bin: Option<std::path::PathBuf>,
    /// Labels put on every backup of the run.
    pub labels: Labels,
    /// The heartbeat timeout of each backup's lease.
    pub lease_ttl: chrono::Duration,
    /// In-progress runs older than this are reaped first.
    pub abandon_after: Span,
    /// A pre-allocated run id (so a caller can settle the run if interrupted), or a fresh one.
    pub run_id: Option<String>,
    /// The configured name of the connection (a Lambda deployment's `PGKEEP_DATABASES` name),
    /// recorded so the run's backups are verified on that server.
    pub connection: Option<String>,
}

impl RunRequest {
    /// A run over every database of `server` with the defaults.
    pub fn new(server: PgTarget, kind: BackupKind) -> Self {
        RunRequest {
            server,
            include: Vec::new(),
            exclude: Vec::new(),
            kind,
            compression: CompressionChoice::default(),
            pg_bin: None,
            labels: Labels::none(),
            lease_ttl: super::backup::DEFAULT_LEASE_TTL,
            abandon_after: super::reaper::DEFAULT_ABANDON_AFTER,
            run_id: None,
            connection: None,
        }
    }

    fn backup_request(&self, target: PgTarget, run_id: &str) -> BackupRequest {
        let mut request = BackupRequest::new(target, self.kind);
        request.compression = self.compression;
        request.pg_bin = self.pg_bin.clone();
        request.labels = self.labels.clone();
        request.lease_ttl = self.lease_ttl;
        request.abandon_after = self.abandon_after;
        request.run_id = Some(run_id.to_owned());
        request.id = Some(BackupId::generate(Utc::now()));
        request
    }
}

/// One backup of a run, as the run's report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunMember {
    /// The database (or [`GLOBALS_NAME`] for the globals backup).
    pub database: String,
    /// Its backup.
    pub backup_id: BackupId,
    /// How it ended: `completed` or `failed`.
    pub status: BackupStatus,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// How a whole-server run went.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id, on every backup of it.
    pub run_id: String,
    /// The server, without password.
    pub server: String,
    /// When the run started and ended.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// The globals backup.
    pub globals: RunMember,
    /// Whether the globals hold role passwords (`false`: the role could not read pg_authid).
    pub role_passwords: Option<bool>,
    /// One backup per database, in name order.
    pub databases: Vec<RunMember>,
    /// The backups that failed (databases by name, `@globals` for the globals).
    pub failed: Vec<String>,
}

impl RunReport {
    /// Whether every backup of the run completed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// The server's databases a run backs up: not templates, accepting connections, picked by the
/// globs, in name order.
pub async fn discover(
    server: &PgTarget,
    include: &[String],
    exclude: &[String],
) -> Result<Vec<String>, Error> {
    let client = server.connect().await?;
    let rows = client
        .query(
            "SELECT datname::text FROM pg_catalog.pg_database \
             WHERE NOT datistemplate AND datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| server.query_error(&e))?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|name| globals::picked(name, include, exclude))
        .collect())
}

/// Runs a whole-server backup: the globals, then every picked database, each its own backup.
/// Fails only when the server cannot be listed; failures of single backups are in the report.
pub async fn backup_all(
    services: &Services,
    request: &RunRequest,
    progress: Arc<Progress>,
) -> Result<RunReport, Error> {
    let started_at = Utc::now();
    let run_id = request
        .run_id
        .clone()
        .unwrap_or_else(|| BackupId::generate(started_at).to_string());
    let databases = discover(&request.server, &request.include, &request.exclude).await?;
    if databases.is_empty() {
        return Err(Error::Config(crate::config::ConfigError::Missing(format!(
            "no database on {} matches --include {:?} --exclude {:?} (templates and databases that refuse connections are never backed up)",
            request.server.redacted(),
            request.include,
            request.exclude
        ))));
    }
    tracing::info!(run = %run_id, databases = databases.len(), "whole-server run started");
    let mut failed = Vec::new();

    let mut globals_request = request.backup_request(request.server.clone(), &run_id);
    globals_request.database_name = Some(GLOBALS_NAME.to_owned());
    globals_request.globals = Some(databases.clone());
    globals_request.connection = request.connection.clone();
    let globals = member(
        services,
        GLOBALS_NAME,
        &globals_request,
        backup(services, &globals_request, progress.clone()).await,
    )
    .await;
    let role_passwords = match &globals.1 {
        Some(r) => r.globals.as_ref().map(|g| g.role_passwords),
        None => None,
    };
    let globals = globals.0;
    if globals.status == BackupStatus::Failed {
        failed.push(GLOBALS_NAME.to_owned());
    }

    let mut members = Vec::new();
    for database in &databases {
        let request_db = request.backup_request(request.server.with_database(database), &run_id);
        let result = if database == GLOBALS_NAME {
            Err(Error::Config(crate::config::ConfigError::Missing(format!(
                "database {GLOBALS_NAME:?} cannot be backed up in a whole-server run: its name is the one the run's globals backup is recorded under; back it up on its own under another name"
            ))))
        } else {
            backup(services, &request_db, progress.clone()).await
        };
        let (m, _) = member(services, database, &request_db, result).await;
        if m.status == BackupStatus::Failed {
            failed.push(database.clone());
        }
        members.push(m);
    }
    Ok(RunReport {
        run_id,
        server: server_address(&request.server),
        started_at,
        finished_at: Utc::now(),
        globals,
        role_passwords,
        databases: members,
        failed,
    })
}

/// The report line of one backup of a run; a failure is logged, never returned.
async fn member(
    services: &Services,
    database: &str,
    request: &BackupRequest,
    result: Result<BackupRecord, Error>,
) -> (RunMember, Option<BackupRecord>) {
    let id = request.id.clone().expect("run members have ids");
    match result {
        Ok(record) => (
            RunMember {
                database: database.to_owned(),
                backup_id: record.id.clone(),
                status: record.status,
                error: None,
                size_bytes: record.size_bytes,
            },
            Some(record),
        ),
        Err(e) => {
            tracing::error!(database, backup = %id, error = %e, "a backup of the run failed; the run goes on");
            let recorded = services.catalog.get(&id).await.ok();
            (
                RunMember {
                    database: database.to_owned(),
                    backup_id: id,
                    status: BackupStatus::Failed,
                    error: Some(e.to_string()),
                    size_bytes: None,
                },
                recorded,
            )
        }
    }
}

/// The configured connection a run's backups were taken through (its globals backup says),
/// when the run named one.
pub async fn run_connection(services: &Services, run_id: &str) -> Result<Option<String>, Error> {
    Ok(run_members(services, run_id)
        .await?
        .into_iter()
        .find_map(|r| r.globals.and_then(|g| g.connection)))
}

/// Every backup of run `run_id`, newest first; [`Error::UnknownRun`] when there is none.
pub async fn run_members(services: &Services, run_id: &str) -> Result<Vec<BackupRecord>, Error> {
    let records = super::list::list_all(
        services,
        &ListQuery {
            run_id: Some(run_id.to_owned()),
            ..ListQuery::default()
        },
    )
    .await?;
    if records.is_empty() {
        return Err(Error::UnknownRun(run_id.to_owned()));
    }
    Ok(records)
}

/// Settles a run that was interrupted: each of its backups still in progress is recorded as
/// failed with `why` and its leftovers removed ([`super::backup::end_interrupted`]).
pub async fn end_interrupted_run(
    services: &Services,
    run_id: &str,
    why: &str,
) -> Result<Vec<BackupId>, Error> {
    let records = super::list::list_all(
        services,
        &ListQuery {
            run_id: Some(run_id.to_owned()),
            status: Some(BackupStatus::InProgress),
            ..ListQuery::default()
        },
    )
    .await?;
    let mut ended = Vec::new();
    for r in records {
        super::backup::end_interrupted(services, &r.database, &r.id, why).await?;
        ended.push(r.id);
    }
    Ok(ended)
}

/// `postgresql://user@host:port`: the server without database or password.
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

/// Takes the globals backup of a run into `record` (called by [`super::backup`] under the
/// lease of [`GLOBALS_NAME`]): pg_dumpall's globals, the databases' owners, grants and
/// settings, stored and described like any backup.
pub(crate) async fn store_globals(
    services: &Services,
    request: &BackupRequest,
    record: &mut BackupRecord,
    databases: &[String],
    started: Instant,
) -> Result<(), Error> {
    let target = &request.target;
    let client = target.connect().await?;
    let version = server_version(target, &client).await?;
    record.server_version = Some(version.text.clone());
    let q = |e: tokio_postgres::Error| Error::Postgres(target.query_error(&e));

    let passwords: bool = client
        .query_one(
            "SELECT pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT')",
            &[],
        )
        .await
        .map_err(q)?
        .get(0);
    if !passwords {
        tracing::warn!(backup = %record.id, "the role cannot read pg_authid: role passwords are left out of the globals (pg_dumpall --no-role-passwords)");
    }
    let roles = read_roles(&client).await.map_err(q)?;
    let dbs = read_database_globals(&client, databases).await.map_err(q)?;

    let pg_dumpall = locate_tool("pg_dumpall", request.pg_bin.as_deref(), version.major).await?;
    let mut cmd = tokio::process::Command::new(&pg_dumpall);
    cmd.args(["--globals-only", "--no-password", "--database"])
        .arg(target.database());
    if !passwords {
        cmd.arg("--no-role-passwords");
    }
    target
        .apply_env(&mut cmd)
        .map_err(|e| Error::Postgres(crate::postgres::PgError::Auth(e.to_string())))?;
    let (dump, stdout) = PgDump::spawn_command(cmd)?;
    let mut dumped = Vec::new();
    let read = stdout
        .take(MAX_GLOBALS_BYTES)
        .read_to_end(&mut dumped)
        .await;
    dump.finish().await?;
    read.map_err(|source| Error::Io {
        context: "reading pg_dumpall's output",
        source,
    })?;
    let dumpall = String::from_utf8_lossy(&dumped).into_owned();
    let header_text = format!(
        "pgkeep globals of {}, run {}\nrole passwords: {}\n",
        server_address(target),
        request.run_id.as_deref().unwrap_or("-"),
        if passwords {
            "included"
        } else {
            "left out (the backing-up role cannot read pg_authid: pg_dumpall --no-role-passwords); set them again after a restore"
        }
    );
    let script = globals::script(&header_text, &dumpall, &dbs);
    let statements = globals::split(&script).len() as u64;

    let (data_key, fields) = super::backup::new_data_key(services, record).await?;
    let header = Header::new(fields, request.chunk_size).map_err(|e| Error::Integrity(e.into()))?;
    let upload = services.store.create(&record.object_key).await?;
    let (sha256, size) = store_bytes(
        script.as_bytes(),
        upload,
        header,
        &data_key.key,
        StreamOptions {
            compression: request.compression,
            zstd_workers: request.zstd_workers,
        },
    )
    .await?;
    record.size_bytes = Some(size);
    record.sha256 = Some(sha256);
    record.globals = Some(GlobalsInfo {
        role_passwords: passwords,
        roles,
        databases: databases.to_vec(),
        statements,
        connection: request.connection.clone(),
    });
    super::backup::publish_manifest(
        services,
        record,
        started,
        request.chunk_size,
        &data_key,
        crate::model::ArchiveInfo {
            format: GLOBALS_FORMAT.into(),
            archive_version: String::new(),
            dump_version: format!("pg_dumpall {}", version.major),
            archive_bytes: script.len() as u64,
            tables: Vec::new(),
            schema_only_tables: Vec::new(),
            large_objects: 0,
        },
    )
    .await
}

/// The manifest's `archive.format` of a globals backup (a plain SQL script).
pub const GLOBALS_FORMAT: &str = "sql globals script";

/// The server's roles (the predefined `pg_*` roles aside) with attributes and memberships.
pub(crate) async fn read_roles(
    client: &tokio_postgres::Client,
) -> Result<Vec<RoleInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT r.rolname::text, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, \
                    r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit, \
                    ARRAY(SELECT DISTINCT g.rolname::text FROM pg_catalog.pg_auth_members m \
                          JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
                          WHERE m.member = r.oid ORDER BY 1) \
             FROM pg_catalog.pg_roles r WHERE r.rolname !~ '^pg_' ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RoleInfo {
            name: r.get(0),
            superuser: r.get(1),
            inherit: r.get(2),
            createrole: r.get(3),
            createdb: r.get(4),
            login: r.get(5),
            replication: r.get(6),
            bypassrls: r.get(7),
            connection_limit: r.get(8),
            member_of: r.get(9),
        })
        .collect())
}

/// Owner, privileges and settings of `databases`, as `pg_dump --create` would carry them.
async fn read_database_globals(
    client: &tokio_postgres::Client,
    databases: &[String],
) -> Result<Vec<DatabaseGlobals>, tokio_postgres::Error> {
    let names: Vec<&str> = databases.iter().map(String::as_str).collect();
    let mut out: Vec<DatabaseGlobals> = client
        .query(
            "SELECT datname::text, pg_catalog.pg_get_userbyid(datdba)::text, datacl IS NULL \
             FROM pg_catalog.pg_database WHERE datname = ANY($1) ORDER BY 1",
            &[&names],
        )
        .await?
        .iter()
        .map(|r| DatabaseGlobals {
            name: r.get(0),
            owner: r.get(1),
            grants: if r.get::<_, bool>(2) {
                None
            } else {
                Some(Vec::new())
            },
            settings: Vec::new(),
        })
        .collect();
    let grants = client
        .query(
            "SELECT d.datname::text, \
                    CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, \
                    a.privilege_type::text, a.is_grantable \
             FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a \
             WHERE d.datname = ANY($1) ORDER BY 1, 2 NULLS FIRST, 3",
            &[&names],
        )
        .await?;
    for r in &grants {
        let name: String = r.get(0);
        if let Some(db) = out.iter_mut().find(|d| d.name == name) {
            db.grants.get_or_insert_with(Vec::new).push(DatabaseGrant {
                grantee: r.get(1),
                privilege: r.get(2),
                grantable: r.get(3),
            });
        }
    }
    let settings = client
        .query(
            "SELECT d.datname::text, \
                    CASE WHEN s.setrole = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(s.setrole)::text END, \
                    c.config \
             FROM pg_catalog.pg_db_role_setting s \
             JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase, \
                  unnest(s.setconfig) WITH ORDINALITY AS c(config, n) \
             WHERE d.datname = ANY($1) ORDER BY 1, 2 NULLS FIRST, c.n",
            &[&names],
        )
        .await?;
    for r in &settings {
        let name: String = r.get(0);
        if let Some(db) = out.iter_mut().find(|d| d.name == name) {
            db.settings.push((r.get(1), r.get(2)));
        }
    }
    Ok(out)
}
