//! The domain: what a backup is, the states it moves through, and the manifest stored beside it.
//!
//! Status transitions are enforced here and only here; every backend stores what this module
//! allows, and refuses a write whose expected previous status no longer holds.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::selection::Selection;

/// Identifies one backup; sorts by creation time as a plain string, so every store lists in order.
///
/// Form: `YYYYMMDDTHHMMSSmmmZ-xxxxxxxx` (UTC to the millisecond, then 8 random hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

/// Why a string is not a backup id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a backup id (expected the form 20261124T153512123Z-9f3a1c2b)")]
pub struct InvalidBackupId(pub String);

impl BackupId {
    /// A fresh id for a backup that starts at `now`.
    pub fn generate(now: DateTime<Utc>) -> Self {
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        BackupId(format!(
            "{}-{}",
            now.format("%Y%m%dT%H%M%S%3fZ"),
            hex::encode(random)
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BackupId {
    type Err = InvalidBackupId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = b.len() == 28
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..18].iter().all(u8::is_ascii_digit)
            && b[18] == b'Z'
            && b[19] == b'-'
            && b[20..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if ok {
            Ok(BackupId(s.to_owned()))
        } else {
            Err(InvalidBackupId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = InvalidBackupId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a backup was taken; retention treats the kinds differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Taken by a schedule.
    Scheduled,
    /// Asked for by a person or a script.
    Manual,
    /// The safety copy taken before a restore overwrites a database.
    PreRestore,
    /// Taken before a schema migration, to go back to if it goes wrong. Retention treats it
    /// like a manual backup; keep it longer with a per-kind window (`--keep-within-kind
    /// pre_migration=365d`) or a label (`--keep-label`).
    PreMigration,
}

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    /// pg_dump is running and the object is being written.
    InProgress,
    /// The object and manifest are stored; not yet proven by a restore.
    Completed,
    /// The dump or upload failed; `error` says why and no object remains.
    Failed,
    /// A restore into a scratch database matched the manifest.
    Verified,
    /// A verification restore did not match or could not read the object.
    VerificationFailed,
    /// Object and manifest were removed; the record stays as history.
    Deleted,
}

macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The stable lowercase name used in storage, JSON and the command line.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
            /// Every value, for help texts and validation.
            pub const ALL: &'static [$ty] = &[$(Self::$variant),*];
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    other => Err(format!(
                        "unknown {} {other:?}; expected one of: {}",
                        stringify!($ty),
                        [$($name),*].join(", ")
                    )),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(BackupKind {
    Scheduled => "scheduled",
    Manual => "manual",
    PreRestore => "pre_restore",
    PreMigration => "pre_migration",
});
names!(BackupStatus {
    InProgress => "in_progress",
    Completed => "completed",
    Failed => "failed",
    Verified => "verified",
    VerificationFailed => "verification_failed",
    Deleted => "deleted",
});

/// The newest `verified` backup among `records` (by [`BackupRecord::start_order`]): the one
/// of its database that pgkeep never deletes, and the one `status` reports. Callers pass one
/// database's records.
pub fn newest_verified<'a>(
    records: impl IntoIterator<Item = &'a BackupRecord>,
) -> Option<&'a BackupRecord> {
    records
        .into_iter()
        .filter(|r| r.status == BackupStatus::Verified)
        .max_by(|a, b| a.start_order().cmp(&b.start_order()))
}

/// A status change the lifecycle does not allow (a bug or a lost race, never user input).
#[derive(Debug, Clone, thiserror::Error)]
#[error("backup {id} cannot go from {from} to {to}")]
pub struct TransitionError {
    /// The backup concerned.
    pub id: BackupId,
    /// Its current status.
    pub from: BackupStatus,
    /// The refused target.
    pub to: BackupStatus,
}

impl BackupStatus {
    /// The one place that says which status changes are legal.
    pub fn can_become(self, to: BackupStatus) -> bool {
        use BackupStatus::*;
        matches!(
            (self, to),
            (InProgress, Completed)
                | (InProgress, Failed)
                | (Completed, Verified | VerificationFailed | Deleted)
                | (Verified, Verified | VerificationFailed | Deleted)
                | (VerificationFailed, Verified | VerificationFailed | Deleted)
                | (Failed, Deleted)
        )
    }

    /// A stored object is expected to exist for this status.
    pub fn has_object(self) -> bool {
        matches!(
            self,
            BackupStatus::Completed | BackupStatus::Verified | BackupStatus::VerificationFailed
        )
    }
}

/// Compression applied to the pg_dump archive before encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// zstd: fast and compact; the default.
    #[default]
    Zstd,
    /// gzip (RFC 1952) through flate2, for tools that only speak gzip.
    Gzip,
}

names!(Compression { Zstd => "zstd", Gzip => "gzip" });

impl Compression {
    /// The level used when none is chosen: zstd's own default (most of the ratio of the higher
    /// levels at several times their speed) and the gzip tool's.
    pub const fn default_level(self) -> i32 {
        match self {
            Compression::Zstd => 3,
            Compression::Gzip => 6,
        }
    }

    /// The levels accepted. zstd stops at 9: pgkeep compresses in 2 MiB jobs on a worker
    /// thread, and each job first reloads the end of the one before (up to the whole window);
    /// at the slow levels above that the reloading is most of the work (level 19 reloads its
    /// whole 8 MiB window per 2 MiB job), and a backup stopped with Ctrl-C took 30 s to end
    /// while its queued jobs finished.
    pub const fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Compression::Zstd => 1..=9,
            Compression::Gzip => 1..=9,
        }
    }
}

