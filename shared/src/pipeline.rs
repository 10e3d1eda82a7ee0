//! The streaming backup pipeline: pg_dump's archive flows through small adapters to storage.
//!
//! Backup: `pg_dump stdout → PipeBatches → ArchiveTap (row counts) → CompressWriter →
//! EncryptWriter → DigestWriter (SHA-256, size) → ObjectUpload`; the object is committed only
//! after pg_dump exited 0 and the archive scanned complete. Reading reverses it: `ObjectReader →
//! DigestReader → header → DecryptReader → DecompressReader → the pg_dump archive`.
//! Memory stays bounded: each stage holds at most a chunk or two.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStdout;

use crate::keys::DataKey;
use crate::model::{ArchiveInfo, Compression, CompressionChoice, TableEntry};
use crate::store::{ObjectUpload, StoreError};

pub(crate) mod archive_format;
pub mod archive_merge;
pub mod archive_scan;
pub mod archive_tap;
pub mod compress;
pub mod crypt;
pub mod digest;
pub mod pg_dump;
pub mod pg_restore;
pub mod pipe_batches;

use archive_scan::{ArchiveScanError, ArchiveSummary};
use archive_tap::ArchiveTap;
use compress::{CompressWriter, DecompressReader};
use crypt::{DecryptReader, EncryptWriter, Header};
use digest::DigestWriter;
use pg_dump::{DumpError, PgDump};
use pipe_batches::PipeBatches;

/// Asks for a 1 MiB pipe instead of Linux's 64 KiB default, for the pipes between the pipeline
/// and pg_dump or pg_restore: fewer wake-ups and larger reads while they run on different cores
/// (about 1 of 4.7 CPU seconds off a `verify --jobs 2`). Best effort: the kernel may refuse.
pub(crate) fn widen_pipe(end: &impl std::os::fd::AsFd) {
    #[cfg(target_os = "linux")]
    let _ = rustix::pipe::fcntl_setpipe_size(end, 1 << 20);
    #[cfg(not(target_os = "linux"))]
    let _ = end;
}

/// How far a running backup has got, readable from another task (progress bars, logs).
#[derive(Debug, Default)]
pub struct Progress {
    archive_bytes: AtomicU64,
}

impl Progress {
    /// Bytes of pg_dump output consumed so far.
    pub fn archive_bytes(&self) -> u64 {
        self.archive_bytes.load(Ordering::Relaxed)
    }

    fn add_archive_bytes(&self, n: u64) {
        self.archive_bytes.fetch_add(n, Ordering::Relaxed);
    }
}

/// Why the pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// pg_dump failed.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// pg_dump's output was not an archive pgkeep can read.
    #[error("reading pg_dump's archive: {0}")]
    Archive(#[from] ArchiveScanError),
    /// The store refused the object.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the stream failed.
    #[error("writing the backup stream: {0}")]
    Io(io::Error),
    /// Stopped because another stream of the same backup failed.
    #[error("stopped: another stream of the backup failed")]
    Cancelled,
}

impl From<io::Error> for PipelineError {
    fn from(e: io::Error) -> Self {
        // The tap reports scan failures as I/O errors; give them back their type.
        match e
            .get_ref()
            .and_then(|s| s.downcast_ref::<ArchiveScanError>())
        {
            Some(_) => {
                let inner = e.into_inner().expect("checked above");
                match inner.downcast::<ArchiveScanError>() {
                    Ok(scan) => PipelineError::Archive(*scan),
                    Err(other) => {
                        PipelineError::Io(io::Error::new(io::ErrorKind::InvalidData, other))
                    }
                }
            }
            None => PipelineError::Io(e),
        }
    }
}

/// Tuning for the backup stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Compression of the archive, and its level.
    pub compression: CompressionChoice,
    /// zstd worker threads (0 = compress on the pipeline's own thread).
    pub zstd_workers: u32,
}

/// What was stored.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// Stored size in bytes.
    pub size: u64,
    /// Uncompressed archive size.
    pub archive_bytes: u64,
    /// What the archive held.
    pub archive: ArchiveSummary,
}

impl StoredObject {
    /// What the archive holds, as the manifest records it.
    pub fn archive_info(&self) -> ArchiveInfo {
        let archive = &self.archive;
        ArchiveInfo {
            format: "pg_dump custom".into(),
            archive_version: archive.archive_version.clone(),
            dump_version: archive.dump_version.clone(),
            archive_bytes: self.archive_bytes,
            tables: archive
                .tables
                .iter()
                .map(|t| TableEntry {
                    schema: t.schema.clone(),
                    table: t.table.clone(),
                    rows: t.rows,
                })
                .collect(),
            schema_only_tables: archive.schema_only_tables.clone(),
            large_objects: archive.large_objects,
        }
    }
}

