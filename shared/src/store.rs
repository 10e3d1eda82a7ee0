//! Object stores: where encrypted backup objects and their manifests live.
//!
//! The trait speaks object keys (`<database>/<yyyy>/<mm>/<id>.pgkeep`), never paths, buckets or
//! SDK types, so the operations work unchanged on a directory or on S3.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncWrite};

pub mod fs;
pub mod s3;

/// Why an object store operation failed, phrased for the person running pgkeep.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object is not there (never written, or deleted).
    #[error("object {key} not found in {store}")]
    NotFound {
        /// Store location, for the message.
        store: String,
        /// The missing key.
        key: String,
    },
    /// Refusing to overwrite: backup objects are write-once.
    #[error("object {key} already exists in {store}; backup objects are never overwritten")]
    AlreadyExists {
        /// Store location.
        store: String,
        /// The existing key.
        key: String,
    },
    /// A key that could escape the store or is not a valid key at all.
    #[error("invalid object key {key:?}: {why}")]
    InvalidKey {
        /// The refused key.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The store cannot do this at all (a directory has no presigned URLs).
    #[error("{store}: {message}")]
    Unsupported {
        /// Store location.
        store: String,
        /// What is not supported and what to do instead.
        message: String,
    },
    /// The underlying filesystem or service failed.
    #[error("{op} {key} in {store}: {source}")]
    Io {
        /// What was being done ("write", "rename", ...).
        op: &'static str,
        /// Store location.
        store: String,
        /// Key concerned.
        key: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a listing says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, when the store knows.
    pub modified: Option<DateTime<Utc>>,
}

/// An unfinished upload in a store: what a run is writing, or what a run that died left.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartialUpload {
    /// The key it would publish.
    pub key: String,
    /// Which upload: the hidden temporary file's path under the store root (a directory), or
    /// the multipart upload id (S3).
    pub handle: String,
    /// Bytes stored so far (S3: the uploaded parts), when the store would say.
    pub size: Option<u64>,
    /// When it was started (S3) or last written (a directory), when the store says.
    pub started: Option<DateTime<Utc>>,
}

/// What S3 Object Lock says about an object: while retained or held it cannot be deleted, so
/// pgkeep refuses to delete its backup rather than leave a record that lies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectLock {
    /// `GOVERNANCE` or `COMPLIANCE` when a retention period is set.
    pub mode: Option<String>,
    /// The object is retained (undeletable) until this time.
    pub retain_until: Option<DateTime<Utc>>,
    /// A legal hold: undeletable until someone lifts it, whatever the retention.
    pub legal_hold: bool,
}

impl ObjectLock {
    /// Whether the lock forbids deleting the object at `now`.
    pub fn blocks_deletion_at(&self, now: DateTime<Utc>) -> bool {
        self.legal_hold || self.retain_until.is_some_and(|until| until > now)
    }
}

/// A URL that lets whoever holds it GET one object until it expires, without credentials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PresignedGet {
    /// The signed URL (a bearer credential until `expires_at`: hand it only to the caller).
    pub url: String,
    /// When the signature was made.
    pub signed_at: DateTime<Utc>,
    /// When the URL stops working.
    pub expires_at: DateTime<Utc>,
}

