//! Chunked authenticated encryption of backup objects (the STREAM construction).
//!
//! A backup object is a header followed by a sequence of AES-256-GCM chunks. Each chunk's
//! nonce carries its position and whether it is the last one, and every chunk authenticates
//! the whole header, so truncation, reordering, splicing and header swaps are all detected
//! while the object is streamed, with memory bounded by about one chunk per direction.
//!
//! The byte layout is specified in `docs/FORMAT.md` (section "Encrypted object format"); keep
//! the two in sync. [`EncryptWriter`] and [`DecryptReader`] are the streaming adapters;
//! [`Header`] is the self-describing prefix that carries the wrapped data key.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Magic bytes at offset 0 of every encrypted object; lets readers tell our objects apart.
pub const MAGIC: &[u8; 6] = b"PGKEEP";
/// The only format version this code writes and reads (header byte 6).
pub const FORMAT_VERSION: u8 = 1;
/// Plaintext bytes per full chunk unless the caller chooses otherwise: large enough to make
/// the per-chunk overhead (16-byte tag, one AEAD call) negligible, small enough to stream.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// A per-backup AES-256 data key; zeroed on drop.
pub type DataKey = zeroize::Zeroizing<[u8; 32]>;

/// AEAD id 1: AES-256-GCM with 96-bit nonces and 128-bit tags (header byte 7).
const AEAD_AES_256_GCM: u8 = 1;
/// Smallest chunk size accepted (bytes of plaintext per full chunk).
const MIN_CHUNK_SIZE: u32 = 16;
/// Largest chunk size accepted; bounds the memory a hostile header can make us allocate.
const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Largest JSON metadata length accepted.
const MAX_JSON_LEN: u32 = 65536;
/// Length of the fixed part of the header, before the JSON object.
const FIXED_HEADER_LEN: usize = 23;
/// Length of the random nonce prefix stored in the header.
const NONCE_PREFIX_LEN: usize = 7;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;

type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;
type Tag = aes_gcm::aead::Tag<Aes256Gcm>;