/// A compression and its level as `--compression` names them, in pg_dump's `--compress`
/// syntax: `zstd`, `zstd:1`, `gzip:9`. Only the algorithm is needed to read a backup back; the
/// level trades a backup's CPU time against its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompressionChoice {
    /// The algorithm.
    pub algorithm: Compression,
    /// The level; the algorithm's default when `None`.
    pub level: Option<i32>,
}

impl CompressionChoice {
    /// The level compressed at.
    pub fn level(self) -> i32 {
        self.level.unwrap_or(self.algorithm.default_level())
    }
}

impl From<Compression> for CompressionChoice {
    fn from(algorithm: Compression) -> Self {
        CompressionChoice {
            algorithm,
            level: None,
        }
    }
}

impl FromStr for CompressionChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, level) = match s.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (s, None),
        };
        let algorithm: Compression = name.parse()?;
        let levels = algorithm.levels();
        let level = level
            .map(|text| {
                text.parse::<i32>()
                    .ok()
                    .filter(|n| levels.contains(n))
                    .ok_or_else(|| {
                        format!(
                            "{algorithm} level {text:?} is not one of {}-{} (default {}), as in `{algorithm}:{}`",
                            levels.start(),
                            levels.end(),
                            algorithm.default_level(),
                            levels.start(),
                        )
                    })
            })
            .transpose()?;
        Ok(CompressionChoice { algorithm, level })
    }
}

impl fmt::Display for CompressionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Some(level) => write!(f, "{}:{level}", self.algorithm),
            None => write!(f, "{}", self.algorithm),
        }
    }
}

