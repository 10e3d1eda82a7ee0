//! The orphan sweep: what the repository and the staging directory hold that no live run owns
//! (a killed run's hidden partial file or open multipart upload, a killed `restore --jobs`'s
//! plaintext staged archive). Prune lists them in its plan and removes them.
//!
//! Ownership, never age alone, decides for anything a live run may still be writing:
//!
//! - an unfinished upload whose key is a backup's object or manifest belongs to that backup's
//!   run: kept while the record is `in_progress` and the run is not abandoned (see
//!   [`super::reaper`]), an orphan otherwise;
//! - an unfinished upload no record names (a run that never recorded itself, or something
//!   started after the catalog was read) is an orphan only once older than the abandon-after;
//! - a staged archive is named after its process (host, pid, start time: see
//!   [`staged_file_name`]); it is an orphan once that process is gone on this host. One from
//!   another host is left alone (its process cannot be judged from here); one named the old
//!   way (no process) is an orphan once older than the abandon-after.
//!
//! Only names of our own patterns are considered, and symbolic links are never followed or
//! removed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Error;
use crate::backends::Services;
use crate::model::{BackupId, BackupRecord, BackupStatus, ProcessIdentity};
use crate::store::PartialUpload;

/// How staged archive names start.
const STAGED_PREFIX: &str = ".pgkeep-restore-";
/// How staged archive names end.
const STAGED_SUFFIX: &str = ".dump";

/// Something no live run owns, to be removed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Orphan {
    /// An unfinished upload in the repository: a hidden partial file (directory) or an open
    /// multipart upload (S3).
    Upload {
        /// The upload.
        #[serde(flatten)]
        upload: PartialUpload,
        /// The backup whose run wrote it, when a record names its key.
        backup: Option<BackupId>,
        /// Why no live run owns it.
        why: String,
    },
    /// A plaintext archive staged by a `restore --jobs` whose process is gone.
    Staged {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// When it was last written.
        modified: Option<DateTime<Utc>>,
        /// Why no live run owns it.
        why: String,
    },
}

impl Orphan {
    /// Its size in bytes (0 when the store would not say).
    pub fn size(&self) -> u64 {
        match self {
            Orphan::Upload { upload, .. } => upload.size.unwrap_or(0),
            Orphan::Staged { size, .. } => *size,
        }
    }

    /// What it is, for a person.
    pub fn describe(&self) -> String {
        match self {
            Orphan::Upload { upload, why, .. } => {
                format!("unfinished upload of {} ({why})", upload.key)
            }
            Orphan::Staged { path, why, .. } => {
                format!("staged restore file {} ({why})", path.display())
            }
        }
    }
}

/// What a sweep removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Swept {
    /// How many orphans were removed.
    pub count: usize,
    /// Their bytes (of those whose size is known).
    pub bytes: u64,
    /// What each was ([`Orphan::describe`]).
    pub removed: Vec<String>,
    /// Orphans left because their backup's run turned out to be alive.
    pub kept: Vec<String>,
}

/// The unfinished uploads under `prefix` that no live run owns. `records` are the catalog's
/// records for the prefix, `abandoned` those of them whose runs are dead.
pub async fn find_uploads(
    services: &Services,
    prefix: &str,
    records: &[BackupRecord],
    abandoned: &BTreeSet<&BackupId>,
    older_than: DateTime<Utc>,
) -> Result<Vec<Orphan>, Error> {
    let mut owners: BTreeMap<String, &BackupRecord> = BTreeMap::new();
    for r in records {
        // Every key the run writes: a parallel run's data parts too (a long run's part
        // uploads are older than the abandon-after and would otherwise look unowned).
        for key in r.object_keys() {
            owners.insert(key, r);
        }
        owners.insert(r.manifest_key(), r);
    }
    let mut out = Vec::new();
    for upload in services.store.partial_uploads(prefix).await? {
        let (backup, why) = match owners.get(&upload.key) {
            Some(r) if r.status == BackupStatus::InProgress && !abandoned.contains(&r.id) => {
                continue
            }
            Some(r) if r.status == BackupStatus::InProgress => (
                Some(r.id.clone()),
                format!("backup {} was abandoned by its run", r.id),
            ),
            Some(r) => (
                Some(r.id.clone()),
                format!("backup {} is {}", r.id, r.status),
            ),
            None if upload.started.is_some_and(|t| t < older_than) => (
                None,
                "no backup names it and it is older than the abandon-after".to_owned(),
            ),
            None => continue,
        };
        out.push(Orphan::Upload {
            upload,
            backup,
            why,
        });
    }
    Ok(out)
}

