//! The command line: every flag and subcommand, and nothing else. The settings shared with the
//! Lambda functions are the library's settings types (`pgkeep::config`), flattened here under
//! help headings; turning them into library values is `resolve.rs`'s job.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use pgkeep::config::{
    AbandonSettings, ActorSettings, AwsOptions, BackendSettings, DatabaseSettings, HealthSettings,
    RetentionSettings,
};
use pgkeep::labels::LabelSelector;
use pgkeep::model::{BackupKind, BackupStatus, CompressionChoice};
use pgkeep::retention::Span;

#[derive(Parser, Debug)]
#[command(
    name = "pgkeep",
    version,
    about = "Streaming, encrypted, verified PostgreSQL backups",
    long_about = "Streaming, encrypted, verified PostgreSQL backups.\n\n\
        pg_dump's archive is compressed (zstd or gzip), encrypted with a fresh AES-256-GCM key \
        per backup, checksummed and stored with a manifest of exact row counts. The embedded \
        default needs no AWS account: a repository directory with its own catalog, and a key \
        file kept outside it.",
    after_help = "Exit codes: 0 ok, 1 unexpected, 2 bad usage or configuration, 3 integrity failure, \
        4 not found, 5 key problem, 6 database problem, 7 storage problem, 8 conflicting state, \
        9 verification found differences, 10 missing database privilege, 11 unhealthy (status),
        130 interrupted (SIGINT), 143 terminated (SIGTERM)."
)]
pub struct Cli {
    /// Repository, catalog and master key.
    #[command(flatten, next_help_heading = "Repository")]
    pub backends: BackendSettings,

    /// The database and how to reach it.
    #[command(flatten, next_help_heading = "Database")]
    pub database: DatabaseSettings,

    /// Directories holding pg_dump/pg_restore, `:`-separated; the server's major wins, else the newest newer [default: /usr/lib/postgresql/*/bin, then PATH].
    #[arg(
        long,
        env = "PGKEEP_PG_BIN",
        global = true,
        value_name = "DIRS",
        help_heading = "Database"
    )]
    pub pg_bin: Option<PathBuf>,

    /// AWS endpoint and S3 options.
    #[command(flatten, next_help_heading = "AWS")]
    pub aws: AwsOptions,

    /// When runs are abandoned.
    #[command(flatten, next_help_heading = "Behaviour")]
    pub abandon: AbandonSettings,

    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Behaviour")]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Back up the database named by --database-url or --database-secret-arn.
    ///
    /// --schema, --exclude-schema, --table, --exclude-table and --exclude-table-data take
    /// pg_dump's patterns (psql patterns: `*`, `?`, `schema.table`, "Quoted"."Names"), each
    /// repeatable; without them the whole database is backed up. The selection is recorded in
    /// the manifest, and `verify` compares only what was selected.
    Backup(BackupArgs),
    /// List backups, newest first.
    List(ListArgs),
    /// Show one backup in full, with its row counts.
    Show(ShowArgs),
    /// Summarise each database's health: newest good backup and its age, verification,
    /// failures. Exits 11 when a database is unhealthy (or the catalog is empty), for cron and
    /// monitoring agents.
    Status(StatusArgs),
    /// Delete backups the retention policy does not keep (restic's forget semantics, per
    /// database), mark abandoned runs failed, and finish deletions a crash interrupted.
    ///
    /// The newest verified backup of a database and backups in progress are never deleted.
    /// Records of deleted backups stay in the catalog as history.
    Prune(PruneArgs),
    /// Delete one backup: its object and manifest are removed, its record stays as `deleted`
    /// history, and the audit trail names who did it. Refused (exit 8, nothing changed, the
    /// message starts with `refused: REASON:`) for the newest verified backup of a database
    /// (newest_verified), a backup in progress (in_progress) and an object under S3 Object
    /// Lock (object_locked).
    Delete(DeleteArgs),
    /// Write the original pg_dump archive (decrypted, decompressed, authenticated) to stdout
    /// or a file, e.g. `pgkeep cat ID | pg_restore -d newdb`. A parallel backup (backup
    /// --jobs) comes out as one archive merged from its parts: piped, pg_restore reads it in
    /// order; with -o FILE its data offsets are filled in, so `pg_restore -j N FILE` works.
    Cat(CatArgs),
    /// Prove a backup: restore it into a scratch database, compare every table's row count
    /// with the manifest and the objects with the archive, drop the scratch database, and
    /// record `verified` or `verification_failed`.
    Verify(VerifyArgs),
    /// Restore a backup into a new database on the --database-url server, or replace an
    /// existing one (after a safety backup) with --overwrite --confirm NAME.
    Restore(RestoreArgs),
    /// Rebuild or complete the catalog from the repository: every backup's manifest (and its
    /// state object, which carries verification, deletion and failure) becomes a record with
    /// its latest state. Records the catalog holds further along are kept; objects without a
    /// manifest and manifests without their object are reported and left alone (unless
    /// --remove-strays). Safe to run again: a second run changes nothing.
    Repair(RepairArgs),
    /// Dismiss a database whose every backup failed (a typo in --database-url): its records
    /// and lapsed lease are removed from the catalog, so `status` no longer lists it; the
    /// audit trail names who did it. Refused (exit 8, nothing changed) when any record of it
    /// is or was a real backup (they are named), and while a run holds its lease.
    Forget(ForgetArgs),
    /// Prepare an AWS setup without Terraform: check the KMS key (DescribeKey) and the bucket
    /// (HeadBucket), writing nothing to either, then create the DynamoDB catalog table exactly
    /// as Terraform does (indexes, on-demand billing, TTL, point-in-time recovery, deletion
    /// protection, encrypted with the KMS key), or check that an existing one matches.
    /// Running it again changes nothing. After a lost table: `pgkeep init`, then `pgkeep repair`.
    Init(InitArgs),
    /// Key files: which key a backup needs (`pgkeep key id FILE` prints the id manifests show).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show the audit trail, newest first: who restored, verified, deleted, pruned or forgot
    /// what, when, and how it ended.
    Audit(AuditArgs),
    /// List restores and dry runs, newest first (local ones and those asked for through the
    /// status API): state, target, duration, safety backup, error.
    Restores(RestoresArgs),
    /// Write the backup history page: one self-contained HTML file (no scripts, fonts or
    /// anything fetched) with each database's health, newest good and verified backups, a
    /// timeline, size / duration / restore-time charts over 90 days, recent failures,
    /// restores and the audit trail. The status API serves the same page at GET /dashboard.
    Report(ReportArgs),
    /// Run one job of the Lambda functions here, as their Fargate task does: the job is JSON
    /// `{"function": "dump"|"verify"|"prune", "event": <that function's event>}` from
    /// PGKEEP_JOB (or --event), and the settings are the functions' own (PGKEEP_DATABASES,
    /// PGKEEP_REPO, PGKEEP_CATALOG, PGKEEP_KEY, ...). Prints the function's JSON outcome;
    /// a failure exits non-zero after recording and alerting it as the function would.
    /// SIGTERM ends a backup as failed, its upload aborted and its lease released (exit 143).
    Job(JobArgs),
}

