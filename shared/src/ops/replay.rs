//! Reading a backup into the places verify and restore need it (pg_restore's stdin, a staged
//! file, or nowhere but the checks), and saying whose fault a failure is.
//!
//! Every replay reads the object to its end, even after pg_restore stopped reading, so the
//! SHA-256 of the whole object and the final chunk are always checked. When reading fails for
//! an integrity reason, the object is hashed again on its own: if its SHA-256 differs from the
//! record, that is the reason given (a flipped byte usually breaks a chunk's authentication
//! before the checksum can be known at the end of the stream).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;

use super::read::{open_archive_with_header, ArchiveStream};
use super::{Error, IntegrityError};
use crate::backends::Services;
use crate::keys::KeyError;
use crate::model::{BackupRecord, Manifest};
use crate::pipeline::archive_scan::{ArchiveScanError, ArchiveScanner, ArchiveSummary};
use crate::pipeline::archive_tap::{scan_error, ArchiveTap};
use crate::pipeline::crypt::HeaderFields;
use crate::pipeline::digest::ChecksumMismatch;
use crate::pipeline::Progress;
use crate::store::StoreError;

/// Why a backup could not be read.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The backup itself is bad: object or manifest missing, corrupt, truncated, not an archive.
    Backup(Error),
    /// Something outside the backup failed: the store, the key, a local file.
    Environment(Error),
}

impl ReadFailure {
    /// The error, whoever is at fault.
    pub fn into_error(self) -> Error {
        match self {
            ReadFailure::Backup(e) | ReadFailure::Environment(e) => e,
        }
    }
}

/// Where a replay writes the archive.
pub(crate) enum Sink {
    /// A child's stdin. It may stop reading early (`pg_restore --list` does, and so may a
    /// pg_restore that failed); its exit status, checked by the caller, decides.
    Child(ChildStdin),
    /// A file that must receive every byte; it is synced at the end.
    File(tokio::fs::File),
}

/// Reads and parses the manifest stored beside the object.
pub(crate) async fn read_manifest(
    services: &Services,
    record: &BackupRecord,
) -> Result<Manifest, ReadFailure> {
    let key = record.manifest_key();
    let bytes = services.store.get(&key).await.map_err(|e| match e {
        StoreError::NotFound { .. } => ReadFailure::Backup(Error::Store(e)),
        other => ReadFailure::Environment(Error::Store(other)),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ReadFailure::Backup(Error::Integrity(IntegrityError::BadManifest {
            key,
            message: e.to_string(),
        }))
    })
}

/// Opens the backup's archive stream (header checked, data key unwrapped).
pub(crate) async fn open(
    services: &Services,
    record: &BackupRecord,
) -> Result<ArchiveStream, ReadFailure> {
    Ok(open_with_header(services, record).await?.1)
}

/// [`open`], also returning the object header's fields.
pub(crate) async fn open_with_header(
    services: &Services,
    record: &BackupRecord,
) -> Result<(HeaderFields, ArchiveStream), ReadFailure> {
    match open_archive_with_header(services, &record.id).await {
        Ok((_, header, stream)) => Ok((header, stream)),
        Err(e) => Err(classify(services, record, e).await),
    }
}

/// Opens one data part (`part` from [`BackupRecord::for_part`]).
pub(crate) async fn open_part(
    services: &Services,
    part: &BackupRecord,
) -> Result<ArchiveStream, ReadFailure> {
    match super::read::open_part(services, part).await {
        Ok((_, stream)) => Ok(stream),
        Err(e) => Err(classify(services, part, e).await),
    }
}

/// Copies the whole archive into `sinks`, reading it to its end, and returns what the archive
/// declares (tables with row counts, large objects, schema objects).
pub(crate) async fn replay(
    services: &Services,
    record: &BackupRecord,
    stream: ArchiveStream,
    mut sinks: Vec<Sink>,
    progress: Arc<Progress>,
) -> Result<ArchiveSummary, ReadFailure> {
    let mut tap =
        ArchiveTap::with_scanner(stream, ArchiveScanner::new().collecting_objects(), progress);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match tap.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                if let Some(scan) = scan_error(&e) {
                    return Err(ReadFailure::Backup(not_an_archive(scan)));
                }
                let error = Error::from_read("reading the backup", e);
                return Err(classify(services, record, error).await);
            }
        };
        let chunk = &buf[..n];
        let mut closed = Vec::new();
        for (i, sink) in sinks.iter_mut().enumerate() {
            match sink {
                // The child stopped reading: it is done or failed; its exit status will say.
                Sink::Child(stdin) => {
                    if stdin.write_all(chunk).await.is_err() {
                        closed.push(i);
                    }
                }
                Sink::File(file) => file.write_all(chunk).await.map_err(|source| {
                    ReadFailure::Environment(Error::Io {
                        context: "writing the staged archive",
                        source,
                    })
                })?,
            }
        }
        for i in closed.into_iter().rev() {
            sinks.remove(i);
        }
    }
    let summary = tap
        .finish()
        .map_err(|e| ReadFailure::Backup(not_an_archive(&e)))?;
    for sink in sinks {
        match sink {
            Sink::Child(mut stdin) => {
                let _ = stdin.shutdown().await;
            }
            Sink::File(mut file) => {
                file.flush().await.map_err(|source| {
                    ReadFailure::Environment(Error::Io {
                        context: "writing the staged archive",
                        source,
                    })
                })?;
                file.sync_all().await.map_err(|source| {
                    ReadFailure::Environment(Error::Io {
                        context: "syncing the staged archive",
                        source,
                    })
                })?;
            }
        }
    }
    Ok(summary)
}

/// An authenticated archive that does not parse: pgkeep stored something that is not a
/// complete pg_dump archive.
fn not_an_archive(e: &ArchiveScanError) -> Error {
    Error::Integrity(IntegrityError::NotAnArchive(e.clone()))
}

/// Decides whose fault a read failure is, preferring a checksum mismatch as the reason for
/// any integrity failure.
async fn classify(services: &Services, record: &BackupRecord, error: Error) -> ReadFailure {
    match error {
        Error::Store(StoreError::NotFound { .. }) => ReadFailure::Backup(error),
        Error::Integrity(_) | Error::Key(KeyError::UnwrapFailed { .. }) => {
            match checksum_of_stored_object(services, record).await {
                Some(mismatch) => ReadFailure::Backup(IntegrityError::Checksum(mismatch).into()),
                None if matches!(error, Error::Integrity(_)) => ReadFailure::Backup(error),
                // An intact object whose data key does not unwrap: the key is at fault.
                None => ReadFailure::Environment(error),
            }
        }
        other => ReadFailure::Environment(other),
    }
}

/// Hashes the stored object on its own; `Some` when its SHA-256 differs from the record.
async fn checksum_of_stored_object(
    services: &Services,
    record: &BackupRecord,
) -> Option<ChecksumMismatch> {
    let expected = record.sha256.clone()?;
    let mut object = services.store.open(&record.object_key).await.ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match object.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) => {
                tracing::warn!(key = %record.object_key, error = %e, "could not hash the stored object");
                return None;
            }
        }
    }
    let actual = hex::encode(hasher.finalize());
    (actual != expected).then_some(ChecksumMismatch { expected, actual })
}
