//! `pgkeep`: the local edge. Parses arguments, builds the backends once, calls one operation
//! of the `pgkeep` library, prints the result for people or (`--json`) for scripts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use pgkeep::backends::{
    AwsSettings, BackendConfig, CatalogUrl, DatabaseAuth, KeyUrl, KeyUse, RepoUrl, Services,
};
use pgkeep::catalog::{CatalogError, ListQuery};
use pgkeep::labels::{parse_selector_list, LabelSelector, Labels};
use pgkeep::model::{BackupId, BackupKind, BackupStatus, Compression};
use pgkeep::ops::backup::BackupRequest;
use pgkeep::ops::health::{HealthPolicy, DEFAULT_MAX_AGE};
use pgkeep::ops::prune::PruneRequest;
use pgkeep::ops::reaper::DEFAULT_ABANDON_AFTER;
use pgkeep::ops::restore::RestoreRequest;
use pgkeep::ops::verify::VerifyRequest;
use pgkeep::ops::{self, ErrorKind};
use pgkeep::pipeline::Progress;
use pgkeep::postgres::PgTarget;
use pgkeep::retention::{RetentionPolicy, Span, DEFAULT_PRE_RESTORE_KEEP_WITHIN};
use pgkeep::selection::Selection;
use tokio::io::AsyncWriteExt;

mod output;

/// Exit code when interrupted (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

/// Exit code of `pgkeep status` when a database is unhealthy (distinct from every failure).
const EXIT_UNHEALTHY: u8 = 11;

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
        130 interrupted."
)]
struct Cli {
    /// Backup repository: a directory, file:///path, or s3://bucket/prefix.
    #[arg(long, env = "PGKEEP_REPO", global = true, value_name = "URL")]
    repo: Option<String>,

    /// Catalog of backup records: sqlite:///path [default: catalog.sqlite3 inside a file
    /// repository] or dynamodb://table (required with an s3:// repository).
    #[arg(long, env = "PGKEEP_CATALOG", global = true, value_name = "URL")]
    catalog: Option<String>,

    /// Master key: file:///path (as --key-file) or kms://KEY (a KMS key ARN, key id or alias/NAME).
    #[arg(long, env = "PGKEEP_KEY", global = true, value_name = "URL")]
    key: Option<String>,

    /// Master key file (32 random bytes, mode 0600, created by the first backup); keep it outside
    /// the repository and back it up separately.
    #[arg(long, env = "PGKEEP_KEY_FILE", global = true, value_name = "PATH")]
    key_file: Option<String>,

    /// Database to back up: postgresql://user@host:port/dbname; for restore, the server to
    /// restore on; for verify, the default scratch server. Prefer the environment variable or a
    /// ~/.pgpass file for the password: command lines are visible to other users.
    #[arg(
        long,
        env = "PGKEEP_DATABASE_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,

