//! `pgkeep`: the local edge. Parses arguments, builds the backends once, calls one operation
//! of the `pgkeep` library, prints the result for people or (`--json`) for scripts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use pgkeep::backends::{
    database_target, AwsSettings, BackendConfig, CatalogUrl, KeyUrl, KeyUse, RepoUrl, Services,
};
use pgkeep::catalog::ListQuery;
use pgkeep::model::{BackupId, BackupKind, BackupStatus, Compression};
use pgkeep::ops::backup::BackupRequest;
use pgkeep::ops::{self, ErrorKind};
use pgkeep::pipeline::Progress;
use pgkeep::postgres::PgTarget;
use tokio::io::AsyncWriteExt;

mod output;

/// Exit code when interrupted (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

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

    /// Database to back up: postgresql://user@host:port/dbname. Prefer the environment variable
    /// or a ~/.pgpass file for the password: command lines are visible to other users.
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

    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Back up the database named by --database-url or --database-secret-arn.
    Backup {
        /// Compression inside the encryption.
        #[arg(long, default_value = "zstd", value_parser = parse_compression)]
        compression: Compression,
        /// Why the backup is taken.
        #[arg(long, default_value = "manual", value_parser = parse_kind)]
        kind: BackupKind,
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
    /// Summarise each database: newest good backup and its age, failures.
    Status {
        /// JSON on stdout.
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
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}
fn parse_kind(s: &str) -> Result<BackupKind, String> {
    s.parse()
}
fn parse_status(s: &str) -> Result<BackupStatus, String> {
    s.parse()
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

fn parse_id(id: &str) -> Result<BackupId, Failure> {
    id.parse()
        .map_err(|e: pgkeep::model::InvalidBackupId| usage(e.to_string()))
}

async fn run(cli: Cli, matches: &ArgMatches) -> Result<u8, Failure> {
    match &cli.command {
        Command::Backup {
            compression,
            kind,
            json,
            lease_minutes,
        } => {
            let secret = cli.database_secret_arn.as_deref();
            if cli.database_url.is_none() && secret.is_none() {
                return Err(usage(
                    "no database to back up: set PGKEEP_DATABASE_URL (or --database-url) or PGKEEP_DATABASE_SECRET_ARN",
                ));
            }
            if let Some(url) = cli.database_url.as_deref() {
                // Refuse a malformed URL before touching any backend.
                let target = PgTarget::parse(url).map_err(ops::Error::from)?;
                if target.has_password() && from_command_line(matches, "database_url") {
                    tracing::warn!("the database password is on the command line, where other users can see it; use PGKEEP_DATABASE_URL or ~/.pgpass");
                }
            }
            let (services, aws) = open_aws(&cli, matches, KeyUse::Write, secret.is_some()).await?;
            let target = database_target(cli.database_url.as_deref(), secret, aws.as_ref())
                .await
                .map_err(ops::Error::from)?;
            let options = BackupOptions {
                compression: *compression,
                kind: *kind,
                json: *json,
                lease_ttl: chrono::Duration::minutes(i64::from(*lease_minutes)),
            };
            backup(&services, &cli, target, options).await
        }
        Command::List {
            database,
            status,
            limit,
            json,
        } => {
            let services = open(&cli, matches, KeyUse::None).await?;
            let query = ListQuery {
                database: database.clone(),
                status: *status,
                limit: *limit,
                cursor: None,
            };
            let records = match limit {
                Some(_) => ops::status::list(&services, &query).await?.records,
                None => ops::status::list_all(&services, &query).await?,
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
        Command::Status { json } => {
            let services = open(&cli, matches, KeyUse::None).await?;
            let summary = ops::status::status(&services, chrono::Utc::now()).await?;
            if *json {
                output::print_json(&summary);
            } else {
                output::print_status(&summary);
            }
            Ok(0)
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
    }
}

/// How `pgkeep backup` was asked to run.
struct BackupOptions {
    compression: Compression,
    kind: BackupKind,
    json: bool,
    lease_ttl: chrono::Duration,
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
    } = options;
    let id = BackupId::generate(chrono::Utc::now());
    let mut request = BackupRequest::new(target, kind);
    request.compression = compression;
    request.lease_ttl = lease_ttl;
    request.id = Some(id.clone());
    request.pg_bin = cli.pg_bin.clone();
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
