//! pg_dump's stdout as it enters the pipeline: passed through untouched while the
//! [`ArchiveScanner`] reads the archive structure and counts each table's rows.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::archive_scan::{ArchiveScanError, ArchiveScanner, ArchiveSummary};
use super::Progress;

/// Reads from `R`, showing every byte to the scanner and counting it in `progress`.
pub struct ArchiveTap<R> {
    inner: R,
    scanner: ArchiveScanner,
    progress: Arc<Progress>,
}

impl<R> ArchiveTap<R> {
    /// Taps `inner`.
    pub fn new(inner: R, progress: Arc<Progress>) -> Self {
        ArchiveTap {
            inner,
            scanner: ArchiveScanner::new(),
            progress,
        }
    }

    /// Taps `inner` with a scanner set up by the caller (e.g. one
    /// [collecting objects](ArchiveScanner::collecting_objects)).
    pub fn with_scanner(inner: R, scanner: ArchiveScanner, progress: Arc<Progress>) -> Self {
        ArchiveTap {
            inner,
            scanner,
            progress,
        }
    }

    /// Archive bytes read through this tap.
    pub fn bytes_seen(&self) -> u64 {
        self.scanner.bytes_seen()
    }

    /// What the archive held; fails if it ended mid-structure.
    pub fn finish(self) -> Result<ArchiveSummary, ArchiveScanError> {
        self.scanner.finish()
    }
}

/// Finds an [`ArchiveScanError`] inside an I/O error from the tap.
pub fn scan_error(err: &io::Error) -> Option<&ArchiveScanError> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<ArchiveScanError>())
}

impl<R: AsyncRead + Unpin> AsyncRead for ArchiveTap<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            self.progress.add_archive_bytes(fresh.len() as u64);
            let this = &mut *self;
            this.scanner
                .feed(fresh)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        Poll::Ready(Ok(()))
    }
}
