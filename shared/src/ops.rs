//! The operations every edge calls: the `pgkeep` command and the Lambda functions alike.
//!
//! Each operation takes the [`Services`](crate::backends::Services) it needs and returns a
//! domain value or an [`Error`] whose [`ErrorKind`] an edge maps to an exit code or HTTP status.

use std::io;

use crate::catalog::CatalogError;
use crate::config::ConfigError;
use crate::keys::KeyError;
use crate::labels::LabelError;
use crate::model::{BackupId, BackupStatus};
use crate::pipeline::archive_merge::MergeError;
use crate::pipeline::archive_scan::ArchiveScanError;
use crate::pipeline::crypt::{crypt_error, CryptError};
use crate::pipeline::digest::{checksum_mismatch, ChecksumMismatch};
use crate::pipeline::pg_dump::DumpError;
use crate::pipeline::PipelineError;
use crate::postgres::PgError;
use crate::retention::PolicyError;
use crate::selection::SelectionError;
use crate::store::StoreError;

pub mod audit;
pub mod backup;
pub mod delete;
pub mod download;
pub mod forget;
pub mod health;
pub mod init;
pub mod jobs;
pub mod list;
mod parts;
pub mod prune;
pub mod read;
pub mod reaper;
pub mod repair;
mod replay;
pub mod restore;
pub mod restore_run;
pub mod scratch;
pub mod server;
pub mod state;
pub mod sweep;
pub mod verify;

/// Why an operation failed; every message says what happened and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration that cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The object store failed or lacks an object.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalog failed or lacks a record.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The master key is missing, wrong or unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// PostgreSQL could not be reached or a client tool is unfit.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// pg_dump failed.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// pg_dump's output could not be read as an archive.
    #[error("reading pg_dump's archive: {0}")]
    Archive(#[from] ArchiveScanError),
    /// The stored object is not what was written.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// A retention policy that cannot be applied.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A label or label selector breaks the label rules.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// A selection (schemas, tables) has a bad pattern.
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// The backup is in a state the operation cannot use.
    #[error("backup {id} is {status}: {why}")]
    Unusable {
        /// The backup.
        id: BackupId,
        /// Its status.
        status: BackupStatus,
        /// Why that stops the operation.
        why: String,
    },
    /// The scratch server a verification restores into cannot be used.
    #[error(
        "scratch server: {0} (set PGKEEP_SCRATCH_URL to a server pgkeep may create databases on)"
    )]
    Scratch(PgError),
    /// A database role lacks a privilege the operation needs (CREATEDB, ownership).
    #[error("{0}")]
    Permission(String),
    /// A restore would replace a database that exists, and overwriting was not asked for.
    #[error("database {database:?} already exists on {server}: restore into a new database (another --target-db), or replace it with --overwrite --confirm {database:?}; nothing was changed")]
    TargetExists {
        /// The existing database.
        database: String,
        /// The server, without password.
        server: String,
    },
    /// Overwriting was asked for without the database's name typed again, or with another name.
    #[error("{0}; nothing was changed")]
    Confirmation(String),
    /// The safety backup taken before overwriting a database failed, so the restore stopped.
    #[error("the safety backup of {database:?} failed, so it was not overwritten: {source}")]
    SafetyBackup {
        /// The database that would have been overwritten.
        database: String,
        /// Why the backup failed.
        #[source]
        source: Box<Error>,
    },
    /// A restore replaced its target but could not give the restored database the target's
    /// name; the restored database is kept for a person to rename.
    #[error("{target:?} was dropped to be replaced, but the restored database {kept:?} could not be renamed to it: {source}; rename it by hand (ALTER DATABASE {kept} RENAME TO ...); the safety backup is {safety_backup}")]
    Stranded {
        /// The database being replaced.
        target: String,
        /// The restored database, kept under its working name.
        kept: String,
        /// The safety backup taken before.
        safety_backup: String,
        /// Why the rename failed.
        #[source]
        source: Box<Error>,
    },
    /// A restore asked for earlier has already ended (given up as never started, or run): a
    /// late or repeated start of it does nothing.
    #[error("restore {id} has already ended ({why}); nothing was done: ask for a new restore")]
    RestoreEnded {
        /// The restore's id.
        id: String,
        /// How it ended.
        why: String,
    },
    /// The run was ended before it finished (a signal, or the invocation's time limit near).
    #[error("the backup was stopped before it finished: {0}")]
    Stopped(String),
    /// Not enough free space to stage an archive for a parallel restore.
    #[error("not enough free space in {dir} to stage the archive for --jobs: it needs {needed} bytes, {available} are free; point --staging-dir (PGKEEP_STAGING_DIR) elsewhere or restore without --jobs")]
    NoSpace {
        /// The staging directory.
        dir: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// A deletion pgkeep refuses; `reason` is the stable name scripts match on.
    #[error("refused: {reason}: backup {id} {why}; nothing was changed")]
    DeleteRefused {
        /// The backup.
        id: BackupId,
        /// Which rule refused it.
        reason: DeleteRefusal,
        /// The particulars, for a person.
        why: String,
    },
    /// Another run is dumping the same database (it holds the database's dump lease).
    #[error("another backup of database {database:?} is running: {holder} holds its lease until {} (renewed while it runs); wait for it to finish", crate::model::format_time(*expires_at))]
    LeaseHeld {
        /// The database.
        database: String,
        /// Who holds the lease (the other run's backup id).
        holder: String,
        /// When the lease lapses if its holder never releases it.
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// The catalog took a change but the repository's copy of the record's state could not
    /// be written (see `ops::state`).
    #[error("backup {id}: the change is in the catalog but its state could not be written to the repository ({source}); repeat the command to write it")]
    StateNotWritten {
        /// The backup.
        id: BackupId,
        /// Why the write failed.
        #[source]
        source: Box<Error>,
    },
    /// The catalog holds no backups while the repository does: it was lost or emptied, and
    /// carrying on would start a new history beside the old one.
    #[error("the catalog {catalog} holds no backups, but the repository {repository} holds {manifests} (e.g. {example}): the catalog was lost or emptied; run `pgkeep repair` to rebuild it from the repository")]
    CatalogLost {
        /// The catalog's location.
        catalog: String,
        /// The repository's location.
        repository: String,
        /// How many manifests the repository holds ("3 manifests", "at least 1000 manifests").
        manifests: String,
        /// One of them.
        example: String,
    },
    /// `forget` refused: the database has (or had) real backups.
    #[error("refused: database {database:?} {why}; nothing was changed")]
    ForgetRefused {
        /// The database.
        database: String,
        /// Which records stand in the way, for a person.
        why: String,
    },
    /// No backup of this whole-server run is in the catalog.
    #[error("run {0:?} has no backups in the catalog (`pgkeep list` shows each backup's run)")]
    UnknownRun(String),
    /// No record of this database is in the catalog.
    #[error("database {0:?} has no records in the catalog (`pgkeep status` lists the databases it knows)")]
    UnknownDatabase(String),
    /// A stream failed for a reason other than the above.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The work was to go to a Fargate task, and the task could not be started.
    #[error("the work could not be handed to a Fargate task: {0}")]
    HandOff(String),
    /// A parallel backup's parts could not be written as one archive (`pgkeep cat`).
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// Why a backup may not be deleted. The names (`newest_verified`, `in_progress`,
/// `object_locked`) are stable: the CLI prints them after `refused:` and the API returns them
/// as `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteRefusal {
    /// The newest verified backup of its database: the one known-good copy is never deleted.
    NewestVerified,
    /// Still being written.
    InProgress,
    /// Its object (or manifest) is under S3 Object Lock retention or a legal hold.
    ObjectLocked,
}

impl DeleteRefusal {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteRefusal::NewestVerified => "newest_verified",
            DeleteRefusal::InProgress => "in_progress",
            DeleteRefusal::ObjectLocked => "object_locked",
        }
    }
}