    /// Take the database's credentials from this Secrets Manager secret (RDS JSON: username,
    /// password, host, port, dbname); --database-url supplies what the secret lacks.
    #[arg(
        long,
        env = "PGKEEP_DATABASE_SECRET_ARN",
        global = true,
        value_name = "ARN"
    )]
    database_secret_arn: Option<String>,

    /// Authenticate to the --database-url server with RDS IAM: a fresh auth token per
    /// connection, signed with your AWS identity, instead of a password, over TLS. The URL
    /// gives user, host, port and database, and no password.
    #[arg(long, env = "PGKEEP_DATABASE_IAM_AUTH", global = true)]
    database_iam_auth: bool,

    /// With --database-iam-auth: CA bundle (PEM, e.g. the RDS global bundle) the server is
    /// verified against (sslmode verify-full) [default: encrypted, not verified (require)].
    #[arg(
        long,
        env = "PGKEEP_DATABASE_SSL_ROOT_CERT",
        global = true,
        value_name = "PEM"
    )]
    database_ssl_root_cert: Option<PathBuf>,

    /// Send every AWS call to this endpoint (a local emulator such as moto).
    #[arg(long, env = "PGKEEP_AWS_ENDPOINT", global = true, value_name = "URL")]
    aws_endpoint: Option<String>,

    /// S3 multipart part size in MiB (at least 5) [default: 16].
    #[arg(
        long,
        env = "PGKEEP_S3_PART_SIZE_MIB",
        global = true,
        value_name = "MIB"
    )]
    s3_part_size_mib: Option<usize>,

    /// Encrypt S3 objects at rest with this KMS key (SSE-KMS), on top of pgkeep's own encryption.
    #[arg(
        long,
        env = "PGKEEP_S3_SSE_KMS_KEY_ID",
        global = true,
        value_name = "KEY"
    )]
    s3_sse_kms_key_id: Option<String>,

    /// Directory holding pg_dump/pg_restore [default: /usr/lib/postgresql/<server major>/bin, then PATH].
    #[arg(long, env = "PGKEEP_PG_BIN", global = true, value_name = "DIR")]
    pg_bin: Option<PathBuf>,

    /// Backups still in progress after this long are taken for abandoned (crashed, killed, timed
    /// out) and marked failed by the next backup of the database or the next prune. Set it above
    /// your longest dump.
    #[arg(long, env = "PGKEEP_ABANDON_AFTER", global = true, value_name = "DURATION", default_value_t = DEFAULT_ABANDON_AFTER)]
    abandon_after: Span,

    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Back up the database named by --database-url or --database-secret-arn.
    ///
    /// --schema, --exclude-schema, --table, --exclude-table and --exclude-table-data take
    /// pg_dump's patterns (psql patterns: `*`, `?`, `schema.table`, "Quoted"."Names"), each
    /// repeatable; without them the whole database is backed up. The selection is recorded in
    /// the manifest, and `verify` compares only what was selected.
    Backup {
        /// Compression inside the encryption.
        #[arg(long, default_value = "zstd", value_parser = parse_compression)]
        compression: Compression,
        /// Why the backup is taken: manual, scheduled or pre-migration.
        #[arg(long, default_value = "manual", value_parser = parse_kind)]
        kind: BackupKind,
        /// Put this label on the backup (repeatable): KEY=VALUE, keys of a-z 0-9 _ . - (at most
        /// 63), values up to 255 characters.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Back up only schemas matching PATTERN (repeatable; an unknown name fails the backup).
        #[arg(long = "schema", value_name = "PATTERN")]
        schemas: Vec<String>,
        /// Leave out schemas matching PATTERN (repeatable).
        #[arg(long = "exclude-schema", value_name = "PATTERN")]
        exclude_schemas: Vec<String>,
        /// Back up only tables matching PATTERN (repeatable; then functions and other
        /// non-table objects are left out, as with pg_dump --table).
        #[arg(long = "table", value_name = "PATTERN")]
        tables: Vec<String>,
        /// Leave out tables matching PATTERN (repeatable).
        #[arg(long = "exclude-table", value_name = "PATTERN")]
        exclude_tables: Vec<String>,
        /// Keep the definition of tables matching PATTERN but not their rows (repeatable).
        #[arg(long = "exclude-table-data", value_name = "PATTERN")]
        exclude_table_data: Vec<String>,
        /// Print the final record as JSON on stdout (also when the backup fails).
        #[arg(long)]
        json: bool,
        /// Minutes after which this run's lock on the database lapses if it crashes (another
        /// backup of the database is refused meanwhile); longer than the backup takes.
        #[arg(long, default_value_t = 60, value_name = "MINUTES", value_parser = clap::value_parser!(u32).range(1..))]
        lease_minutes: u32,
    },
    /// List backups, newest first.
    List {
        /// Only this database.
        #[arg(long)]
        database: Option<String>,
        /// Only this status.
        #[arg(long, value_parser = parse_status)]
        status: Option<BackupStatus>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Only backups carrying this label: KEY (any value) or KEY=VALUE.
        #[arg(long, value_name = "KEY[=VALUE]", value_parser = parse_selector)]
        label: Option<LabelSelector>,
        /// JSON array of records on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show one backup in full, with its row counts.
    Show {
        /// Backup id (from `pgkeep list`).
        id: String,
        /// The record as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Summarise each database's health: newest good backup and its age, verification,
    /// failures. Exits 11 when a database is unhealthy (or the catalog is empty), for cron and
    /// monitoring agents.
    Status {
        /// Unhealthy when the newest good backup is older than this (e.g. 25h, 2d, 1w).
        #[arg(long, env = "PGKEEP_MAX_AGE", value_name = "DURATION", default_value_t = DEFAULT_MAX_AGE)]
        max_age: Span,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Assess as of this time (RFC 3339) instead of now.
        #[arg(long, hide = true, value_parser = parse_time)]
        now: Option<DateTime<Utc>>,
    },
    /// Delete backups the retention policy does not keep (restic's forget semantics, per
    /// database), mark abandoned runs failed, and finish deletions a crash interrupted.
    ///
    /// The newest verified backup of a database and backups in progress are never deleted.
    /// Records of deleted backups stay in the catalog as history.
    Prune {
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep the N newest backups.
        #[arg(long, env = "PGKEEP_KEEP_LAST", value_name = "N")]
        keep_last: Option<u32>,
        /// Keep the newest backup of each of the N most recent hours that have one.
        #[arg(long, env = "PGKEEP_KEEP_HOURLY", value_name = "N")]
        keep_hourly: Option<u32>,
        /// Keep the newest backup of each of the N most recent days (UTC) that have one.
        #[arg(long, env = "PGKEEP_KEEP_DAILY", value_name = "N")]
        keep_daily: Option<u32>,
        /// Keep the newest backup of each of the N most recent ISO weeks that have one.
        #[arg(long, env = "PGKEEP_KEEP_WEEKLY", value_name = "N")]
        keep_weekly: Option<u32>,
        /// Keep the newest backup of each of the N most recent months that have one.
        #[arg(long, env = "PGKEEP_KEEP_MONTHLY", value_name = "N")]
        keep_monthly: Option<u32>,
        /// Keep the newest backup of each of the N most recent years that have one.
        #[arg(long, env = "PGKEEP_KEEP_YEARLY", value_name = "N")]
        keep_yearly: Option<u32>,
        /// Keep every backup taken within this span before the newest one (e.g. 30d, 2w).
        #[arg(long, env = "PGKEEP_KEEP_WITHIN", value_name = "DURATION")]
        keep_within: Option<Span>,
        /// Keep pre-restore safety copies this long.
        #[arg(long, env = "PGKEEP_PRE_RESTORE_KEEP_WITHIN", value_name = "DURATION", default_value_t = DEFAULT_PRE_RESTORE_KEEP_WITHIN)]
        pre_restore_keep_within: Span,
        /// Also keep every stored backup carrying this label: KEY (any value) or KEY=VALUE
        /// (repeatable) [env: PGKEEP_KEEP_LABELS, comma-separated or a JSON array]. Adds to the
        /// other rules; it is not a policy by itself.
        #[arg(long = "keep-label", value_name = "KEY[=VALUE]", value_parser = parse_selector)]
        keep_labels: Vec<LabelSelector>,
        /// Only this database.
        #[arg(long)]
        database: Option<String>,
        /// The plan (and what was done) as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Decide as of this time (RFC 3339); only with --dry-run.
        #[arg(long, hide = true, value_parser = parse_time, requires = "dry_run")]
        now: Option<DateTime<Utc>>,
    },
    /// Delete one backup: its object and manifest are removed, its record stays as `deleted`
    /// history, and the audit trail names who did it. Refused (exit 8, nothing changed, the
    /// message starts with `refused: REASON:`) for the newest verified backup of a database
    /// (newest_verified), a backup in progress (in_progress) and an object under S3 Object
    /// Lock (object_locked).
    Delete {
        /// Backup id (from `pgkeep list`).
        id: String,
        /// Who is deleting, for the audit trail [default: $USER].
        #[arg(long, env = "PGKEEP_ACTOR")]
        actor: Option<String>,
        /// The deleted record as JSON on stdout; a refusal prints {"id", "deleted": false,
        /// "reason", "error"}.
        #[arg(long)]
        json: bool,
    },
    /// Write the original pg_dump archive (decrypted, decompressed, authenticated) to stdout
    /// or a file, e.g. `pgkeep cat ID | pg_restore -d newdb`.
    Cat {
        /// Backup id.
        id: String,
        /// Write to this file instead of stdout (it appears only when complete and intact).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Prove a backup: restore it into a scratch database, compare every table's row count
    /// with the manifest and the objects with the archive, drop the scratch database, and
    /// record `verified` or `verification_failed`.
    Verify {
        /// Backup id [default: the newest completed backup not yet verified].
        id: Option<String>,
        /// Scratch server: postgresql://user@host:port/dbname (any existing database; the role
        /// needs CREATEDB) [default: the --database-url server].
        #[arg(
            long,
            env = "PGKEEP_SCRATCH_URL",
            value_name = "URL",
            hide_env_values = true
        )]
        scratch_url: Option<String>,
        /// Who is verifying, for the audit trail [default: $USER].
        #[arg(long, env = "PGKEEP_ACTOR")]
        actor: Option<String>,
        /// Print the record with its verification as JSON on stdout (also when it fails).
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a new database on the --database-url server, or replace an
    /// existing one (after a safety backup) with --overwrite --confirm NAME.
    Restore {
        /// Backup id.
        id: String,
        /// The database to restore into; it must not exist unless --overwrite is given.
        #[arg(long, value_name = "NAME")]
        target_db: String,
        /// Replace the target if it exists: a pre_restore backup of it is taken first.
        #[arg(long)]
        overwrite: bool,
        /// The target's name typed again, required by --overwrite.
        #[arg(long, value_name = "NAME", requires = "overwrite")]
        confirm: Option<String>,
        /// Check the checksum, decrypt and list the archive (pg_restore --list); write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Parallel pg_restore workers; the archive is staged to a temporary file first.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: u32,
        /// Restore without the original owners and grants (for a server lacking those roles).
        #[arg(long)]
        no_owner: bool,
        /// Where --jobs stages the decrypted archive [default: the system temp directory].
        #[arg(long, env = "PGKEEP_STAGING_DIR", value_name = "DIR")]
        staging_dir: Option<PathBuf>,
        /// Who is restoring, for the audit trail [default: $USER].
        #[arg(long, env = "PGKEEP_ACTOR")]
        actor: Option<String>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}
/// A kind by its stored name, or with dashes (`pre-migration`).
fn parse_kind(s: &str) -> Result<BackupKind, String> {
    s.replace('-', "_").parse()
}
fn parse_selector(s: &str) -> Result<LabelSelector, String> {
    s.parse()
        .map_err(|e: pgkeep::labels::LabelError| e.to_string())
}
fn parse_status(s: &str) -> Result<BackupStatus, String> {
    s.parse()
}
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// A failure: the one line to print and the exit code it deserves.
struct Failure {
    code: u8,
    message: String,
}

impl From<ops::Error> for Failure {
    /// The library's messages already carry their causes, so only the top is printed.
    fn from(e: ops::Error) -> Self {
        Failure {
            code: e.kind().exit_code() as u8,
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            code: 1,
            message: format!("{error:#}"),
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: ErrorKind::Config.exit_code() as u8,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli, &matches)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("pgkeep: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn home_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn from_command_line(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(ValueSource::CommandLine)
}

fn backend_config(cli: &Cli, matches: &ArgMatches) -> Result<BackendConfig, Failure> {
    let repo = match &cli.repo {
        Some(url) => RepoUrl::parse(url).map_err(ops::Error::from)?,
        None => RepoUrl::File(home_dir("XDG_DATA_HOME", ".local/share").join("pgkeep/repo")),
    };
    let catalog = cli
        .catalog
        .as_deref()
        .map(CatalogUrl::parse)
        .transpose()
        .map_err(ops::Error::from)?;
    let key_file = |path: &str| match KeyUrl::parse(path).map_err(ops::Error::from)? {
        KeyUrl::File(p) => Ok(KeyUrl::File(p)),
        KeyUrl::Kms(_) => Err(usage(
            "--key-file takes a path; give a KMS key with --key kms://...",
        )),
    };
    // The command line beats the environment; two settings from the same place are ambiguous.
    let key = match (&cli.key, &cli.key_file) {
        (Some(url), Some(path)) => {
            match (from_command_line(matches, "key"), from_command_line(matches, "key_file")) {
                (true, false) => KeyUrl::parse(url).map_err(ops::Error::from)?,
                (false, true) => key_file(path)?,
                _ => {
                    return Err(usage(
                        "both a key (--key, PGKEEP_KEY) and a key file (--key-file, PGKEEP_KEY_FILE) are set; give one",
                    ))
                }
            }
        }
        (Some(url), None) => KeyUrl::parse(url).map_err(ops::Error::from)?,
        (None, Some(path)) => key_file(path)?,
        (None, None) => {
            KeyUrl::File(home_dir("XDG_CONFIG_HOME", ".config").join("pgkeep/pgkeep.key"))
        }
    };
    let aws = AwsSettings::new(
        cli.aws_endpoint.clone(),
        cli.s3_part_size_mib,
        cli.s3_sse_kms_key_id.clone(),
    )
    .map_err(ops::Error::from)?;
    Ok(BackendConfig {
        repo,
        catalog,
        key,
        aws,
    })
}

/// Builds the backends; also returns the AWS configuration when a backend (or `need_aws`)
/// wants one, loaded once.
async fn open_aws(
    cli: &Cli,
    matches: &ArgMatches,
    key_use: KeyUse,
    need_aws: bool,
) -> Result<(Services, Option<pgkeep::aws::SdkConfig>), Failure> {
    let config = backend_config(cli, matches)?;
    let aws = if config.uses_aws() || need_aws {
        Some(config.load_aws().await.map_err(ops::Error::from)?)
    } else {
        None
    };
    let services = config
        .open_with(key_use, aws.as_ref())
        .map_err(ops::Error::from)?;
    Ok((services, aws))
}

async fn open(cli: &Cli, matches: &ArgMatches, key_use: KeyUse) -> Result<Services, Failure> {
    Ok(open_aws(cli, matches, key_use, false).await?.0)
}

/// How to authenticate to the --database-url server.
fn database_auth(cli: &Cli) -> Result<DatabaseAuth, Failure> {
    Ok(
        DatabaseAuth::new(cli.database_iam_auth, cli.database_ssl_root_cert.clone())
            .map_err(ops::Error::from)?,
    )
}

fn parse_id(id: &str) -> Result<BackupId, Failure> {
    id.parse()
        .map_err(|e: pgkeep::model::InvalidBackupId| usage(e.to_string()))
}

async fn run(cli: Cli, matches: &ArgMatches) -> Result<u8, Failure> {
    match &cli.command {
        Command::Backup {
            compression,
            kind,
            labels,
            schemas,
            exclude_schemas,
            tables,
            exclude_tables,
            exclude_table_data,
            json,
            lease_minutes,
        } => {
            // Refuse bad labels and patterns before touching anything.
            let labels = Labels::parse_args(labels).map_err(ops::Error::from)?;
            let selection = Selection {
                include_schemas: schemas.clone(),
                exclude_schemas: exclude_schemas.clone(),
                include_tables: tables.clone(),
                exclude_tables: exclude_tables.clone(),
                exclude_table_data: exclude_table_data.clone(),
            };
            selection.validate().map_err(ops::Error::from)?;
            let secret = cli.database_secret_arn.as_deref();
            if cli.database_url.is_none() && secret.is_none() {
                return Err(usage(
                    "no database to back up: set PGKEEP_DATABASE_URL (or --database-url) or PGKEEP_DATABASE_SECRET_ARN",
                ));
            }
            let auth = database_auth(&cli)?;
            if auth.iam && secret.is_some() {
                return Err(usage(
                    "--database-iam-auth (PGKEEP_DATABASE_IAM_AUTH) and a database secret (PGKEEP_DATABASE_SECRET_ARN) exclude each other: the IAM token replaces the password; give --database-url postgresql://USER@HOST:PORT/DATABASE",
                ));
            }
            if let Some(url) = cli.database_url.as_deref() {
                // Refuse a malformed URL before touching any backend.
                let target = if auth.iam {
                    DatabaseAuth::check_iam_url("--database-url", url).map_err(ops::Error::from)?
                } else {
                    PgTarget::parse(url).map_err(ops::Error::from)?
                };
                if target.has_password() && from_command_line(matches, "database_url") {
                    tracing::warn!("the database password is on the command line, where other users can see it; use PGKEEP_DATABASE_URL or ~/.pgpass");
                }
            }
            let (services, aws) =
                open_aws(&cli, matches, KeyUse::Write, secret.is_some() || auth.iam).await?;
            let target = auth
                .target(cli.database_url.as_deref(), secret, aws.as_ref())
                .await
                .map_err(ops::Error::from)?;
            let options = BackupOptions {
                compression: *compression,
                kind: *kind,
                json: *json,
                lease_ttl: chrono::Duration::minutes(i64::from(*lease_minutes)),
                labels,
                selection,
            };
            backup(&services, &cli, target, options).await
        }
        Command::List {
            database,
            status,
            limit,
            label,
            json,
        } => {
            let services = open(&cli, matches, KeyUse::None).await?;
            let query = ListQuery {
                database: database.clone(),
                status: *status,
                limit: *limit,
                cursor: None,
                label: label.clone(),
            };
            let records = match limit {
                Some(_) => ops::list::list(&services, &query).await?.records,
                None => ops::list::list_all(&services, &query).await?,
            };
            if *json {
                output::print_json(&records);
            } else {
                output::print_list(&records);
            }
            Ok(0)
        }
        Command::Show { id, json } => {
            let id = parse_id(id)?;
            let services = open(&cli, matches, KeyUse::None).await?;
            let record = services.catalog.get(&id).await.map_err(ops::Error::from)?;
            if *json {
                output::print_json(&record);
            } else {
                output::print_record(&record);
            }
            Ok(0)
        }
        Command::Status { max_age, json, now } => {
            let services = open(&cli, matches, KeyUse::None).await?;
            let policy = HealthPolicy { max_age: *max_age };
            let now = now.unwrap_or_else(Utc::now);
            let health = ops::health::health(&services, now, &policy).await?;
            if *json {
                output::print_json(&health);
            } else {
                output::print_status(&health);
            }
            match ops::health::overall_problem(&health) {
                None => Ok(0),
                Some(problem) => {
                    eprintln!("pgkeep: {problem}");
                    Ok(EXIT_UNHEALTHY)
                }
            }
        }
        Command::Prune {
            dry_run,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            pre_restore_keep_within,
            keep_labels,
            database,
            json,
            now,
        } => {
            let keep_labels = if keep_labels.is_empty() {
                match std::env::var("PGKEEP_KEEP_LABELS") {
                    Ok(text) => parse_selector_list(&text)
                        .map_err(|e| usage(format!("PGKEEP_KEEP_LABELS: {e}")))?,
                    Err(_) => Vec::new(),
                }
            } else {
                keep_labels.clone()
            };
            let policy = RetentionPolicy {
                keep_last: keep_last.unwrap_or(0),
                keep_hourly: keep_hourly.unwrap_or(0),
                keep_daily: keep_daily.unwrap_or(0),
                keep_weekly: keep_weekly.unwrap_or(0),
                keep_monthly: keep_monthly.unwrap_or(0),
                keep_yearly: keep_yearly.unwrap_or(0),
                keep_within: *keep_within,
                pre_restore_keep_within: *pre_restore_keep_within,
                keep_labels,
                ..RetentionPolicy::default()
            };
            policy.validate().map_err(ops::Error::from)?;
            let services = open(&cli, matches, KeyUse::None).await?;
            let request = PruneRequest {
                policy,
                database: database.clone(),
                now: now.unwrap_or_else(Utc::now),
                abandon_after: cli.abandon_after,
            };
            prune(&services, &request, *dry_run, *json).await
        }
        Command::Delete { id, actor, json } => {
            let id = parse_id(id)?;
            let services = open(&cli, matches, KeyUse::None).await?;
            delete(&services, &id, &actor_name(actor.as_deref()), *json).await
        }
        Command::Cat { id, output } => {
            let id = parse_id(id)?;
            if output.is_none() && std::io::stdout().is_terminal() {
                return Err(usage(
                    "refusing to write a binary archive to a terminal: pipe it (pgkeep cat ID | pg_restore ...) or use -o FILE",
                ));
            }
            let services = open(&cli, matches, KeyUse::Read).await?;
            cat(&services, &id, output.as_deref()).await
        }
        Command::Verify {
            id,
            scratch_url,
            actor,
            json,
        } => {
            let id = id.as_deref().map(parse_id).transpose()?;
            let url = scratch_url
                .as_deref()
                .or(cli.database_url.as_deref())
                .ok_or_else(|| {
                    usage("no scratch server to verify on: set PGKEEP_SCRATCH_URL (or --scratch-url), or PGKEEP_DATABASE_URL to use the source server")
                })?;
            let scratch = PgTarget::parse(url).map_err(ops::Error::Scratch)?;
            let from_command_line = matches
                .subcommand_matches("verify")
                .and_then(|m| m.value_source("scratch_url"))
                == Some(ValueSource::CommandLine);
            if scratch.has_password() && from_command_line {
                tracing::warn!("the scratch server's password is on the command line, where other users can see it; use PGKEEP_SCRATCH_URL or ~/.pgpass");
            }
            // IAM authentication is the --database-url server's; a scratch URL has its own.
            let auth = database_auth(&cli)?;
            let iam = auth.iam && scratch_url.is_none();
            let (services, aws) = open_aws(&cli, matches, KeyUse::Read, iam).await?;
            let scratch = match (iam, &aws) {
                (true, Some(aws)) => auth
                    .iam_target("--database-url", url, aws)
                    .await
                    .map_err(ops::Error::from)?,
                _ => scratch,
            };
            let mut request = VerifyRequest::new(scratch, id);
            request.pg_bin = cli.pg_bin.clone();
            request.actor = actor_name(actor.as_deref());
            verify(&services, &request, *json).await
        }
        Command::Restore {
            id,
            target_db,
            overwrite,
            confirm,
            dry_run,
            jobs,
            no_owner,
            staging_dir,
            actor,
            json,
        } => {
            let id = parse_id(id)?;
            let url = cli.database_url.as_deref().ok_or_else(|| {
                usage("no server to restore on: set PGKEEP_DATABASE_URL or pass --database-url (its database is used only to connect)")
            })?;
            let auth = database_auth(&cli)?;
            let server = if auth.iam {
                DatabaseAuth::check_iam_url("--database-url", url).map_err(ops::Error::from)?
            } else {
                PgTarget::parse(url).map_err(ops::Error::from)?
            };
            if server.has_password()
                && matches.value_source("database_url") == Some(ValueSource::CommandLine)
            {
                tracing::warn!("the database password is on the command line, where other users can see it; use PGKEEP_DATABASE_URL or ~/.pgpass");
            }
            // Overwriting takes a safety backup, which needs the key for writing.
            let key_use = if *overwrite && !*dry_run {
                KeyUse::Write
            } else {
                KeyUse::Read
            };
            let (services, aws) = open_aws(&cli, matches, key_use, auth.iam).await?;
            let server = match (auth.iam, &aws) {
                (true, Some(aws)) => auth
                    .iam_target("--database-url", url, aws)
                    .await
                    .map_err(ops::Error::from)?,
                _ => server,
            };
            let mut request = RestoreRequest::new(id, server, target_db.clone());
            request.overwrite = *overwrite;
            request.confirm = confirm.clone();
            request.dry_run = *dry_run;
            request.jobs = *jobs;
            request.no_owner = *no_owner;
            request.staging_dir = staging_dir.clone();
            request.pg_bin = cli.pg_bin.clone();
            request.actor = actor_name(actor.as_deref());
            request.safety_backup_id = Some(BackupId::generate(chrono::Utc::now()));
            restore(&services, &request, *json).await
        }
    }
}

/// The audit trail's actor: as given, else the login name.
fn actor_name(given: Option<&str>) -> String {
    given
        .map(str::to_owned)
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

async fn verify(services: &Services, request: &VerifyRequest, json: bool) -> Result<u8, Failure> {
    let what = request.id.as_ref().map_or_else(
        || "the newest unverified backup".to_owned(),
        |id| format!("backup {id}"),
    );
    let bar = output::ProgressBar::start_with("verifying", &what, request.progress.clone());
    let result = tokio::select! {
        r = ops::verify::verify(services, request) => r,
        _ = tokio::signal::ctrl_c() => {
            bar.finish();
            // Dropping the verification killed pg_restore; its scratch database is dropped here.
            ops::scratch::finish_cleanup().await;
            eprintln!("pgkeep: interrupted; the scratch database was dropped and the backup's status left as it was");
            return Ok(EXIT_INTERRUPTED);
        }
    };
    bar.finish();
    match result {
        Ok(report) => {
            if json {
                output::print_json(&report.record);
            } else {
                output::print_verification(&report);
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
            if json {
                if let Some(id) = &request.id {
                    if let Ok(record) = services.catalog.get(id).await {
                        output::print_json(&record);
                    }
                }
            }
            Err(Failure {
                code: e.kind().exit_code() as u8,
                message: format!("could not verify {what}: {e}"),
            })
        }
    }
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
        _ = tokio::signal::ctrl_c() => {
            bar.finish();
            // Dropping the restore killed pg_restore and removed any staged file; the new
            // database is dropped here, and an unfinished safety backup is recorded as failed.
            ops::scratch::finish_cleanup().await;
            if let Some(id) = &request.safety_backup_id {
                match ops::backup::mark_failed(services, id, "interrupted by the user").await {
                    Ok(()) | Err(ops::Error::Catalog(CatalogError::NotFound(_))) => {}
                    Err(e) => eprintln!("pgkeep: could not record the interrupted safety backup: {e}"),
                }
            }
            eprintln!("pgkeep: interrupted; nothing was restored and {:?} was left as it was", request.target_db);
            return Ok(EXIT_INTERRUPTED);
        }
    };
    bar.finish();
    match result {
        Ok(report) => {
            if json {
                output::print_json(&report);
            } else {
                output::print_restore(&report);
            }
            Ok(0)
        }
        Err(e) => Err(Failure {
            code: e.kind().exit_code() as u8,
            message: format!("restore of backup {} failed: {e}", request.id),
        }),
    }
}

/// How `pgkeep backup` was asked to run.
struct BackupOptions {
    compression: Compression,
    kind: BackupKind,
    json: bool,
    lease_ttl: chrono::Duration,
    labels: Labels,
    selection: Selection,
}

async fn backup(
    services: &Services,
    cli: &Cli,
    target: PgTarget,
    options: BackupOptions,
) -> Result<u8, Failure> {
    let BackupOptions {
        compression,
        kind,
        json,
        lease_ttl,
        labels,
        selection,
    } = options;
    let id = BackupId::generate(chrono::Utc::now());
    let mut request = BackupRequest::new(target, kind);
    request.compression = compression;
    request.lease_ttl = lease_ttl;
    request.id = Some(id.clone());
    request.pg_bin = cli.pg_bin.clone();
    request.abandon_after = cli.abandon_after;
    request.labels = labels;
    request.selection = selection;
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(request.target.database(), progress.clone());

    let result = tokio::select! {
        r = ops::backup::backup(services, &request, progress.clone()) => r,
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
            if json {
                output::print_json(&record);
            } else {
                output::print_backup_done(&record);
            }
            Ok(0)
        }
        Err(e) => {
            if json {
                if let Ok(record) = services.catalog.get(&id).await {
                    output::print_json(&record);
                }
            }
            Err(Failure {
                code: e.kind().exit_code() as u8,
                message: format!("backup {id} failed: {e}"),
            })
        }
    }
}

async fn prune(
    services: &Services,
    request: &PruneRequest,
    dry_run: bool,
    json: bool,
) -> Result<u8, Failure> {
    let plan = ops::prune::plan(services, request).await?;
    for m in &plan.missing {
        eprintln!(
            "pgkeep: warning: backup {} of {:?} is {} but {} is missing from the repository",
            m.id, m.database, m.status, m.key
        );
    }
    if dry_run {
        if json {
            output::print_json(&serde_json::json!({ "dry_run": true, "plan": plan }));
        } else {
            output::print_prune_plan(&plan);
            println!("dry run: nothing was changed");
        }
        return Ok(0);
    }
    if !json {
        output::print_prune_plan(&plan);
    }
    let actor = std::env::var("USER").unwrap_or_else(|_| "pgkeep".into());
    let report = ops::prune::execute(services, &plan, &actor)
        .await
        .map_err(|e| Failure {
            code: e.kind().exit_code() as u8,
            message: format!(
                "prune stopped: {e}; run it again to finish (half-done deletions are repaired)"
            ),
        })?;
    for s in &report.skipped {
        eprintln!("pgkeep: skipped {}: {}", s.id, s.why);
    }
    if json {
        output::print_json(
            &serde_json::json!({ "dry_run": false, "plan": plan, "report": report }),
        );
    } else {
        output::print_prune_report(&report);
    }
    Ok(0)
}

async fn delete(
    services: &Services,
    id: &BackupId,
    actor: &str,
    json: bool,
) -> Result<u8, Failure> {
    match ops::delete::delete(services, id, actor).await {
        Ok(record) => {
            if json {
                output::print_json(&record);
            } else {
                println!(
                    "deleted backup {} of {:?}: object and manifest removed, the record stays as history",
                    record.id, record.database
                );
            }
            Ok(0)
        }
        Err(e) => {
            if let (true, ops::Error::DeleteRefused { reason, .. }) = (json, &e) {
                output::print_json(&serde_json::json!({
                    "id": id,
                    "deleted": false,
                    "reason": reason,
                    "error": e.to_string(),
                }));
            }
            Err(e.into())
        }
    }
}

async fn cat(
    services: &Services,
    id: &BackupId,
    output: Option<&std::path::Path>,
) -> Result<u8, Failure> {
    let (_record, mut archive) = ops::read::open_archive(services, id).await?;
    match output {
        None => {
            let mut stdout = tokio::io::stdout();
            tokio::io::copy(&mut archive, &mut stdout)
                .await
                .map_err(|e| ops::Error::from_read("writing the archive to stdout", e))?;
            stdout.flush().await.context("flushing stdout")?;
        }
        Some(path) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let name = path
                .file_name()
                .ok_or_else(|| usage(format!("{} is not a file name", path.display())))?;
            let temp = dir.join(format!(
                ".{}.pgkeep-partial-{}",
                name.to_string_lossy(),
                std::process::id()
            ));
            let result = async {
                let mut file =
                    tokio::fs::File::create(&temp)
                        .await
                        .map_err(|e| ops::Error::Io {
                            context: "creating the output file",
                            source: e,
                        })?;
                tokio::io::copy(&mut archive, &mut file)
                    .await
                    .map_err(|e| ops::Error::from_read("writing the archive", e))?;
                file.sync_all().await.map_err(|e| ops::Error::Io {
                    context: "syncing the output file",
                    source: e,
                })?;
                tokio::fs::rename(&temp, path)
                    .await
                    .map_err(|e| ops::Error::Io {
                        context: "renaming the output file into place",
                        source: e,
                    })
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            result?;
        }
    }
    Ok(0)
}