/// Everything that can go wrong reading or writing an encrypted object.
///
/// Inside [`AsyncRead`]/[`AsyncWrite`] these travel as `io::Error`s of kind `InvalidData`;
/// [`crypt_error`] recovers them.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The object does not start with [`MAGIC`]: it is not a pgkeep backup object.
    #[error("not a pgkeep backup object (the PGKEEP magic bytes are missing)")]
    NotEncrypted,
    /// The header declares a format version this build cannot read.
    #[error("unsupported pgkeep format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The header declares an AEAD this build does not implement.
    #[error("unsupported AEAD id {0} (this build supports 1 = AES-256-GCM)")]
    UnsupportedAead(u8),
    /// The header is malformed (bad chunk size, oversized or invalid JSON, cut short, ...).
    #[error("malformed pgkeep header: {0}")]
    BadHeader(String),
    /// A chunk's tag did not verify.
    #[error("chunk {chunk} failed authentication: the object is corrupt or was tampered with, or the key is wrong")]
    ChunkAuthentication {
        /// Index of the failing chunk, counting from 0.
        chunk: u64,
    },
    /// The object ended before its final chunk (it was cut short).
    #[error(
        "the object is truncated: it ends after {chunks} complete chunk(s), before the final chunk"
    )]
    Truncated {
        /// Number of complete, authentic chunks that were present.
        chunks: u64,
    },
    /// Bytes follow the final chunk.
    #[error("unexpected data after the final chunk")]
    TrailingData,
    /// The 32-bit chunk counter would overflow (the object is too long for its chunk size).
    #[error("too many chunks: the 32-bit chunk counter would overflow; use a larger chunk size")]
    TooManyChunks,
    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl CryptError {
    /// A copy for sticky error reporting (`io::Error` is not `Clone`; its message is kept).
    fn duplicate(&self) -> CryptError {
        match self {
            CryptError::NotEncrypted => CryptError::NotEncrypted,
            CryptError::UnsupportedVersion(v) => CryptError::UnsupportedVersion(*v),
            CryptError::UnsupportedAead(a) => CryptError::UnsupportedAead(*a),
            CryptError::BadHeader(s) => CryptError::BadHeader(s.clone()),
            CryptError::ChunkAuthentication { chunk } => {
                CryptError::ChunkAuthentication { chunk: *chunk }
            }
            CryptError::Truncated { chunks } => CryptError::Truncated { chunks: *chunks },
            CryptError::TrailingData => CryptError::TrailingData,
            CryptError::TooManyChunks => CryptError::TooManyChunks,
            CryptError::Io(e) => CryptError::Io(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Wraps into an `io::Error` so it can travel through `AsyncRead`/`AsyncWrite`.
    fn into_io(self) -> io::Error {
        let kind = match &self {
            CryptError::Io(e) => e.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

/// Recovers the [`CryptError`] carried by an `io::Error` returned from [`EncryptWriter`] or
/// [`DecryptReader`]; `None` for plain I/O errors of the underlying stream.
pub fn crypt_error(err: &io::Error) -> Option<&CryptError> {
    err.get_ref().and_then(|e| e.downcast_ref::<CryptError>())
}

/// Metadata carried in the header's JSON object: enough to find and unwrap the data key
/// and to know how to decompress, without any other source of truth.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeaderFields {
    /// Identifier of the backup this object belongs to.
    pub backup_id: String,
    /// Name of the database that was dumped.
    pub database: String,
    /// Compression applied to the plaintext before encryption (e.g. `zstd`, `none`).
    pub compression: String,
    /// Identifier of the key-encryption key that wrapped the data key (e.g. a KMS key ARN).
    pub key_id: String,
    /// The data key wrapped by `key_id`; standard base64 with padding in the JSON.
    #[serde(with = "base64_bytes")]
    pub wrapped_key: Vec<u8>,
}

/// Serde adapter: bytes as standard, padded base64 strings.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(D::Error::custom)
    }
}

/// The serialized header of an encrypted object, plus its parsed contents.
///
/// The exact bytes are kept because every chunk authenticates them as associated data.
#[derive(Debug, Clone)]
pub struct Header {
    fields: HeaderFields,
    chunk_size: u32,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    raw: Vec<u8>,
}

fn check_chunk_size(chunk_size: u32) -> Result<(), CryptError> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(CryptError::BadHeader(format!(
            "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        )))
    }
}

/// Reads until `buf` is full or the reader reports end of file; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Like `read_exact`, but a short object is a malformed header rather than an I/O error.
async fn read_header_part<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    what: &str,
) -> Result<(), CryptError> {
    if read_full(r, buf).await? < buf.len() {
        return Err(CryptError::BadHeader(format!(
            "the object ends inside the header ({what})"
        )));
    }
    Ok(())
}

impl Header {
    /// Builds the header for a new object, with a fresh random nonce prefix.
    ///
    /// A new header (hence a new prefix) must be used for every object, even when a data key
    /// is reused, so that no (key, nonce) pair ever repeats.
    pub fn new(fields: HeaderFields, chunk_size: u32) -> Result<Header, CryptError> {
        check_chunk_size(chunk_size)?;
        let json = serde_json::to_vec(&fields)
            .map_err(|e| CryptError::BadHeader(format!("cannot serialize header JSON: {e}")))?;
        let json_len = u32::try_from(json.len())
            .ok()
            .filter(|&l| l <= MAX_JSON_LEN)
            .ok_or_else(|| {
                CryptError::BadHeader(format!(
                    "header JSON is {} bytes, more than {MAX_JSON_LEN}",
                    json.len()
                ))
            })?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        getrandom::fill(&mut nonce_prefix)
            .map_err(|e| CryptError::Io(io::Error::other(format!("getrandom failed: {e}"))))?;

        let mut raw = Vec::with_capacity(FIXED_HEADER_LEN + json.len());
        raw.extend_from_slice(MAGIC);
        raw.push(FORMAT_VERSION);
        raw.push(AEAD_AES_256_GCM);
        raw.extend_from_slice(&chunk_size.to_be_bytes());
        raw.extend_from_slice(&nonce_prefix);
        raw.extend_from_slice(&json_len.to_be_bytes());
        raw.extend_from_slice(&json);
        Ok(Header {
            fields,
            chunk_size,
            nonce_prefix,
            raw,
        })
    }

    /// The metadata carried in the header (authenticated only once a chunk has verified).
    pub fn fields(&self) -> &HeaderFields {
        &self.fields
    }

    /// Plaintext bytes per full chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The exact serialized header, as written at the start of the object.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Reads and parses exactly the header bytes, leaving `r` at the first chunk.
    ///
    /// The header is not authenticated yet: its fields are only trustworthy once the body
    /// has been decrypted successfully (every chunk authenticates the header).
    pub async fn read_from<R: AsyncRead + Unpin>(r: &mut R) -> Result<Header, CryptError> {
        let mut fixed = [0u8; FIXED_HEADER_LEN];
        let n = read_full(r, &mut fixed[..8]).await?;
        let magic_len = n.min(MAGIC.len());
        if fixed[..magic_len] != MAGIC[..magic_len] {
            return Err(CryptError::NotEncrypted);
        }
        if n == 0 {
            return Err(CryptError::BadHeader("the object is empty".into()));
        }
        if n < 8 {
            return Err(CryptError::BadHeader(
                "the object ends inside the header (fixed fields)".into(),
            ));
        }
        if fixed[6] != FORMAT_VERSION {
            return Err(CryptError::UnsupportedVersion(fixed[6]));
        }
        if fixed[7] != AEAD_AES_256_GCM {
            return Err(CryptError::UnsupportedAead(fixed[7]));
        }
        read_header_part(r, &mut fixed[8..], "fixed fields").await?;
        let chunk_size = u32::from_be_bytes(fixed[8..12].try_into().expect("4 bytes"));
        check_chunk_size(chunk_size)?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&fixed[12..19]);
        let json_len = u32::from_be_bytes(fixed[19..23].try_into().expect("4 bytes"));
        if json_len > MAX_JSON_LEN {
            return Err(CryptError::BadHeader(format!(
                "header JSON length {json_len} exceeds {MAX_JSON_LEN}"
            )));
        }

        let mut raw = Vec::with_capacity(FIXED_HEADER_LEN + json_len as usize);
        raw.extend_from_slice(&fixed);
        raw.resize(FIXED_HEADER_LEN + json_len as usize, 0);
        read_header_part(r, &mut raw[FIXED_HEADER_LEN..], "JSON metadata").await?;
        let json = &raw[FIXED_HEADER_LEN..];
        // serde would also accept a JSON array for a struct; the format says object.
        if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(CryptError::BadHeader(
                "header metadata is not a JSON object".into(),
            ));
        }
        let fields: HeaderFields = serde_json::from_slice(json)
            .map_err(|e| CryptError::BadHeader(format!("header JSON: {e}")))?;
        Ok(Header {
            fields,
            chunk_size,
            nonce_prefix,
            raw,
        })
    }

    /// The nonce of chunk `counter`: prefix || counter (u32 BE) || final flag.
    fn nonce(&self, counter: u64, last: bool) -> Result<Nonce, CryptError> {
        let counter = u32::try_from(counter).map_err(|_| CryptError::TooManyChunks)?;
        let mut nonce = [0u8; 12];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE_PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
        nonce[11] = u8::from(last);
        Ok(Nonce::from(nonce))
    }
}

fn new_cipher(key: &DataKey) -> Aes256Gcm {
    let key: &[u8; 32] = key;
    Aes256Gcm::new(key.into())
}

/// Sticky failure bookkeeping shared by both adapters: once an error was reported, every
/// later call reports it again instead of resuming on an inconsistent stream.
fn poison<T>(failed: &mut Option<CryptError>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
    if let Poll::Ready(Err(e)) = &result {
        *failed = Some(match crypt_error(e) {
            Some(c) => c.duplicate(),
            None => CryptError::Io(io::Error::new(e.kind(), e.to_string())),
        });
    }
    result
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteState {
    /// `buf[written..]` (header or a sealed non-final chunk) still has to reach `inner`.
    Draining,
    /// Accepting plaintext into `buf`.
    Filling,
    /// The sealed final chunk is being written out.
    DrainingFinal,
    /// Everything is written; `inner` is being shut down.
    ShuttingDown,
    /// Shutdown of `inner` completed.
    Done,
}

/// Encrypts everything written to it into `inner`; writes the header first and the final
/// chunk on shutdown.
///
/// `poll_shutdown` must be called (e.g. `AsyncWriteExt::shutdown`) to complete the object;
/// an object whose writer was dropped early is detected as truncated when read. `flush`
/// only pushes out chunks that are already sealed: a chunk is sealed once it is full *and*
/// more data arrives (the last chunk must carry the final flag), or on shutdown.
pub struct EncryptWriter<W> {
    inner: W,
    cipher: Aes256Gcm,
    header: Header,
    /// Plaintext of the chunk being filled, then its ciphertext and tag while draining.
    buf: Vec<u8>,
    /// Bytes of `buf` already accepted by `inner` while draining.
    written: usize,
    /// Index of the next chunk to seal.
    counter: u64,
    state: WriteState,
    shutdown_requested: bool,
    failed: Option<CryptError>,
}

impl<W> fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptWriter")
            .field("chunk_size", &self.header.chunk_size)
            .field("counter", &self.counter)
            .field("state", &self.state)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<W> EncryptWriter<W> {
    /// Wraps `inner`; nothing is written until the first write, flush or shutdown.
    pub fn new(inner: W, header: Header, key: &DataKey) -> Self {
        let chunk = header.chunk_size as usize;
        let mut buf = Vec::with_capacity((chunk + TAG_LEN).max(header.raw.len()));
        buf.extend_from_slice(&header.raw);
        EncryptWriter {
            inner,
            cipher: new_cipher(key),
            header,
            buf,
            written: 0,
            counter: 0,
            state: WriteState::Draining,
            shutdown_requested: false,
            failed: None,
        }
    }

    /// The wrapped writer (e.g. to read a byte counter).
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Unwraps the writer. Anything not yet written out is lost, so call this after shutdown.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Encrypts `buf` in place (it holds the chunk's plaintext) and appends the tag.
    fn seal(&mut self, last: bool) -> Result<(), CryptError> {
        let nonce = self.header.nonce(self.counter, last)?;
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, &self.header.raw, self.buf.as_mut_slice().into())
            .map_err(|_| CryptError::Io(io::Error::other("AES-GCM refused to encrypt a chunk")))?;
        self.buf.extend_from_slice(&tag);
        self.counter += 1;
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> EncryptWriter<W> {
    /// Writes `buf[written..]` to `inner` (handling short writes), then empties `buf`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the underlying writer accepted no bytes",
                )));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let chunk = self.header.chunk_size as usize;
        loop {
            match self.state {
                WriteState::Draining => {
                    ready!(self.poll_drain(cx))?;
                    self.state = WriteState::Filling;
                }
                WriteState::Filling => {
                    if self.buf.len() == chunk {
                        // More data follows a full chunk, so that chunk is not the last.
                        self.seal(false).map_err(CryptError::into_io)?;
                        self.state = WriteState::Draining;
                        continue;
                    }
                    let n = data.len().min(chunk - self.buf.len());
                    self.buf.extend_from_slice(&data[..n]);
                    return Poll::Ready(Ok(n));
                }
                WriteState::DrainingFinal | WriteState::ShuttingDown | WriteState::Done => {
                    unreachable!("these states are only entered after shutdown was requested")
                }
            }
        }
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.state {
            WriteState::Draining => {
                ready!(self.poll_drain(cx))?;
                self.state = WriteState::Filling;
            }
            WriteState::DrainingFinal => {
                ready!(self.poll_drain(cx))?;
                self.state = WriteState::ShuttingDown;
            }
            WriteState::Done => return Poll::Ready(Ok(())),
            WriteState::Filling | WriteState::ShuttingDown => {}
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_requested = true;
        loop {
            match self.state {
                WriteState::Draining => {
                    ready!(self.poll_drain(cx))?;
                    self.state = WriteState::Filling;
                }
                WriteState::Filling => {
                    self.seal(true).map_err(CryptError::into_io)?;
                    self.state = WriteState::DrainingFinal;
                }
                WriteState::DrainingFinal => {
                    ready!(self.poll_drain(cx))?;
                    self.state = WriteState::ShuttingDown;
                }
                WriteState::ShuttingDown => {
                    ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                    self.state = WriteState::Done;
                }
                WriteState::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for EncryptWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(e.duplicate().into_io()));
        }
        if this.shutdown_requested {
            return Poll::Ready(Err(io::Error::other(
                "write to an EncryptWriter after shutdown",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let result = this.poll_write_inner(cx, data);
        poison(&mut this.failed, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(e.duplicate().into_io()));
        }
        let result = this.poll_flush_inner(cx);
        poison(&mut this.failed, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(e.duplicate().into_io()));
        }
        let result = this.poll_shutdown_inner(cx);
        poison(&mut this.failed, result)
    }
}

/// Decrypts and authenticates; yields only authenticated plaintext; errors on
/// tamper/truncation/trailing data.
///
/// Plaintext is released chunk by chunk as each chunk verifies, so a consumer may see the
/// beginning of a damaged object before the error: treat the whole output as invalid
/// unless reading reaches end of file without error. End of file is only reported after
/// the final chunk verified and nothing follows it.
pub struct DecryptReader<R> {
    inner: R,
    cipher: Aes256Gcm,
    header: Header,
    /// Room for one chunk, its tag and one look-ahead byte (chunk_size + 17 bytes).
    buf: Vec<u8>,
    /// Bytes of `buf` filled from `inner` for the chunk being assembled.
    filled: usize,
    /// `buf[pos..end]` is verified plaintext not yet handed out.
    pos: usize,
    end: usize,
    /// The look-ahead byte at `buf[chunk_size + 16]` starts the next chunk.
    carry: bool,
    /// `inner` reported end of file.
    eof: bool,
    /// The final chunk verified; end of file once `pos == end`.
    finished: bool,
    /// Index of the next chunk to open.
    counter: u64,
    failed: Option<CryptError>,
}

impl<R> fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptReader")
            .field("chunk_size", &self.header.chunk_size)
            .field("counter", &self.counter)
            .field("finished", &self.finished)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<R> DecryptReader<R> {
    /// Wraps `inner`, which must be positioned right after the header (see
    /// [`Header::read_from`]).
    pub fn new(inner: R, header: Header, key: &DataKey) -> Self {
        let chunk = header.chunk_size as usize;
        DecryptReader {
            inner,
            cipher: new_cipher(key),
            buf: vec![0; chunk + TAG_LEN + 1],
            header,
            filled: 0,
            pos: 0,
            end: 0,
            carry: false,
            eof: false,
            finished: false,
            counter: 0,
            failed: None,
        }
    }

    /// Unwraps the reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Tries to open `buf[..len]` (ciphertext then tag) as chunk `counter` in place.
    fn open(&mut self, len: usize, counter: u64, last: bool) -> Result<bool, CryptError> {
        let nonce = self.header.nonce(counter, last)?;
        let (ciphertext, tag) = self.buf[..len].split_at_mut(len - TAG_LEN);
        let tag: &Tag = (&*tag).try_into().expect("16-byte tag");
        Ok(self
            .cipher
            .decrypt_inout_detached(&nonce, &self.header.raw, ciphertext.into(), tag)
            .is_ok())
    }

    /// Opens the chunk assembled in `buf`, deciding from its length whether it is the last.
    fn open_chunk(&mut self) -> Result<(), CryptError> {
        let chunk = self.header.chunk_size as usize;
        let i = self.counter;
        if self.filled == chunk + TAG_LEN + 1 {
            // A byte follows, so this must be a non-final chunk.
            if !self.open(chunk + TAG_LEN, i, false)? {
                // Diagnose only (the buffer is untouched when a tag fails): a final chunk
                // followed by bytes means data was appended.
                if self.open(chunk + TAG_LEN, i, true).unwrap_or(false) {
                    return Err(CryptError::TrailingData);
                }
                return Err(CryptError::ChunkAuthentication { chunk: i });
            }
            self.end = chunk;
            self.carry = true;
        } else {
            // End of file: this must be the final chunk.
            if self.filled < TAG_LEN {
                return Err(CryptError::Truncated { chunks: i });
            }
            if !self.open(self.filled, i, true)? {
                // A full chunk that opens as non-final: the object was cut after it.
                if self.filled == chunk + TAG_LEN
                    && self.open(self.filled, i, false).unwrap_or(false)
                {
                    return Err(CryptError::Truncated { chunks: i + 1 });
                }
                return Err(CryptError::ChunkAuthentication { chunk: i });
            }
            self.end = self.filled - TAG_LEN;
            self.finished = true;
        }
        self.pos = 0;
        self.filled = 0;
        self.counter += 1;
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> DecryptReader<R> {
    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.end {
                let n = out.remaining().min(self.end - self.pos);
                out.put_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Poll::Ready(Ok(()));
            }
            if self.finished {
                return Poll::Ready(Ok(()));
            }
            let full = self.buf.len();
            if self.carry {
                self.buf[0] = self.buf[full - 1];
                self.filled = 1;
                self.carry = false;
            }
            while self.filled < full && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf[self.filled..]);
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
                match rb.filled().len() {
                    0 => self.eof = true,
                    n => self.filled += n,
                }
            }
            self.open_chunk().map_err(CryptError::into_io)?;
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for DecryptReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Err(e.duplicate().into_io()));
        }
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let result = this.poll_read_inner(cx, out);
        poison(&mut this.failed, result)
    }
}

#[cfg(test)]
mod tests;