impl std::fmt::Display for DeleteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored object that fails its checks: corrupt, truncated, tampered with or misplaced.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// The SHA-256 of the object differs from the record.
    #[error(transparent)]
    Checksum(#[from] ChecksumMismatch),
    /// Decryption failed (a chunk did not authenticate, the object was cut short, ...).
    #[error("{0}")]
    Crypt(#[from] CryptError),
    /// The object's header names another backup.
    #[error("the object at {key} belongs to backup {found} of database {found_database:?}, not to {expected}")]
    WrongObject {
        /// Object key.
        key: String,
        /// Backup id the record expects.
        expected: BackupId,
        /// Backup id in the header.
        found: String,
        /// Database in the header.
        found_database: String,
    },
    /// The decrypted data did not decompress.
    #[error("the decrypted archive does not decompress: {0}")]
    Decompress(io::Error),
    /// The authenticated, decompressed data is not a complete pg_dump archive.
    #[error("the decrypted object is not a complete pg_dump archive: {0}")]
    NotAnArchive(ArchiveScanError),
    /// The manifest beside the object does not parse.
    #[error("the manifest {key} is not readable: {message}")]
    BadManifest {
        /// Its key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Coarse classes of failure, each with its own exit code and HTTP status at the edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad settings or arguments.
    Config,
    /// A backup, record or object does not exist.
    NotFound,
    /// A stored object failed its integrity checks.
    Integrity,
    /// The key is missing, wrong or cannot unwrap.
    Key,
    /// The database could not be reached or dumped.
    Database,
    /// Storage or catalog trouble.
    Storage,
    /// The state of a backup forbids the operation, or another writer won a race.
    Conflict,
    /// A verification restored the backup and found it differs from its manifest, or the
    /// archive did not restore.
    Verification,
    /// A database role lacks a privilege the operation needs (e.g. CREATEDB).
    Permission,
}

impl ErrorKind {
    /// Process exit code for the `pgkeep` command (2 is clap's usage error).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Config => 2,
            ErrorKind::Integrity => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::Key => 5,
            ErrorKind::Database => 6,
            ErrorKind::Storage => 7,
            ErrorKind::Conflict => 8,
            ErrorKind::Verification => 9,
            ErrorKind::Permission => 10,
        }
    }
}