/// Everything pgkeep knows about one backup; the catalog stores it and the manifest embeds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Sortable id.
    pub id: BackupId,
    /// Name of the source database.
    pub database: String,
    /// Why it was taken.
    pub kind: BackupKind,
    /// Where it is in its life.
    pub status: BackupStatus,
    /// When the backup started.
    pub created_at: DateTime<Utc>,
    /// When the object and manifest were stored (or the run failed).
    pub completed_at: Option<DateTime<Utc>>,
    /// Key of the encrypted object in the object store.
    pub object_key: String,
    /// Size of the stored (compressed, encrypted) object in bytes.
    pub size_bytes: Option<u64>,
    /// SHA-256 of the stored object, lowercase hex.
    pub sha256: Option<String>,
    /// Compression inside the encryption.
    pub compression: Compression,
    /// The level it compressed at (absent in backups taken before pgkeep recorded it, which
    /// used the algorithm's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// Identifies the master key that wrapped this backup's data key.
    pub key_id: Option<String>,
    /// The server's version string (`SHOW server_version`).
    pub server_version: Option<String>,
    /// Exact rows per table, read from the dump itself; keys from [`qualified_name`].
    pub row_counts: BTreeMap<String, u64>,
    /// Wall time of the dump in milliseconds.
    pub duration_ms: Option<u64>,
    /// Why the backup failed, for a person to act on.
    pub error: Option<String>,
    /// The latest attempt to prove the backup by restoring it (absent until verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Free-form `key=value` labels given when the backup was asked for (see
    /// [`crate::labels`]); stored as given, so old records stay readable whatever the rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The part of the database backed up; absent (everything) in records that predate it.
    #[serde(default, skip_serializing_if = "Selection::is_everything")]
    pub selection: Selection,
    /// Tables the archive holds without their rows (`exclude_table_data`): they restore empty
    /// and have no entry in `row_counts`. Keys as in `row_counts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_only_tables: Vec<String>,
    /// The failed attempt this backup retakes, when a retried or redelivered request (a
    /// scheduled event, an API call) ran again after a failure; absent on a first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<BackupId>,
    /// Who asked for the backup: an API caller's JWT subject or IAM principal, `schedule`,
    /// `console` (a direct invocation that named nobody), `cli:<login>`; absent in records
    /// that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The data parts of a parallel backup (`backup --jobs N`, docs/FORMAT.md): the object at
    /// `object_key` then holds only the schema (pre- and post-data), each part the data of its
    /// tables. Empty (absent) for a single-stream backup, whose object holds everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<BackupPart>,
    /// The whole-server run (`backup --all-databases`) this backup belongs to: every database
    /// backup of the run and its globals backup carry the same id. A grouping only; retention
    /// and status treat each backup on its own. Absent for single backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Present only on a run's globals backup (roles, memberships, tablespaces, and the
    /// databases' owners, settings and grants; `pg_dumpall --globals-only`, not a database):
    /// what it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<GlobalsInfo>,
}

/// One data part of a parallel backup: its own encrypted object beside the schema object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPart {
    /// Key of the part's object (`<id>.data-<n>.pgkeep`, n from 1).
    pub object_key: String,
    /// Stored size in bytes; `None` while the run is in progress.
    pub size_bytes: Option<u64>,
    /// SHA-256 of the stored object, lowercase hex; `None` while the run is in progress.
    pub sha256: Option<String>,
    /// The tables whose data the part holds (keys as in `row_counts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Large objects in the part (all of them are in exactly one part).
    #[serde(default)]
    pub large_objects: u64,
    /// Uncompressed archive bytes of the part.
    #[serde(default)]
    pub archive_bytes: u64,
}

/// Key of data part `n` (from 1) of the backup whose object is `object_key`.
pub fn part_key(object_key: &str, n: usize) -> String {
    let stem = object_key.strip_suffix(".pgkeep").unwrap_or(object_key);
    format!("{stem}.data-{n}.pgkeep")
}

/// The name a run's globals backup is recorded under in place of a database name (its lease,
/// listings, object key); not a database, so a real database of this name is refused.
pub const GLOBALS_NAME: &str = "@globals";

/// What a globals backup holds, in its record and manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalsInfo {
    /// Whether the script sets role passwords; `false` when the backing-up role could not
    /// read `pg_authid` (RDS, Aurora: `pg_dumpall --no-role-passwords`), so restored roles
    /// need their passwords set again.
    pub role_passwords: bool,
    /// The server's roles when the backup was taken (`pg_*` roles aside), for verification.
    pub roles: Vec<RoleInfo>,
    /// The databases whose owner, settings and grants the script carries.
    pub databases: Vec<String>,
    /// SQL statements in the script.
    pub statements: u64,
    /// The configured database (a Lambda deployment's `PGKEEP_DATABASES` name) the run
    /// connected through, whose server verifies the run's backups; absent from the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

/// One role's attributes and memberships, as `pg_roles` shows them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoleInfo {
    /// The role's name.
    pub name: String,
    /// `SUPERUSER`.
    pub superuser: bool,
    /// `INHERIT`.
    pub inherit: bool,
    /// `CREATEROLE`.
    pub createrole: bool,
    /// `CREATEDB`.
    pub createdb: bool,
    /// `LOGIN`.
    pub login: bool,
    /// `REPLICATION`.
    pub replication: bool,
    /// `BYPASSRLS`.
    pub bypassrls: bool,
    /// `CONNECTION LIMIT` (-1: none).
    pub connection_limit: i32,
    /// Roles it is a member of, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
}