#[derive(Args, Debug)]
pub struct JobArgs {
    /// Read the job from FILE (`-`: stdin) instead of PGKEEP_JOB.
    #[arg(long, value_name = "PATH|-")]
    pub event: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Write the page to FILE (created 0600, replaced only when complete).
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    /// What "healthy" means (as for `pgkeep status`).
    #[command(flatten)]
    pub health: HealthSettings,
    /// Report as of this time (RFC 3339) instead of now.
    #[arg(long, hide = true, value_parser = parse_time)]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Args, Debug)]
pub struct RestoresArgs {
    /// At most this many [default: 50].
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only this restore, in full (a dry run's archive listing included).
    #[arg(long, value_name = "RESTORE-ID")]
    pub id: Option<String>,
    /// JSON on stdout: an array of restores (with --id, that one restore).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only entries about this database.
    #[arg(long)]
    pub database: Option<String>,
    /// Only entries since this long ago (7d, 12h) or since this RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// At most this many entries.
    #[arg(long)]
    pub limit: Option<usize>,
    /// JSON array of entries on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// What was checked and created, as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Print a key file's id exactly as manifests and records show it (`key_id`), to find the
    /// key file a backup needs; without FILE, the configured key file (--key-file), or for a
    /// KMS key (--key kms://…) its ARN, as manifests name it (KMS DescribeKey).
    Id(KeyIdArgs),
}

#[derive(Args, Debug)]
pub struct KeyIdArgs {
    /// The key file [default: the configured key file].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// {"path", "key_id"} (a KMS key: {"key", "key_id"}) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Compression inside the encryption, with an optional level as in pg_dump's --compress:
    /// zstd (level 3), zstd:1 to zstd:9, gzip (level 6), gzip:1 to gzip:9. A lower level
    /// takes less CPU for a larger backup (docs/OPERATIONS.md, "Compression level").
    #[arg(
        long,
        env = "PGKEEP_COMPRESSION",
        default_value = "zstd",
        value_parser = parse_compression,
        value_name = "ALGORITHM[:LEVEL]"
    )]
    pub compression: CompressionChoice,
    /// Why the backup is taken: manual, scheduled or pre-migration.
    #[arg(long, default_value = "manual", value_parser = parse_kind)]
    pub kind: BackupKind,
    /// Put this label on the backup (repeatable): KEY=VALUE, keys of a-z 0-9 _ . - (at most
    /// 63), values up to 255 characters.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Back up only schemas matching PATTERN (repeatable; an unknown name fails the backup).
    #[arg(long = "schema", value_name = "PATTERN")]
    pub schemas: Vec<String>,
    /// Leave out schemas matching PATTERN (repeatable).
    #[arg(long = "exclude-schema", value_name = "PATTERN")]
    pub exclude_schemas: Vec<String>,
    /// Back up only tables matching PATTERN (repeatable; then functions and other
    /// non-table objects are left out, as with pg_dump --table).
    #[arg(long = "table", value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Leave out tables matching PATTERN (repeatable).
    #[arg(long = "exclude-table", value_name = "PATTERN")]
    pub exclude_tables: Vec<String>,
    /// Keep the definition of tables matching PATTERN but not their rows (repeatable).
    #[arg(long = "exclude-table-data", value_name = "PATTERN")]
    pub exclude_table_data: Vec<String>,
    /// Print the final record as JSON on stdout (also when the backup fails); with
    /// --all-databases, the run's report.
    #[arg(long)]
    pub json: bool,
    /// Dump with N parallel pg_dump streams from one snapshot (1-32): a schema object and up
    /// to N data parts, restored in parallel. 1 writes one object [default: the database's
    /// entry in PGKEEP_JOBS, a JSON object like {"shop": 4}, else 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub jobs: Option<u32>,
    /// Back up the whole server: every database (not templates, accepting connections) as its
    /// own backup, plus one globals backup (roles, memberships, tablespaces, each database's
    /// owner, grants and settings), all under one run id. The database URL's database is used
    /// only to connect.
    #[arg(long, conflicts_with_all = ["schemas", "exclude_schemas", "tables", "exclude_tables", "exclude_table_data"])]
    pub all_databases: bool,
    /// With --all-databases: back up only databases whose name matches GLOB (`*`, `?`;
    /// repeatable).
    #[arg(long = "include", value_name = "GLOB", requires = "all_databases")]
    pub include: Vec<String>,
    /// With --all-databases: leave out databases whose name matches GLOB (repeatable).
    #[arg(long = "exclude", value_name = "GLOB", requires = "all_databases")]
    pub exclude: Vec<String>,
    /// Heartbeat timeout of this run's lock on the database (e.g. 30s, 2m): the run renews it
    /// every quarter of this while alive; if the run dies, another backup may start after at
    /// most this long (at once on the same host) [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_span, conflicts_with = "lease_minutes")]
    pub lease_timeout: Option<Span>,
    /// The heartbeat timeout in whole minutes (the older spelling of --lease-timeout).
    #[arg(long, hide = true, value_name = "MINUTES", value_parser = clap::value_parser!(u32).range(1..))]
    pub lease_minutes: Option<u32>,
}