impl Error {
    /// The class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(ConfigError::Key(_)) | Error::Key(_) => ErrorKind::Key,
            Error::Config(ConfigError::Catalog(_)) => ErrorKind::Storage,
            Error::Config(_) => ErrorKind::Config,
            Error::Store(StoreError::NotFound { .. }) => ErrorKind::NotFound,
            Error::Store(StoreError::AlreadyExists { .. }) => ErrorKind::Conflict,
            Error::Store(StoreError::Unsupported { .. }) => ErrorKind::Config,
            Error::Store(_) => ErrorKind::Storage,
            Error::Catalog(CatalogError::NotFound(_))
            | Error::Catalog(CatalogError::RestoreNotFound(_)) => ErrorKind::NotFound,
            Error::Catalog(CatalogError::AlreadyExists(_))
            | Error::Catalog(CatalogError::Conflict { .. })
            | Error::Catalog(CatalogError::Transition(_)) => ErrorKind::Conflict,
            Error::Catalog(CatalogError::BadCursor(_)) => ErrorKind::Config,
            Error::Catalog(CatalogError::Backend { .. }) => ErrorKind::Storage,
            Error::Postgres(PgError::BadUrl(_)) => ErrorKind::Config,
            Error::Postgres(_) | Error::Dump(_) | Error::Archive(_) => ErrorKind::Database,
            Error::Integrity(_) => ErrorKind::Integrity,
            Error::Policy(_) => ErrorKind::Config,
            Error::Label(_) | Error::Selection(_) => ErrorKind::Config,
            Error::Unusable { .. } | Error::LeaseHeld { .. } => ErrorKind::Conflict,
            Error::Stopped(_) => ErrorKind::Database,
            Error::RestoreEnded { .. } => ErrorKind::Conflict,
            Error::DeleteRefused { .. } => ErrorKind::Conflict,
            Error::ForgetRefused { .. } => ErrorKind::Conflict,
            Error::UnknownDatabase(_) => ErrorKind::NotFound,
            Error::UnknownRun(_) => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Storage,
            Error::Scratch(PgError::BadUrl(_)) => ErrorKind::Config,
            Error::Scratch(_) => ErrorKind::Database,
            Error::Permission(_) => ErrorKind::Permission,
            Error::TargetExists { .. } => ErrorKind::Conflict,
            Error::Confirmation(_) => ErrorKind::Config,
            Error::SafetyBackup { source, .. } => source.kind(),
            Error::NoSpace { .. } => ErrorKind::Storage,
            Error::StateNotWritten { source, .. } => source.kind(),
            Error::CatalogLost { .. } => ErrorKind::Storage,
            Error::Stranded { .. } => ErrorKind::Database,
            Error::HandOff(_) => ErrorKind::Storage,
            Error::Merge(MergeError::Unreadable { .. }) => ErrorKind::Integrity,
            Error::Merge(MergeError::Mismatch(_)) => ErrorKind::Conflict,
            Error::Merge(_) => ErrorKind::Storage,
        }
    }

    /// Turns an I/O error from a read chain back into the failure it carries: a checksum
    /// mismatch, a decryption failure, or plain I/O in `context`.
    pub fn from_read(context: &'static str, err: io::Error) -> Error {
        if let Some(m) = checksum_mismatch(&err) {
            return IntegrityError::Checksum(m.clone()).into();
        }
        if crypt_error(&err).is_some() {
            let inner = err.into_inner().expect("checked above");
            return match inner.downcast::<CryptError>() {
                Ok(c) => IntegrityError::Crypt(*c).into(),
                Err(other) => Error::Io {
                    context,
                    source: io::Error::other(other),
                },
            };
        }
        if err.kind() == io::ErrorKind::InvalidData {
            return IntegrityError::Decompress(err).into();
        }
        Error::Io {
            context,
            source: err,
        }
    }
}

impl From<PipelineError> for Error {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Dump(e) => Error::Dump(e),
            PipelineError::Archive(e) => Error::Archive(e),
            PipelineError::Store(e) => Error::Store(e),
            PipelineError::Io(source) => Error::Io {
                context: "writing the backup",
                source,
            },
            PipelineError::Cancelled => Error::Io {
                context: "writing the backup",
                source: io::Error::other("stopped: another stream of the backup failed"),
            },
        }
    }
}