impl BackupRecord {
    /// The record of one data part for reading it: this record with the part's key and
    /// checksum in place of the schema object's.
    pub fn for_part(&self, part: &BackupPart) -> BackupRecord {
        let mut r = self.clone();
        r.object_key = part.object_key.clone();
        r.size_bytes = part.size_bytes;
        r.sha256 = part.sha256.clone();
        r.parts = Vec::new();
        r
    }

    /// Every object key of the backup: the object, then its data parts.
    pub fn object_keys(&self) -> Vec<String> {
        let mut keys = vec![self.object_key.clone()];
        keys.extend(self.parts.iter().map(|p| p.object_key.clone()));
        keys
    }

    /// A new in-progress record; the object key is fixed up front so a crash can be cleaned up.
    pub fn start(id: BackupId, database: &str, kind: BackupKind, compression: Compression) -> Self {
        let object_key = object_key(database, &id);
        BackupRecord {
            id,
            database: database.to_owned(),
            kind,
            status: BackupStatus::InProgress,
            created_at: Utc::now(),
            completed_at: None,
            object_key,
            size_bytes: None,
            sha256: None,
            compression,
            compression_level: None,
            key_id: None,
            server_version: None,
            row_counts: BTreeMap::new(),
            duration_ms: None,
            error: None,
            verification: None,
            labels: BTreeMap::new(),
            selection: Selection::everything(),
            schema_only_tables: Vec::new(),
            retry_of: None,
            requested_by: None,
            parts: Vec::new(),
            run_id: None,
            globals: None,
        }
    }

    /// A record that never held a backup: a failed run, or a failed run deleted since (its
    /// `error` says why it failed; a run that completed has none). Such a run may be retaken
    /// (a retried event) and its database forgotten (`pgkeep forget`).
    pub fn never_held_a_backup(&self) -> bool {
        match self.status {
            BackupStatus::Failed => true,
            BackupStatus::Deleted => self.error.is_some() && self.verification.is_none(),
            _ => false,
        }
    }

    /// Where the backup stands in time: its start (`created_at`), then its id for equal
    /// starts. This is the one order "newest" means everywhere (delete, prune, status,
    /// listings); the time in an id is when the backup was asked for, which can be earlier
    /// (a retried event, a queued API request; see docs/FORMAT.md).
    pub fn start_order(&self) -> (DateTime<Utc>, &BackupId) {
        (self.created_at, &self.id)
    }

    /// Moves to `to` if the lifecycle allows it.
    pub fn transition(&mut self, to: BackupStatus) -> Result<(), TransitionError> {
        if !self.status.can_become(to) {
            return Err(TransitionError {
                id: self.id.clone(),
                from: self.status,
                to,
            });
        }
        self.status = to;
        Ok(())
    }

    /// Key of the manifest stored beside the object.
    pub fn manifest_key(&self) -> String {
        manifest_key(&self.object_key)
    }

    /// Key of the state object stored beside the object (see [`BackupState`]).
    pub fn state_key(&self) -> String {
        state_key(&self.object_key)
    }
}

/// What a verification concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationResult {
    /// Restored, and every count and object matched the manifest and the archive.
    Verified,
    /// Restored, but row counts or objects differ from what the backup declares.
    Differences,
    /// The object could not be read back whole: missing, corrupt, truncated, or not an archive.
    Unreadable,
    /// pg_restore failed on the archive.
    RestoreFailed,
    /// Not decided, for a reason outside the backup (scratch server unreachable or lacking
    /// CREATEDB, key unavailable); the backup's status was left as it was.
    Inconclusive,
}

names!(VerificationResult {
    Verified => "verified",
    Differences => "differences",
    Unreadable => "unreadable",
    RestoreFailed => "restore_failed",
    Inconclusive => "inconclusive",
});

