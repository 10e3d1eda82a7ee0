//! Object stores: where encrypted backup objects and their manifests live.
//!
//! The trait speaks object keys (`<database>/<yyyy>/<mm>/<id>.pgkeep`), never paths, buckets or
//! SDK types, so the operations work unchanged on a directory or on S3.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncWrite};

pub mod fs;

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