/// A streaming write of one object that becomes visible only on [`ObjectUpload::commit`].
///
/// `shutdown()` flushes what was written; `commit` publishes it. Dropping or aborting leaves
/// nothing behind, so a failed backup never leaves a partial object.
#[async_trait]
pub trait ObjectUpload: AsyncWrite + Send + Unpin {
    /// Publishes the object under its key, durably.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Discards everything written.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// A streaming read of one object.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// Where backup objects live.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// The store's URL, for messages and records (`file:///var/backups/pgkeep`).
    fn location(&self) -> String;
    /// Starts a streaming write of a new object; fails if the key exists.
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload>, StoreError>;
    /// Writes a small object (a manifest) atomically, replacing any previous one.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// Opens an object for streaming reads.
    async fn open(&self, key: &str) -> Result<ObjectReader, StoreError>;
    /// Reads a small object whole.
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Size and time of an object, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;
    /// Removes an object; removing a missing object succeeds, so retries are safe.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// Discards unfinished uploads under `prefix` started before `older_than` (what a crashed
    /// run left behind) and says how many. Stores whose uploads leave nothing when a process
    /// dies (a directory: temporary files are hidden and rewritten) have nothing to do.
    async fn abort_incomplete_uploads(
        &self,
        _prefix: &str,
        _older_than: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Every unfinished upload whose key starts with `prefix`, for the orphan sweep (which
    /// decides whose they are). Stores without such a thing list none.
    async fn partial_uploads(&self, _prefix: &str) -> Result<Vec<PartialUpload>, StoreError> {
        Ok(Vec::new())
    }
    /// Discards one unfinished upload listed by [`ObjectStore::partial_uploads`]; one already
    /// gone is no error, so a sweep can be repeated.
    async fn discard_partial_upload(&self, _upload: &PartialUpload) -> Result<(), StoreError> {
        Ok(())
    }
    /// The Object Lock protection of an object: `None` when it has none, does not exist, or the
    /// store has no such thing (a directory).
    async fn object_lock(&self, _key: &str) -> Result<Option<ObjectLock>, StoreError> {
        Ok(None)
    }
    /// A URL to GET the object with, signed at `signed_at` and valid for `ttl` after it, for
    /// downloads that bypass pgkeep. Stores that cannot sign URLs say
    /// [`StoreError::Unsupported`].
    async fn presign_get(
        &self,
        _key: &str,
        _ttl: std::time::Duration,
        _signed_at: DateTime<Utc>,
    ) -> Result<PresignedGet, StoreError> {
        Err(StoreError::Unsupported {
            store: self.location(),
            message: "presigned download URLs are not supported by this store".into(),
        })
    }
}

/// Refuses keys that are not plain relative `a/b/c` paths, so no backend can be steered outside
/// its root by a crafted database name or id.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let invalid = |why| StoreError::InvalidKey {
        key: key.to_owned(),
        why,
    };
    if key.is_empty() {
        return Err(invalid("empty"));
    }
    if key.len() > 1024 {
        return Err(invalid("longer than 1024 bytes"));
    }
    if key.contains('\\') || key.contains('\0') {
        return Err(invalid("contains a backslash or NUL"));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(invalid("empty path segment or leading/trailing slash")),
            "." | ".." => return Err(invalid("relative path segment")),
            s if s.starts_with('.') => return Err(invalid("segment starts with a dot")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod contract {
    //! One test suite every object store must pass; `run` wants a fresh, empty store.
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Deterministic bytes that do not repeat at part or chunk boundaries.
    pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Writes `data` in uneven slices (so writes straddle every internal boundary).
    pub async fn write_uneven(upload: &mut Box<dyn ObjectUpload>, data: &[u8]) {
        let sizes = [1usize, 7, 4096, 65_537, 1 << 20, 3];
        let (mut pos, mut i) = (0, 0);
        while pos < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - pos);
            upload.write_all(&data[pos..pos + n]).await.unwrap();
            pos += n;
            i += 1;
        }
    }

    async fn read_all(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
        let mut out = Vec::new();
        store
            .open(key)
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    /// Runs the whole contract. `big` is the size of the large object: more than three of the
    /// store's internal units (S3 parts) so that multi-part paths are exercised.
    pub async fn run(store: &dyn ObjectStore, big: usize) {
        // A small object: visible only after commit, read back exactly.
        let mut up = store.create("db/2026/11/a.pgkeep").await.unwrap();
        up.write_all(b"hello ").await.unwrap();
        up.write_all(b"world").await.unwrap();
        up.shutdown().await.unwrap();
        assert!(store.head("db/2026/11/a.pgkeep").await.unwrap().is_none());
        up.commit().await.unwrap();
        assert_eq!(read_all(store, "db/2026/11/a.pgkeep").await, b"hello world");
        let meta = store.head("db/2026/11/a.pgkeep").await.unwrap().unwrap();
        assert_eq!(meta.size, 11);

        // An empty object.
        let mut up = store.create("db/2026/11/empty.pgkeep").await.unwrap();
        up.shutdown().await.unwrap();
        up.commit().await.unwrap();
        assert_eq!(store.get("db/2026/11/empty.pgkeep").await.unwrap(), b"");

        // A large object in uneven writes; commit without an explicit shutdown works too.
        let data = pattern(big, 1);
        let mut up = store.create("db/2026/12/big.pgkeep").await.unwrap();
        write_uneven(&mut up, &data).await;
        up.commit().await.unwrap();
        let back = read_all(store, "db/2026/12/big.pgkeep").await;
        assert!(
            back == data,
            "large object differs ({} vs {} bytes)",
            back.len(),
            data.len()
        );

        // Listing: key order, sizes, prefixes.
        let listed = store.list("db/").await.unwrap();
        let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "db/2026/11/a.pgkeep",
                "db/2026/11/empty.pgkeep",
                "db/2026/12/big.pgkeep"
            ]
        );
        assert_eq!(listed[2].size, big as u64);
        assert_eq!(store.list("db/2026/12/").await.unwrap().len(), 1);
        assert!(store.list("other/").await.unwrap().is_empty());

        // Aborted and dropped uploads leave nothing, large or small.
        let mut up = store.create("db/x/aborted.pgkeep").await.unwrap();
        write_uneven(&mut up, &data).await;
        up.abort().await.unwrap();
        let mut up = store.create("db/x/dropped.pgkeep").await.unwrap();
        up.write_all(b"partial").await.unwrap();
        drop(up);
        assert!(store.list("db/x/").await.unwrap().is_empty());
        assert!(store.head("db/x/aborted.pgkeep").await.unwrap().is_none());

        // Write-once: an existing key is refused at create, and at commit if it appeared
        // meanwhile.
        let mut first = store.create("db/once.pgkeep").await.unwrap();
        let mut second = store.create("db/once.pgkeep").await.unwrap();
        first.write_all(b"one").await.unwrap();
        first.shutdown().await.unwrap();
        first.commit().await.unwrap();
        second.write_all(b"two").await.unwrap();
        second.shutdown().await.unwrap();
        assert!(matches!(
            second.commit().await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(matches!(
            store.create("db/once.pgkeep").await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(store.get("db/once.pgkeep").await.unwrap(), b"one");

        // put replaces, delete is idempotent, missing objects are NotFound.
        store.put("db/m.json", b"{}".to_vec()).await.unwrap();
        store.put("db/m.json", b"{\"a\":1}".to_vec()).await.unwrap();
        assert_eq!(store.get("db/m.json").await.unwrap(), b"{\"a\":1}");
        store.delete("db/m.json").await.unwrap();
        store.delete("db/m.json").await.unwrap();
        assert!(store.head("db/m.json").await.unwrap().is_none());
        assert!(matches!(
            store.get("db/m.json").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.open("db/m.json").await,
            Err(StoreError::NotFound { .. })
        ));
        for bad in ["../escape", "/abs", "a//b", ".hidden"] {
            assert!(matches!(
                store.get(bad).await,
                Err(StoreError::InvalidKey { .. })
            ));
            assert!(matches!(
                store.create(bad).await,
                Err(StoreError::InvalidKey { .. })
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", ".hidden", "a\\b", "a\0b",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        validate_key("shop/2026/11/20261124T153512123Z-9f3a1c2b.pgkeep").unwrap();
        validate_key("%2E.%2F/x").unwrap();
    }
}