/// One proof attempt: a restore into a scratch database compared with the manifest and the
/// archive's table of contents. Stored in the record, so the recovery time and any difference
/// stay on file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// When the attempt ended.
    pub verified_at: DateTime<Utc>,
    /// Whether the backup was proven (`result` is `verified`).
    pub ok: bool,
    /// What the attempt concluded.
    pub result: VerificationResult,
    /// Why it was not verified, for a person to act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall time of pg_restore into the scratch database: the real time to recover.
    pub restore_duration_ms: Option<u64>,
    /// Wall time of the whole attempt.
    pub duration_ms: u64,
    /// The scratch server, without its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_server: Option<String>,
    /// The scratch database used (and dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_database: Option<String>,
    /// Every table of the manifest and of the restored database: rows expected and found.
    #[serde(default)]
    pub tables: Vec<TableCheck>,
    /// Large objects expected (manifest) and found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<CountCheck>,
    /// How many objects the archive declares (tables, sequences, indexes, views, functions,
    /// extensions, ...) were compared with the restored database.
    #[serde(default)]
    pub objects_checked: u64,
    /// Objects the archive declares that the restored database lacks (`index public.t_idx`).
    #[serde(default)]
    pub missing_objects: Vec<String>,
    /// Objects in the restored database that the archive does not declare.
    #[serde(default)]
    pub extra_objects: Vec<String>,
}

/// Rows of one table: what the manifest says and what the restored database holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCheck {
    /// The table, as in [`BackupRecord::row_counts`] ([`qualified_name`]).
    pub table: String,
    /// Rows according to the manifest; `None` when the manifest does not list the table.
    pub expected: Option<u64>,
    /// Rows in the restored table; `None` when it was not restored.
    pub actual: Option<u64>,
    /// The backup holds the table without its rows (`exclude_table_data`): it must be
    /// restored, and empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub schema_only: bool,
}

impl TableCheck {
    /// Whether the table was restored with exactly the manifest's rows (a schema-only table:
    /// restored, with none).
    pub fn matches(&self) -> bool {
        if self.schema_only {
            return self.actual == Some(0);
        }
        self.expected.is_some() && self.expected == self.actual
    }
}

/// A count expected and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountCheck {
    /// According to the manifest.
    pub expected: Option<u64>,
    /// Found after the restore.
    pub actual: Option<u64>,
}

/// The manifest's format version; readers refuse versions they do not know.
pub const MANIFEST_VERSION: u32 = 1;

/// A JSON document stored next to each object that describes it completely, so a repository
/// can be read, and its catalog rebuilt, with no database at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this document.
    pub manifest_version: u32,
    /// The pgkeep version that wrote it.
    pub tool_version: String,
    /// The record as it was when the backup completed.
    pub backup: BackupRecord,
    /// How the object is laid out.
    pub encryption: EncryptionInfo,
    /// What the archive contains.
    pub archive: ArchiveInfo,
}

impl Manifest {
    /// The manifest of a backup that just completed, written by this build of pgkeep.
    pub fn new(backup: BackupRecord, encryption: EncryptionInfo, archive: ArchiveInfo) -> Self {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            backup,
            encryption,
            archive,
        }
    }
}

/// The state object's format version; readers refuse versions they do not know.
pub const STATE_VERSION: u32 = 1;

/// `<id>.state.json` beside the object: the record as the catalog holds it after its last
/// change since the backup completed (verified, verification failed, deleted) or as it failed,
/// so the repository alone says where every backup stands. The manifest stays write-once; a
/// reader takes the record from here when this exists, else from the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupState {
    /// Format version of this document.
    pub state_version: u32,
    /// When it was written.
    pub written_at: DateTime<Utc>,
    /// The whole record, as stored in the catalog.
    pub record: BackupRecord,
}

impl BackupState {
    /// The state of `record` now.
    pub fn new(record: BackupRecord) -> Self {
        BackupState {
            state_version: STATE_VERSION,
            written_at: Utc::now(),
            record,
        }
    }
}

/// Enough to decrypt the object given access to the master key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    /// Object format version (see docs/FORMAT.md).
    pub format_version: u8,
    /// Always `AES-256-GCM` in format 1.
    pub aead: String,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Master key that wrapped the data key.
    pub key_id: String,
    /// The wrapped data key, standard base64.
    pub wrapped_key: String,
}