/// Streams pg_dump's output into `upload` and commits it only if pg_dump succeeded and the
/// archive was complete; on any failure the upload is aborted and nothing remains.
pub async fn store_archive(
    dump: PgDump,
    stdout: ChildStdout,
    upload: Box<dyn ObjectUpload>,
    header: Header,
    key: &DataKey,
    options: StreamOptions,
    progress: Arc<Progress>,
) -> Result<StoredObject, PipelineError> {
    let (upload, stored) = stream_archive(
        dump,
        stdout,
        upload,
        header,
        key,
        options,
        progress,
        std::future::pending(),
    )
    .await?;
    upload.commit().await?;
    Ok(stored)
}

/// [`store_archive`] without the commit: the whole stream, checked, in an upload still open,
/// for a caller that publishes several objects together (a parallel backup's parts). When
/// `cancel` completes first (another part failed), pg_dump is killed and the upload aborted;
/// on any failure nothing remains.
#[allow(clippy::too_many_arguments)]
pub async fn stream_archive(
    dump: PgDump,
    stdout: ChildStdout,
    upload: Box<dyn ObjectUpload>,
    header: Header,
    key: &DataKey,
    options: StreamOptions,
    progress: Arc<Progress>,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<(Box<dyn ObjectUpload>, StoredObject), PipelineError> {
    let stdout = match stdout.into_owned_fd().and_then(PipeBatches::spawn) {
        Ok(batches) => batches,
        Err(e) => {
            discard(upload).await;
            return Err(PipelineError::Io(e));
        }
    };
    let mut tap = ArchiveTap::new(stdout, progress.clone());
    let sealed = EncryptWriter::new(DigestWriter::new(upload), header, key);
    let mut compressed = CompressWriter::new(sealed, options.compression, options.zstd_workers);
    let streamed: Result<(), PipelineError> = async {
        tokio::select! {
            pumped = pump(&mut tap, &mut compressed) => { pumped?; }
            () = cancel => {
                // Dropping `dump` below kills pg_dump (kill_on_drop).
                return Err(PipelineError::Cancelled);
            }
        }
        // The archive ended; only pg_dump's exit status says whether it is whole.
        dump.finish().await?;
        compressed.shutdown().await?;
        Ok(())
    }
    .await;
    let archive_bytes = tap.bytes_seen();
    let (upload, sha256, size) = compressed.into_inner().into_inner().finish();
    let scanned = streamed.and_then(|()| tap.finish().map_err(PipelineError::from));
    match scanned {
        Ok(archive) => Ok((
            upload,
            StoredObject {
                sha256,
                size,
                archive_bytes,
                archive,
            },
        )),
        Err(e) => {
            discard(upload).await;
            Err(e)
        }
    }
}

/// Stores `bytes` (a whole plain object, such as a globals script) through the same
/// compression, encryption and checksum as an archive; committed only when all was written.
/// Returns the SHA-256 and size of the stored bytes.
pub async fn store_bytes(
    bytes: &[u8],
    upload: Box<dyn ObjectUpload>,
    header: Header,
    key: &DataKey,
    options: StreamOptions,
) -> Result<(String, u64), PipelineError> {
    let sealed = EncryptWriter::new(DigestWriter::new(upload), header, key);
    let mut compressed = CompressWriter::new(sealed, options.compression, options.zstd_workers);
    let written: Result<(), PipelineError> = async {
        compressed.write_all(bytes).await?;
        compressed.shutdown().await?;
        Ok(())
    }
    .await;
    let (upload, sha256, size) = compressed.into_inner().into_inner().finish();
    match written {
        Ok(()) => {
            upload.commit().await?;
            Ok((sha256, size))
        }
        Err(e) => {
            discard(upload).await;
            Err(e)
        }
    }
}

/// Copies `from` to `to` until end of stream without ever flushing `to`: a flush would make
/// the compressor end its block (and zstd's workers finish their jobs) whenever pg_dump is
/// momentarily slower than we are, which costs both ratio and parallelism. (tokio's `copy`
/// flushes whenever the reader would block.) The final flush comes with `shutdown()`.
/// Aborts an upload the pipeline cannot finish; a failure to do so is logged, not returned
/// (the caller's error is the one that matters, and the reaper removes what remains).
async fn discard(upload: Box<dyn ObjectUpload>) {
    if let Err(abort) = upload.abort().await {
        tracing::error!(error = %abort, "could not discard the partial backup object");
    }
}

async fn pump<R, W>(from: &mut R, to: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// The plain pg_dump archive from an object whose header has been read (from `sealed`) and
/// whose data key has been unwrapped. Errors surface as I/O errors carrying a
/// [`crypt::CryptError`], [`digest::ChecksumMismatch`] or a decompression error.
pub fn archive_reader<R>(
    sealed: R,
    header: Header,
    key: &DataKey,
    compression: Compression,
) -> DecompressReader<BufReader<DecryptReader<R>>>
where
    R: AsyncRead + Unpin,
{
    DecompressReader::new(
        BufReader::with_capacity(1 << 16, DecryptReader::new(sealed, header, key)),
        compression,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::crypt::HeaderFields;
    use crate::store::fs::FsStore;
    use crate::store::ObjectStore;
    use crate::testing::{Faults, FaultyStore};
    use tokio::io::AsyncReadExt;
    use tokio::process::Command;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/archive/sample-pg15.dump"
    );
    const KEY: &str = "db/2026/11/x.pgkeep";

    fn header() -> Header {
        Header::new(
            HeaderFields {
                backup_id: "b".into(),
                database: "db".into(),
                compression: "zstd".into(),
                key_id: "test".into(),
                wrapped_key: vec![1, 2, 3],
            },
            4096,
        )
        .unwrap()
    }

    /// A stand-in for pg_dump: a shell script, so exit codes and partial output are exact.
    fn fake_dump(script: &str) -> (PgDump, ChildStdout) {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).env("FIXTURE", FIXTURE);
        PgDump::spawn_command(cmd).unwrap()
    }

    async fn run(store: &dyn ObjectStore, script: &str) -> Result<StoredObject, PipelineError> {
        let (dump, stdout) = fake_dump(script);
        let upload = store.create(KEY).await.unwrap();
        let key = DataKey::new([7u8; 32]);
        let options = StreamOptions {
            compression: Compression::Zstd.into(),
            zstd_workers: 1,
        };
        store_archive(
            dump,
            stdout,
            upload,
            header(),
            &key,
            options,
            Arc::default(),
        )
        .await
    }

    /// Every file under `dir`, temporary ones included.
    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                out.extend(files(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
        out
    }

    #[tokio::test]
    async fn a_real_archive_is_stored_counted_and_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        let stored = run(&store, "cat \"$FIXTURE\"").await.unwrap();
        let original = std::fs::read(FIXTURE).unwrap();
        assert_eq!(stored.archive_bytes, original.len() as u64);
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(FIXTURE.replace(".dump", ".counts.json")).unwrap(),
        )
        .unwrap();
        let counted: Vec<(String, String, u64)> = stored
            .archive
            .tables
            .iter()
            .map(|t| (t.schema.clone(), t.table.clone(), t.rows))
            .collect();
        let mut wanted: Vec<(String, String, u64)> = expected["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["schema"].as_str().unwrap().into(),
                    t["table"].as_str().unwrap().into(),
                    t["count"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut got = counted.clone();
        got.sort();
        wanted.sort();
        assert_eq!(got, wanted);

        let stored_bytes = store.get(KEY).await.unwrap();
        assert_eq!(stored_bytes.len() as u64, stored.size);
        assert_eq!(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored_bytes)),
            stored.sha256
        );

        let mut sealed = digest::DigestReader::new(&stored_bytes[..], Some(stored.sha256.clone()));
        let h = Header::read_from(&mut sealed).await.unwrap();
        let mut plain = Vec::new();
        archive_reader(sealed, h, &DataKey::new([7u8; 32]), Compression::Zstd)
            .read_to_end(&mut plain)
            .await
            .unwrap();
        assert_eq!(plain, original);
    }

    #[tokio::test]
    async fn a_failing_dump_leaves_nothing_even_after_a_whole_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        let err = run(
            &store,
            "cat \"$FIXTURE\"; echo 'pg_dump: error: lost connection' >&2; exit 1",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PipelineError::Dump(_)), "{err}");
        assert!(err.to_string().contains("lost connection"));
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }

    #[tokio::test]
    async fn a_cut_or_foreign_archive_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path());
        let err = run(&store, "head -c 30000 \"$FIXTURE\"").await.unwrap_err();
        assert!(matches!(err, PipelineError::Archive(_)), "{err}");
        let err = run(&store, "printf 'this is not an archive'")
            .await
            .unwrap_err();
        assert!(matches!(err, PipelineError::Archive(_)), "{err}");
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }

    #[tokio::test]
    async fn storage_failures_mid_stream_or_at_commit_leave_nothing() {
        for faults in [
            Faults {
                write_after: Some(5000),
                ..Faults::default()
            },
            Faults {
                commit: true,
                ..Faults::default()
            },
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = FaultyStore::new(Arc::new(FsStore::new(dir.path())), faults);
            let err = run(&store, "cat \"$FIXTURE\"").await.unwrap_err();
            assert!(err.to_string().contains("injected"), "{faults:?}: {err}");
            assert!(
                files(dir.path()).is_empty(),
                "{faults:?}: {:?}",
                files(dir.path())
            );
        }
    }
}
