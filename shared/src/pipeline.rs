//! The streaming backup pipeline: pg_dump's archive flows through small adapters to storage.
//!
//! Backup: `pg_dump stdout → ArchiveTap (row counts) → CompressWriter → EncryptWriter →
//! DigestWriter (SHA-256, size) → ObjectUpload`; the object is committed only after pg_dump
//! exited 0 and the archive scanned complete. Reading reverses it: `ObjectReader →
//! DigestReader → header → DecryptReader → DecompressReader → the pg_dump archive`.
//! Memory stays bounded: each stage holds at most a chunk or two.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::ChildStdout;

use crate::keys::DataKey;
use crate::model::Compression;
use crate::store::{ObjectUpload, StoreError};

pub mod archive_scan;
pub mod archive_tap;
pub mod compress;
pub mod crypt;
pub mod digest;
pub mod pg_dump;

use archive_scan::{ArchiveScanError, ArchiveSummary};
use archive_tap::ArchiveTap;
use compress::{CompressWriter, DecompressReader};
use crypt::{DecryptReader, EncryptWriter, Header};
use digest::DigestWriter;
use pg_dump::{DumpError, PgDump};

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
    /// Compression of the archive.
    pub compression: Compression,
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
    let mut tap = ArchiveTap::new(stdout, progress.clone());
    let sealed = EncryptWriter::new(DigestWriter::new(upload), header, key);
    let mut compressed = CompressWriter::new(sealed, options.compression, options.zstd_workers);
    let streamed: Result<(), PipelineError> = async {
        let mut source = BufReader::with_capacity(1 << 20, &mut tap);
        tokio::io::copy_buf(&mut source, &mut compressed).await?;
        // The archive ended; only pg_dump's exit status says whether it is whole.
        dump.finish().await?;
        compressed.shutdown().await?;
        Ok(())
    }
    .await;
    let (upload, sha256, size) = compressed.into_inner().into_inner().finish();
    let scanned = streamed.and_then(|()| tap.finish().map_err(PipelineError::from));
    match scanned {
        Ok(archive) => {
            upload.commit().await?;
            Ok(StoredObject {
                sha256,
                size,
                archive_bytes: progress.archive_bytes(),
                archive,
            })
        }
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::error!(error = %abort, "could not discard the partial backup object");
            }
            Err(e)
        }
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