/// The staged restore archives in `dir` whose process is gone (see the module documentation).
pub fn find_staged(dir: &Path, older_than: DateTime<Utc>) -> io::Result<Vec<Orphan>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let me = crate::process::current();
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(owner) = parse_staged_name(name) else {
            continue;
        };
        // `file_type` does not follow links: a symlink is not a file here.
        if !entry.file_type()?.is_file() {
            continue;
        }
        let meta = entry.metadata()?;
        let modified = meta.modified().ok().map(DateTime::<Utc>::from);
        let why = match (owner, &me) {
            (Some((host, pid, started)), Some(me)) if host == host_tag(&me.host) => {
                let process = ProcessIdentity {
                    host: me.host.clone(),
                    pid,
                    started,
                };
                if !crate::process::is_gone(&process) {
                    continue;
                }
                format!("its restore process (pid {pid}) is gone")
            }
            // Another host's restore: its process cannot be judged from here.
            (Some(_), _) => continue,
            (None, _) if modified.is_some_and(|m| m < older_than) => {
                "it names no process and is older than the abandon-after".to_owned()
            }
            (None, _) => continue,
        };
        out.push(Orphan::Staged {
            path: entry.path(),
            size: meta.len(),
            modified,
            why,
        });
    }
    out.sort_by_key(Orphan::describe);
    Ok(out)
}

/// Removes `orphans` and says what was removed. An upload whose backup is `in_progress` again
/// by now (its run was not dead after all) is kept.
pub async fn remove(services: &Services, orphans: &[Orphan]) -> Result<Swept, Error> {
    let mut swept = Swept::default();
    for orphan in orphans {
        match orphan {
            Orphan::Upload { upload, backup, .. } => {
                if let Some(id) = backup {
                    let record = services.catalog.get(id).await?;
                    if record.status == BackupStatus::InProgress {
                        swept.kept.push(orphan.describe());
                        continue;
                    }
                }
                services.store.discard_partial_upload(upload).await?;
            }
            Orphan::Staged { path, .. } => remove_staged(path).map_err(|source| Error::Io {
                context: "removing a staged restore file",
                source,
            })?,
        }
        swept.count += 1;
        swept.bytes += orphan.size();
        swept.removed.push(orphan.describe());
    }
    Ok(swept)
}

/// Removes the staged files in `dir` whose restore process is gone on this host (what a
/// killed `restore --jobs` left), before a restore stages its own; failures are only logged
/// (prune sweeps again).
pub async fn remove_staged_of_gone_processes(dir: &Path) {
    let dir = dir.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        // No age qualifies: files without a process are left to prune.
        let orphans = find_staged(&dir, DateTime::<Utc>::MIN_UTC)?;
        let mut bytes = 0;
        for o in &orphans {
            if let Orphan::Staged { path, size, .. } = o {
                remove_staged(path)?;
                bytes += size;
            }
        }
        Ok::<_, io::Error>((orphans.len(), bytes))
    })
    .await;
    match result {
        Ok(Ok((0, _))) => {}
        Ok(Ok((count, bytes))) => {
            tracing::warn!(
                count,
                bytes,
                "removed staged files of restores that were killed"
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not sweep the staging directory; prune will")
        }
        Err(e) => tracing::warn!(error = %e, "could not sweep the staging directory; prune will"),
    }
}