impl EncryptionInfo {
    /// An object in format `format_version` (AES-256-GCM chunks of `chunk_size` bytes) whose
    /// data key `key_id` wrapped into `wrapped_key`.
    pub fn aes_256_gcm(
        format_version: u8,
        chunk_size: u32,
        key_id: &str,
        wrapped_key: &[u8],
    ) -> Self {
        EncryptionInfo {
            format_version,
            aead: "AES-256-GCM".into(),
            chunk_size,
            key_id: key_id.to_owned(),
            wrapped_key: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                wrapped_key,
            ),
        }
    }
}

/// What pg_dump wrote, as read from the archive while it streamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// Always `pg_dump custom` for now.
    pub format: String,
    /// Custom-format archive version.
    pub archive_version: String,
    /// pg_dump's version.
    pub dump_version: String,
    /// Bytes of the uncompressed archive.
    pub archive_bytes: u64,
    /// Tables whose data the archive holds, with exact row counts.
    pub tables: Vec<TableEntry>,
    /// Ordinary tables the archive defines without their data (`exclude_table_data`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_only_tables: Vec<TableName>,
    /// Number of large objects.
    pub large_objects: u64,
}

/// A table named by its raw (unquoted) schema and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    /// Schema name, unquoted.
    pub schema: String,
    /// Table name, unquoted.
    pub table: String,
}

/// One table's data in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Schema name, unquoted.
    pub schema: String,
    /// Table name, unquoted.
    pub table: String,
    /// Exact number of rows dumped.
    pub rows: u64,
}

/// One entry of the audit trail: who did what to which backup, when, and how it ended.
///
/// Restores, deletions and verifications leave one each, so an operator can answer "who
/// restored over production last night" from the catalog alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unique, time-sortable (same form as a backup id).
    pub id: BackupId,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it: a user name, an IAM principal, `schedule`.
    pub actor: String,
    /// What was done: `restore`, `delete`, `verify`, `prune`, ...
    pub action: String,
    /// The backup concerned, if any.
    pub backup_id: Option<BackupId>,
    /// The database concerned.
    pub database: String,
    /// `ok`, or why it failed.
    pub outcome: String,
    /// Free-form particulars (target database, options, durations).
    pub details: serde_json::Value,
}

/// Who holds a database's dump lease, so a second concurrent dump can say whom it yields to.
///
/// The lease follows its run: the holder renews `expires_at` while it is alive (a heartbeat),
/// so a lease that was not renewed within its timeout belongs to a dead run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The database the lease is for.
    pub database: String,
    /// The holder (a backup id, usually).
    pub holder: String,
    /// When the lease lapses unless its holder renews it (a crashed holder cannot block for
    /// longer than one heartbeat timeout).
    pub expires_at: DateTime<Utc>,
    /// The holder's process, when known: on the same host a holder whose process is gone is
    /// dead at once, without waiting out the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessIdentity>,
}

/// A process, told apart from a later one that reuses its pid by its start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The host name and PID namespace (`db1 pid:[4026531836]`): pids compare only within one.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub started: u64,
}

/// `schema.table`, each part double-quoted when it is not a plain lowercase identifier, so the
/// key is unambiguous and reads like SQL.
pub fn qualified_name(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Quotes an SQL identifier when needed (always safe to paste into SQL).
pub fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Always-quoted identifier, for SQL we build (keywords stay safe too).
pub fn sql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `<database>/<yyyy>/<mm>/<id>.pgkeep`: grouped by database and month so listings stay cheap.
pub fn object_key(database: &str, id: &BackupId) -> String {
    let s = id.as_str();
    format!(
        "{}/{}/{}/{}.pgkeep",
        path_segment(database),
        &s[0..4],
        &s[4..6],
        s
    )
}

/// The manifest's key for an object key.
pub fn manifest_key(object_key: &str) -> String {
    let stem = object_key.strip_suffix(".pgkeep").unwrap_or(object_key);
    format!("{stem}.manifest.json")
}

/// The state object's key for an object key.
pub fn state_key(object_key: &str) -> String {
    let stem = object_key.strip_suffix(".pgkeep").unwrap_or(object_key);
    format!("{stem}.state.json")
}

/// Database names may hold any character; object keys and file names get a reversible,
/// readable encoding (percent-encoding of everything but `[A-Za-z0-9_.-]`, and a leading dot).
pub fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// RFC 3339 with milliseconds, the one time format pgkeep prints and stores.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where a restore is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreState {
    /// Accepted by the API, handed to the function that runs it; not started yet.
    Queued,
    /// Running.
    Running,
    /// Done: the target holds the backup (a dry run: the archive checked and listed).
    Succeeded,
    /// Refused or failed; `error` says why.
    Failed,
}

