//! SHA-256 and size of the bytes actually stored, computed as they stream past.
//!
//! The writer hashes on the way to storage (the digest goes in the record and the manifest);
//! the reader hashes on the way back and fails at the end of the stream on a mismatch, so a
//! corrupted object is named as such rather than as a decryption problem.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The stored object does not match its recorded checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checksum mismatch: the stored object's SHA-256 is {actual}, the record says {expected} (the object is corrupt or was replaced)")]
pub struct ChecksumMismatch {
    /// Recorded digest, hex.
    pub expected: String,
    /// Digest of what was read, hex.
    pub actual: String,
}

/// Finds a [`ChecksumMismatch`] inside an I/O error from a [`DigestReader`] chain.
pub fn checksum_mismatch(err: &io::Error) -> Option<&ChecksumMismatch> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<ChecksumMismatch>())
}

/// Passes writes through to `W`, hashing and counting the bytes `W` accepted.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> DigestWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the lowercase hex SHA-256 and the byte count of everything written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for DigestWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Passes reads through from `R`, and at end of stream fails unless the SHA-256 of everything
/// read equals `expected`.
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    expected: Option<String>,
    checked: bool,
}

impl<R> DigestReader<R> {
    /// Checks against `expected` (lowercase hex) at EOF; `None` only measures.
    pub fn new(inner: R, expected: Option<String>) -> Self {
        DigestReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            expected,
            checked: false,
        }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for DigestReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() && buf.remaining() > 0 {
            if !self.checked {
                self.checked = true;
                if let Some(expected) = self.expected.clone() {
                    let actual = hex::encode(self.hasher.clone().finalize());
                    if actual != expected {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            ChecksumMismatch { expected, actual },
                        )));
                    }
                }
            }
        } else {
            let n = fresh.len() as u64;
            self.hasher.update(fresh);
            self.bytes += n;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[tokio::test]
    async fn writer_hashes_what_passes() {
        let mut w = DigestWriter::new(Vec::new());
        w.write_all(b"a").await.unwrap();
        w.write_all(b"bc").await.unwrap();
        w.shutdown().await.unwrap();
        let (inner, hex, n) = w.finish();
        assert_eq!((inner.as_slice(), hex.as_str(), n), (&b"abc"[..], ABC, 3));
    }

    #[tokio::test]
    async fn reader_accepts_the_right_digest_and_names_a_wrong_one() {
        let mut out = Vec::new();
        DigestReader::new(&b"abc"[..], Some(ABC.into()))
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, b"abc");
        let err = DigestReader::new(&b"abd"[..], Some(ABC.into()))
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        let mismatch = checksum_mismatch(&err).expect("a checksum error");
        assert_eq!(mismatch.expected, ABC);
    }
}