/// Removes a staged file only if it still is a regular file of our naming.
fn remove_staged(path: &Path) -> io::Result<()> {
    let ours = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_staged_name)
        .is_some();
    if !ours {
        return Ok(());
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The name of the file `restore --jobs` stages backup `id` in:
/// `.pgkeep-restore-ID-HOST.PID.START-RANDOM.dump`, naming the process that owns it (a short
/// hash of the host and PID namespace, the pid and its start time) so the sweep can tell when
/// it is gone. Without a process identity (no `/proc`) the process part is left out.
pub fn staged_file_name(id: &BackupId, random: &str) -> String {
    match crate::process::current() {
        Some(me) => format!(
            "{STAGED_PREFIX}{id}-{}.{}.{}-{random}{STAGED_SUFFIX}",
            host_tag(&me.host),
            me.pid,
            me.started
        ),
        None => format!("{STAGED_PREFIX}{id}-{random}{STAGED_SUFFIX}"),
    }
}

/// A process's host, shortened for a file name.
fn host_tag(host: &str) -> String {
    hex::encode(&Sha256::digest(host.as_bytes())[..4])
}

/// `Some(owner)` when `name` is a staged archive's: the owner's (host tag, pid, start time),
/// or `None` for a name without a process.
#[allow(clippy::type_complexity)]
fn parse_staged_name(name: &str) -> Option<Option<(String, u32, u64)>> {
    let rest = name
        .strip_prefix(STAGED_PREFIX)?
        .strip_suffix(STAGED_SUFFIX)?;
    let (rest, random) = rest.rsplit_once('-')?;
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_hexdigit()) || rest.is_empty() {
        return None;
    }
    let owner = rest.rsplit_once('-').and_then(|(id, owner)| {
        let mut parts = owner.split('.');
        let host = parts.next()?;
        let pid = parts.next()?.parse().ok()?;
        let started = parts.next()?.parse().ok()?;
        (!id.is_empty() && parts.next().is_none() && host.len() == 8)
            .then(|| (host.to_owned(), pid, started))
    });
    Some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_names_name_their_process() {
        let id = BackupId::generate(Utc::now());
        let name = staged_file_name(&id, "0a1b2c3d");
        let owner = parse_staged_name(&name).expect("ours");
        if let Some(me) = crate::process::current() {
            assert_eq!(owner, Some((host_tag(&me.host), me.pid, me.started)));
        }
        let old = format!(".pgkeep-restore-{id}-0a1b2c3d.dump");
        assert_eq!(parse_staged_name(&old), Some(None));
        for not_ours in [
            "pgkeep-restore-x-00.dump",
            ".pgkeep-restore-x-00.sql",
            ".pgkeep-restore--zz.dump",
            "notes.txt",
        ] {
            assert_eq!(parse_staged_name(not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn only_gone_owners_and_old_unnamed_files_are_orphans_and_links_are_ignored() {
        let Some(me) = crate::process::current() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let id = BackupId::generate(Utc::now());
        let mine = dir.path().join(staged_file_name(&id, "01"));
        std::fs::write(&mine, b"live").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = child.id();
        child.wait().unwrap();
        let gone = dir.path().join(format!(
            ".pgkeep-restore-{id}-{}.{gone_pid}.{}-02.dump",
            host_tag(&me.host),
            me.started
        ));
        std::fs::write(&gone, b"orphaned").unwrap();
        let elsewhere = dir
            .path()
            .join(format!(".pgkeep-restore-{id}-deadbeef.1.1-03.dump"));
        std::fs::write(&elsewhere, b"other host").unwrap();
        let unnamed = dir.path().join(format!(".pgkeep-restore-{id}-04.dump"));
        std::fs::write(&unnamed, b"old style").unwrap();
        let link = dir.path().join(format!(
            ".pgkeep-restore-{id}-{}.{gone_pid}.{}-05.dump",
            host_tag(&me.host),
            me.started
        ));
        std::os::unix::fs::symlink(&mine, &link).unwrap();

        let found = find_staged(dir.path(), Utc::now() - chrono::Duration::hours(1)).unwrap();
        let paths: Vec<_> = found
            .iter()
            .map(|o| match o {
                Orphan::Staged { path, .. } => path.clone(),
                Orphan::Upload { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(paths, vec![gone.clone()]);
        assert_eq!(found[0].size(), 8);

        let found = find_staged(dir.path(), Utc::now() + chrono::Duration::hours(1)).unwrap();
        assert_eq!(found.len(), 2, "the unnamed file is old enough now");
        for o in &found {
            if let Orphan::Staged { path, .. } = o {
                remove_staged(path).unwrap();
            }
        }
        assert!(!gone.exists() && !unnamed.exists());
        assert!(mine.exists() && elsewhere.exists() && link.symlink_metadata().is_ok());
    }
}