names!(RestoreState {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
});

/// Most bytes of a dry run's archive listing kept on its restore record (a DynamoDB item holds
/// at most 400 KB); a longer listing is cut at a line and says so.
pub const MAX_LISTING_BYTES: usize = 256 * 1024;

/// One restore (or dry run), as its caller follows it: `GET /restores/{id}`, `pgkeep restores`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRun {
    /// Sortable id (same form as a backup id).
    pub id: BackupId,
    /// The backup restored.
    pub backup_id: BackupId,
    /// The database restored into.
    pub target_db: String,
    /// Only checked and listed; nothing written.
    pub dry_run: bool,
    /// Replaces an existing target (after a safety backup).
    pub overwrite: bool,
    /// Where it is.
    pub state: RestoreState,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
    /// When it started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Running time in milliseconds (the restore time objective actually achieved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The `pre_restore` backup taken of the target before it was replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backup_id: Option<BackupId>,
    /// A dry run's `pg_restore --list` of the archive (at most [`MAX_LISTING_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<String>,
    /// Tables restored (or, in a dry run, found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<usize>,
    /// Rows restored (or found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The process running it, when known: on its host, a `running` restore whose process is
    /// gone was killed and is failed as abandoned by the reaper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessIdentity>,
    /// Its last sign of life while `running` (renewed every [`RESTORE_ALIVE_EVERY`]): one
    /// older than the abandon-after limit means its run died (a crashed host, a Lambda killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive_at: Option<DateTime<Utc>>,
}

/// How often a running restore renews [`RestoreRun::alive_at`].
pub const RESTORE_ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl RestoreRun {
    /// A restore asked for at `at`, not yet running.
    pub fn queued(id: BackupId, backup_id: BackupId, target_db: &str, at: DateTime<Utc>) -> Self {
        RestoreRun {
            id,
            backup_id,
            target_db: target_db.to_owned(),
            dry_run: false,
            overwrite: false,
            state: RestoreState::Queued,
            requested_by: None,
            requested_at: at,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            safety_backup_id: None,
            listing: None,
            tables: None,
            rows: None,
            error: None,
            process: None,
            alive_at: None,
        }
    }

    /// Ends the run as failed at `at` with `error`.
    pub fn fail(&mut self, error: String, at: DateTime<Utc>) {
        self.state = RestoreState::Failed;
        self.finished_at = Some(at);
        if let Some(started) = self.started_at {
            self.duration_ms = Some((at - started).num_milliseconds().max(0) as u64);
        }
        self.error = Some(error);
    }

    /// Whether it has ended.
    pub fn ended(&self) -> bool {
        matches!(self.state, RestoreState::Succeeded | RestoreState::Failed)
    }
}

/// `listing` cut to at most [`MAX_LISTING_BYTES`] at a line boundary, saying so when cut.
pub fn bounded_listing(listing: &str) -> String {
    if listing.len() <= MAX_LISTING_BYTES {
        return listing.to_owned();
    }
    let mut end = MAX_LISTING_BYTES;
    while !listing.is_char_boundary(end) {
        end -= 1;
    }
    let end = listing[..end].rfind('\n').map_or(end, |n| n + 1);
    format!(
        "{}; ... cut at {} of {} bytes: `pgkeep restore ID --dry-run` prints all of it\n",
        &listing[..end],
        end,
        listing.len()
    )
}

#[cfg(test)]
mod tests;
