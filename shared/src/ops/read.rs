//! Reading a backup back: the original pg_dump archive, authenticated and checked.
//!
//! Every byte handed out has been authenticated by its chunk's tag; the end of the stream
//! additionally checks the final-chunk flag (truncation) and the SHA-256 of the whole object,
//! so a reader that gets to EOF without an error has the exact archive pg_dump wrote.

use std::pin::Pin;

use tokio::io::AsyncRead;

use super::{Error, IntegrityError};
use crate::backends::Services;
use crate::keys::KeyContext;
use crate::model::{BackupId, BackupRecord};
use crate::pipeline::archive_reader;
use crate::pipeline::crypt::{Header, HeaderFields};
use crate::pipeline::digest::DigestReader;

/// A stream of the plain pg_dump archive; read it to the end before trusting it.
pub type ArchiveStream = Pin<Box<dyn AsyncRead + Send>>;

/// Opens backup `id` for reading: checks its state, reads and checks the object header,
/// unwraps the data key, and returns the decrypting, decompressing stream.
pub async fn open_archive(
    services: &Services,
    id: &BackupId,
) -> Result<(BackupRecord, ArchiveStream), Error> {
    let (record, _, stream) = open_archive_with_header(services, id).await?;
    Ok((record, stream))
}

/// [`open_archive`], also returning the object header's fields (for comparing them with the
/// manifest).
pub async fn open_archive_with_header(
    services: &Services,
    id: &BackupId,
) -> Result<(BackupRecord, HeaderFields, ArchiveStream), Error> {
    let record = services.catalog.get(id).await?;
    if !record.status.has_object() {
        let why = match &record.error {
            Some(e) => format!("there is no stored object to read (it failed: {e})"),
            None => "there is no stored object to read".to_owned(),
        };
        return Err(Error::Unusable {
            id: record.id.clone(),
            status: record.status,
            why,
        });
    }
    let object = services.store.open(&record.object_key).await?;
    let mut sealed = DigestReader::new(object, record.sha256.clone());
    let header = Header::read_from(&mut sealed)
        .await
        .map_err(|e| Error::Integrity(e.into()))?;
    let fields = header.fields();
    if fields.backup_id != record.id.as_str() || fields.database != record.database {
        return Err(IntegrityError::WrongObject {
            key: record.object_key.clone(),
            expected: record.id.clone(),
            found: fields.backup_id.clone(),
            found_database: fields.database.clone(),
        }
        .into());
    }
    let compression = fields.compression.parse().map_err(|_| {
        Error::Integrity(IntegrityError::Decompress(std::io::Error::other(format!(
            "unknown compression {:?} in the object header",
            fields.compression
        ))))
    })?;
    let ctx = KeyContext {
        backup_id: &record.id,
        database: &record.database,
    };
    let key = services
        .keys
        .unwrap(&fields.key_id, &fields.wrapped_key, ctx)
        .await?;
    let fields = fields.clone();
    let stream = archive_reader(sealed, header, &key, compression);
    Ok((record, fields, Box::pin(stream)))
}
