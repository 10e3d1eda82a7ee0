//! Handing out a backup object for download (`GET /backups/{id}/download`): a short-lived
//! presigned URL of the encrypted object, and everything needed to decrypt it.
//!
//! The object stays encrypted end to end: whoever downloads it still needs the master key
//! (KMS `Decrypt` with the backup's encryption context) to read it; docs/OPERATIONS.md walks
//! from the download to a running database. `pgkeep cat` remains the way to get the plain
//! archive.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Error, IntegrityError};
use crate::backends::Services;
use crate::config::ConfigError;
use crate::keys::kms::{CONTEXT_BACKUP_ID, CONTEXT_DATABASE};
use crate::model::{BackupId, BackupStatus, Compression, Manifest, MANIFEST_VERSION};
use crate::retention::Span;
use crate::store::StoreError;

/// How long a download URL works unless configured otherwise (`PGKEEP_DOWNLOAD_URL_TTL`).
pub const DEFAULT_DOWNLOAD_TTL: Span = Span::minutes(15);

/// The longest a SigV4 presigned URL can be valid.
pub const MAX_DOWNLOAD_TTL: Span = Span::days(7);

/// A download of one backup: where to GET the encrypted object, until when, and how to
/// decrypt and check it.
#[derive(Debug, Clone, Serialize)]
pub struct Download {
    /// The backup.
    pub id: BackupId,
    /// Its database.
    pub database: String,
    /// Its status (completed, verified or verification_failed).
    pub status: BackupStatus,
    /// The presigned URL: a plain HTTP GET returns the stored object. A bearer credential
    /// until `expires_at`.
    pub url: String,
    /// Always `GET`.
    pub method: &'static str,
    /// When the URL was signed.
    pub signed_at: DateTime<Utc>,
    /// When the URL stops working.
    pub expires_at: DateTime<Utc>,
    /// Seconds from signing to expiry.
    pub expires_in_seconds: u64,
    /// The object's key in the repository.
    pub object_key: String,
    /// Bytes of the stored (encrypted) object.
    pub size_bytes: Option<u64>,
    /// SHA-256 of the stored object, lowercase hex: check the download against it.
    pub sha256: Option<String>,
    /// Compression inside the encryption.
    pub compression: Compression,
    /// Object format version (docs/FORMAT.md).
    pub format_version: u8,
    /// The AEAD of the chunks (`AES-256-GCM`).
    pub aead: String,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The master key that wrapped the data key (a KMS key ARN, or `file:…`).
    pub key_id: String,
    /// The wrapped data key, standard base64 (also in the object's header).
    pub wrapped_key: String,
    /// The KMS encryption context `Decrypt` needs to unwrap `wrapped_key` (for a key file, the
    /// same two values are its associated data).
    pub encryption_context: BTreeMap<&'static str, String>,
}

/// Presigns a download of backup `id`, signed at `now` and valid for `ttl`.
///
/// Unknown id: [`Error::Catalog`] not found; a backup without a stored object (in progress,
/// failed, deleted): [`Error::Unusable`]; a store that cannot presign (a directory):
/// [`crate::store::StoreError::Unsupported`].
pub async fn download(
    services: &Services,
    id: &BackupId,
    ttl: Span,
    now: DateTime<Utc>,
) -> Result<Download, Error> {
    if ttl > MAX_DOWNLOAD_TTL {
        return Err(ConfigError::Invalid(format!(
            "a download URL can be valid for at most 7 days (SigV4), not {ttl}"
        ))
        .into());
    }
    let record = services.catalog.get(id).await?;
    if !record.status.has_object() {
        return Err(Error::Unusable {
            id: record.id.clone(),
            status: record.status,
            why: "only a stored backup (completed, verified or verification_failed) can be downloaded".into(),
        });
    }
    // Signing needs no network, and tells first whether this store can hand out URLs at all.
    let seconds = ttl.seconds().unsigned_abs();
    let presigned = services
        .store
        .presign_get(&record.object_key, Duration::from_secs(seconds), now)
        .await?;
    let manifest_key = record.manifest_key();
    let unreadable = |message: String| {
        Error::Integrity(IntegrityError::BadManifest {
            key: manifest_key.clone(),
            message,
        })
    };
    let bytes = match services.store.get(&manifest_key).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => {
            return Err(unreadable(
                "it is missing, though the backup is recorded as stored".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    if manifest.manifest_version != MANIFEST_VERSION {
        return Err(unreadable(format!(
            "manifest version {} is not one this pgkeep reads ({MANIFEST_VERSION})",
            manifest.manifest_version
        )));
    }
    let encryption = manifest.encryption;
    Ok(Download {
        encryption_context: BTreeMap::from([
            (CONTEXT_BACKUP_ID, record.id.to_string()),
            (CONTEXT_DATABASE, record.database.clone()),
        ]),
        id: record.id,
        database: record.database,
        status: record.status,
        url: presigned.url,
        method: "GET",
        signed_at: presigned.signed_at,
        expires_at: presigned.expires_at,
        expires_in_seconds: seconds,
        object_key: record.object_key,
        size_bytes: record.size_bytes,
        sha256: record.sha256,
        compression: record.compression,
        format_version: encryption.format_version,
        aead: encryption.aead,
        chunk_size: encryption.chunk_size,
        key_id: encryption.key_id,
        wrapped_key: encryption.wrapped_key,
    })
}