impl BackupArgs {
    /// The heartbeat timeout: --lease-timeout, else --lease-minutes, else the default.
    pub fn lease_ttl(&self) -> chrono::Duration {
        match (self.lease_timeout, self.lease_minutes) {
            (Some(span), _) => span.as_delta(),
            (None, Some(minutes)) => chrono::Duration::minutes(i64::from(minutes)),
            (None, None) => pgkeep::ops::backup::DEFAULT_LEASE_TTL,
        }
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this database.
    #[arg(long)]
    pub database: Option<String>,
    /// Only this status.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<BackupStatus>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only backups carrying this label: KEY (any value) or KEY=VALUE.
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub label: Option<LabelSelector>,
    /// Only backups of this kind: scheduled, manual, pre-restore or pre-migration.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<BackupKind>,
    /// Only the backups of this whole-server run (`backup --all-databases`).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// JSON array of records on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Backup id (from `pgkeep list`).
    pub id: String,
    /// The record as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// What "healthy" means.
    #[command(flatten)]
    pub health: HealthSettings,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Assess as of this time (RFC 3339) instead of now.
    #[arg(long, hide = true, value_parser = parse_time)]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Print what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The policy.
    #[command(flatten, next_help_heading = "Retention")]
    pub retention: RetentionSettings,
    /// Only this database.
    #[arg(long, help_heading = "Options")]
    pub database: Option<String>,
    /// Who is pruning, for the audit trail.
    #[command(flatten, next_help_heading = "Options")]
    pub actor: ActorSettings,
    /// The plan (and what was done) as JSON on stdout.
    #[arg(long, help_heading = "Options")]
    pub json: bool,
    /// The staging directory of `restore --jobs`, swept for the files of killed restores
    /// [default: the system temp directory].
    #[arg(
        long,
        env = "PGKEEP_STAGING_DIR",
        value_name = "DIR",
        help_heading = "Options"
    )]
    pub staging_dir: Option<PathBuf>,
    /// Decide as of this time (RFC 3339); only with --dry-run.
    #[arg(long, hide = true, value_parser = parse_time, requires = "dry_run")]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Backup id (from `pgkeep list`).
    pub id: String,
    /// Who is deleting, for the audit trail.
    #[command(flatten)]
    pub actor: ActorSettings,
    /// The deleted record as JSON on stdout; a refusal prints {"id", "deleted": false,
    /// "reason", "error"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The database, as `pgkeep status` prints it.
    pub database: String,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Who is forgetting, for the audit trail.
    #[command(flatten)]
    pub actor: ActorSettings,
    /// JSON on stdout: {"database", "dry_run", "records", "lease"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// Backup id.
    #[arg(required_unless_present = "manifest")]
    pub id: Option<String>,
    /// Read straight from a manifest, with no catalog: a file or s3://bucket/key ending in
    /// .manifest.json; the object is the <id>.pgkeep beside it (and a parallel backup's parts
    /// the <id>.data-<n>.pgkeep). Needs only the key (and --old-key-file for older keys).
    #[arg(long, value_name = "PATH|S3-URL", conflicts_with = "id")]
    pub manifest: Option<String>,
    /// Write to this file instead of stdout (it appears only when complete and intact).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Backup id [default: the newest completed backup not yet verified].
    pub id: Option<String>,
    /// Scratch server: postgresql://user@host:port/dbname (any existing database; the role
    /// needs CREATEDB) [default: the --database-url server].
    #[arg(
        long,
        env = "PGKEEP_SCRATCH_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub scratch_url: Option<String>,
    /// Who is verifying, for the audit trail.
    #[command(flatten)]
    pub actor: ActorSettings,
    /// Print the record with its verification as JSON on stdout (also when it fails).
    #[arg(long)]
    pub json: bool,
    /// pg_restore workers for the indexes and constraints of a parallel backup (backup
    /// --jobs), whose data parts are restored all at once; nothing but its schema is staged
    /// [default: the backup's database's entry in PGKEEP_JOBS, else 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup id.
    #[arg(required_unless_present = "run", conflicts_with = "run")]
    pub id: Option<String>,
    /// The database to restore into; it must not exist unless --overwrite is given.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "run",
        conflicts_with = "run"
    )]
    pub target_db: Option<String>,
    /// Restore a whole-server run (`backup --all-databases`) onto the --target-url server:
    /// its globals first (roles that exist there are kept as they are), then every database
    /// under its own name with its owner, grants and settings.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// With --run: the server to restore onto [default: --database-url]; its database is used
    /// only to connect.
    #[arg(
        long,
        env = "PGKEEP_TARGET_URL",
        value_name = "URL",
        requires = "run",
        hide_env_values = true
    )]
    pub target_url: Option<String>,
    /// With --run: restore only databases matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB", requires = "run")]
    pub only: Vec<String>,
    /// With --run: leave out databases matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB", requires = "run")]
    pub exclude: Vec<String>,
    /// Replace the target if it exists: a pre_restore backup of it is taken first.
    #[arg(long)]
    pub overwrite: bool,
    /// The target's name typed again, required by --overwrite (with --run: once per existing
    /// database to replace).
    #[arg(long, value_name = "NAME", requires = "overwrite")]
    pub confirm: Vec<String>,
    /// Check the checksum, decrypt and list the archive (pg_restore --list); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Parallel pg_restore workers; the archive is staged to a temporary file first
    /// [default: the backup's database's entry in PGKEEP_JOBS, else 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Restore without the original owners and grants (for a server lacking those roles).
    #[arg(long)]
    pub no_owner: bool,
    /// Where --jobs stages the decrypted archive [default: the system temp directory].
    #[arg(long, env = "PGKEEP_STAGING_DIR", value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,
    /// Who is restoring, for the audit trail.
    #[command(flatten)]
    pub actor: ActorSettings,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_span(s: &str) -> Result<Span, String> {
    s.parse()
        .map_err(|e: pgkeep::retention::SpanError| e.to_string())
}
/// Empty (an empty `PGKEEP_COMPRESSION`) is unset, as in the functions: the default.
fn parse_compression(s: &str) -> Result<CompressionChoice, String> {
    match s.trim() {
        "" => Ok(CompressionChoice::default()),
        s => s.parse(),
    }
}
/// A kind by its stored name, or with dashes (`pre-migration`).
fn parse_kind(s: &str) -> Result<BackupKind, String> {
    s.replace('-', "_").parse()
}
fn parse_status(s: &str) -> Result<BackupStatus, String> {
    s.parse()
}
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

#[cfg(test)]
mod tests;

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Print what would be changed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the stray keys reported (objects without a manifest, manifests whose
    /// object is gone); they are left alone otherwise.
    #[arg(long)]
    pub remove_strays: bool,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}
