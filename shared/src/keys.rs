//! Key providers: where the master key lives that wraps each backup's data key.
//!
//! Envelope encryption: every backup gets a fresh random data key; only its wrapped form is
//! stored (in the object header and the manifest). Wrapping binds the key to the backup id and
//! database, so a wrapped key copied onto another backup does not unwrap.

use async_trait::async_trait;

use crate::model::BackupId;

pub mod file;
pub mod kms;

pub use crate::pipeline::crypt::DataKey;

/// Why a key could not be made or unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The local key file is missing, unreadable, malformed or too widely readable.
    #[error("key file {path}: {message}")]
    KeyFile {
        /// The file concerned.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The backup names a master key other than the configured one.
    #[error("backup was encrypted with key {expected}, but the configured key is {actual}; use the key file (or KMS key) the backup was made with")]
    WrongKey {
        /// Key id recorded with the backup.
        expected: String,
        /// Key id of the configured provider.
        actual: String,
    },
    /// The wrapped key did not authenticate for this backup and database.
    #[error("the data key of backup {backup_id} does not unwrap: it belongs to another backup or database, or was altered")]
    UnwrapFailed {
        /// The backup whose key failed.
        backup_id: String,
    },
    /// The key service failed.
    #[error("key service: {0}")]
    Backend(String),
}

/// What a wrapped key is bound to.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    /// The backup the data key encrypts.
    pub backup_id: &'a BackupId,
    /// The database it belongs to.
    pub database: &'a str,
}

impl KeyContext<'_> {
    /// The bytes a local wrap authenticates: a label, the id and the database.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"pgkeep/wrap/v1\0".to_vec();
        aad.extend_from_slice(self.backup_id.as_str().as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.database.as_bytes());
        aad
    }
}

/// A fresh data key and the wrapped form to store.
pub struct NewDataKey {
    /// The plaintext key; never stored.
    pub key: DataKey,
    /// The key wrapped by the master key.
    pub wrapped: Vec<u8>,
    /// Which master key wrapped it.
    pub key_id: String,
}

/// Holds the master key and wraps/unwraps data keys with it.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// Identifies the master key new backups are wrapped with.
    fn key_id(&self) -> String;
    /// A new random data key for one backup, plus its wrapped form.
    async fn generate(&self, ctx: KeyContext<'_>) -> Result<NewDataKey, KeyError>;
    /// Recovers a data key written by [`KeyProvider::generate`].
    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: KeyContext<'_>,
    ) -> Result<DataKey, KeyError>;
}

/// Stands in for a key provider where an operation was opened without a key; any use is a
/// bug in the caller and says so.
pub struct NoKey;

#[async_trait]
impl KeyProvider for NoKey {
    fn key_id(&self) -> String {
        "none".into()
    }
    async fn generate(&self, _: KeyContext<'_>) -> Result<NewDataKey, KeyError> {
        Err(KeyError::Backend(
            "this operation was opened without a key".into(),
        ))
    }
    async fn unwrap(&self, _: &str, _: &[u8], _: KeyContext<'_>) -> Result<DataKey, KeyError> {
        Err(KeyError::Backend(
            "this operation was opened without a key".into(),
        ))
    }
}
