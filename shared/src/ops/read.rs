//! Reading a backup back: the original pg_dump archive, authenticated and checked.
//!
//! Every byte handed out has been authenticated by its chunk's tag; the end of the stream
//! additionally checks the final-chunk flag (truncation) and the SHA-256 of the whole object,
//! so a reader that gets to EOF without an error has the exact archive pg_dump wrote.

use std::pin::Pin;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncSeek, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};

use super::{Error, IntegrityError};
use crate::backends::Services;
use crate::keys::{KeyContext, KeyProvider};
use crate::model::{part_key, BackupId, BackupRecord, Manifest, MANIFEST_VERSION};
use crate::pipeline::archive_merge::{read_toc, MergeError, Merger};
use crate::pipeline::archive_reader;
use crate::pipeline::crypt::{Header, HeaderFields};
use crate::pipeline::digest::DigestReader;
use crate::store::ObjectStore;

/// A stream of the plain pg_dump archive; read it to the end before trusting it.
pub type ArchiveStream = Pin<Box<dyn AsyncRead + Send>>;

/// Opens backup `id` for reading: checks its state, reads and checks the object header,
/// unwraps the data key, and returns the decrypting, decompressing stream.
pub async fn open_archive(
    services: &Services,
    id: &BackupId,
) -> Result<(BackupRecord, ArchiveStream), Error> {
    let record = services.catalog.get(id).await?;
    refuse_parts(&record)?;
    let (record, _, stream) = open_archive_with_header(services, id).await?;
    Ok((record, stream))
}

/// A parallel backup is no single archive: its schema and each data part are archives of
/// their own, which pgkeep restores in three steps (`ops::parts`). Reading one as a whole
/// archive is refused, naming what works.
fn refuse_parts(record: &BackupRecord) -> Result<(), Error> {
    if record.parts.is_empty() || !record.status.has_object() {
        return Ok(());
    }
    Err(Error::Unusable {
        id: record.id.clone(),
        status: record.status,
        why: format!(
            "it is a parallel backup (backup --jobs) stored as a schema object and {} data parts, not one archive; restore it with `pgkeep restore {} --target-db NAME` (or check it with `pgkeep verify {}`)",
            record.parts.len(),
            record.id,
            record.id
        ),
    })
}

/// Whether backup `id` is a parallel backup (`backup --jobs`) with a stored object: its
/// record, for [`cat_parts`], or `None` when it is one archive ([`open_archive`]).
pub async fn parallel_record(
    services: &Services,
    id: &BackupId,
) -> Result<Option<BackupRecord>, Error> {
    let record = services.catalog.get(id).await?;
    Ok((!record.parts.is_empty() && record.status.has_object()).then_some(record))
}

/// Buffer for reading a part: the TOC is read item by item, the data chunk by chunk.
const PART_BUFFER: usize = 256 * 1024;

/// Writes parallel backup `record`'s schema and data parts as one custom-format archive
/// stock pg_restore reads (`pipeline::archive_merge`), data offsets not set (a pipe). Each
/// part is read to its end, so its final chunk and SHA-256 are checked; the data parts are
/// read one after another (their TOCs once first, to plan the merge). Returns the merger, so
/// a file can then take the real offsets ([`write_offsets`]).
pub async fn cat_parts<W: AsyncWrite + Unpin>(
    store: &dyn ObjectStore,
    keys: &dyn KeyProvider,
    record: &BackupRecord,
    out: &mut W,
) -> Result<Merger, Error> {
    let open_schema = || async {
        let (_, stream) = open_object(store, keys, &record.object_key, record).await?;
        Ok::<_, Error>(BufReader::with_capacity(PART_BUFFER, stream))
    };
    let open_part = |i: usize| async move {
        let part = record.for_part(&record.parts[i]);
        let (_, stream) = open_object(store, keys, &part.object_key, &part).await?;
        Ok::<_, Error>(BufReader::with_capacity(PART_BUFFER, stream))
    };

    let mut schema_stream = open_schema().await?;
    let schema = read_toc(&mut schema_stream, "the schema part")
        .await
        .map_err(merge_error)?;
    // The schema part holds no data blocks: read it to its end so its checks run.
    let rest = schema_stream
        .fill_buf()
        .await
        .map_err(|e| Error::from_read("reading the schema part", e))?;
    if !rest.is_empty() {
        return Err(MergeError::Mismatch("the schema part holds data blocks".into()).into());
    }
    drop(schema_stream);
    let mut tocs = Vec::with_capacity(record.parts.len());
    for i in 0..record.parts.len() {
        let mut stream = open_part(i).await?;
        tocs.push(
            read_toc(&mut stream, &format!("data part {}", i + 1))
                .await
                .map_err(merge_error)?,
        );
    }
    let mut merger = Merger::new(schema, tocs)?;

    let mut out = BufWriter::with_capacity(PART_BUFFER, out);
    merger.write_toc(&mut out).await.map_err(merge_error)?;
    for i in 0..record.parts.len() {
        let mut stream = open_part(i).await?;
        merger
            .copy_part(i, &mut stream, &mut out)
            .await
            .map_err(merge_error)?;
    }
    merger.finish()?;
    out.flush()
        .await
        .map_err(|e| Error::from_read("writing the archive", e))?;
    Ok(merger)
}

/// After [`cat_parts`] into a file: rewrites its TOC with each data block's real offset, so
/// `pg_restore -j` can seek to the blocks as in a pg_dump file.
pub async fn write_offsets<W: AsyncWrite + AsyncSeek + Unpin>(
    merger: &Merger,
    file: &mut W,
) -> Result<(), Error> {
    merger.rewrite_toc(file).await.map_err(merge_error)
}

/// A merge failure as the operation's error: a part's read error keeps its own class
/// (integrity, storage).
fn merge_error(e: MergeError) -> Error {
    match e {
        MergeError::Read { source, .. } => Error::from_read("reading a part of the backup", source),
        other => Error::Merge(other),
    }
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
    let (fields, stream) = open_object(
        services.store.as_ref(),
        services.keys.as_ref(),
        &record.object_key,
        &record,
    )
    .await?;
    Ok((record, fields, stream))
}

/// Opens one data part of a parallel backup: `part` is the backup's record as
/// [`BackupRecord::for_part`] makes it (the part's key and checksum).
pub(crate) async fn open_part(
    services: &Services,
    part: &BackupRecord,
) -> Result<(HeaderFields, ArchiveStream), Error> {
    open_object(
        services.store.as_ref(),
        services.keys.as_ref(),
        &part.object_key,
        part,
    )
    .await
}

/// Reads the object at `object_key` of the backup `record` describes (its id, database and
/// SHA-256): checks the header names that backup, unwraps the data key, returns the header's
/// fields and the stream.
async fn open_object(
    store: &dyn ObjectStore,
    keys: &dyn KeyProvider,
    object_key: &str,
    record: &BackupRecord,
) -> Result<(HeaderFields, ArchiveStream), Error> {
    let object = store.open(object_key).await?;
    let mut sealed = DigestReader::new(object, record.sha256.clone());
    let header = Header::read_from(&mut sealed)
        .await
        .map_err(|e| Error::Integrity(e.into()))?;
    let fields = header.fields();
    if fields.backup_id != record.id.as_str() || fields.database != record.database {
        return Err(IntegrityError::WrongObject {
            key: object_key.to_owned(),
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
    let key = keys
        .unwrap(&fields.key_id, &fields.wrapped_key, ctx)
        .await?;
    let fields = fields.clone();
    let stream = archive_reader(sealed, header, &key, compression);
    Ok((fields, Box::pin(stream)))
}

/// Reads a backup's manifest `manifest_key` in `store`, with no catalog, and points its
/// record at the objects beside it (`<id>.manifest.json` → `<id>.pgkeep` and, for a parallel
/// backup, `<id>.data-<n>.pgkeep`; docs/FORMAT.md), so they are checked against the
/// manifest's id, database and SHA-256s as [`open_archive`] checks them against a record.
pub async fn read_manifest(store: &dyn ObjectStore, manifest_key: &str) -> Result<Manifest, Error> {
    let unreadable = |message: String| {
        Error::Integrity(IntegrityError::BadManifest {
            key: manifest_key.to_owned(),
            message,
        })
    };
    let Some(stem) = manifest_key.strip_suffix(".manifest.json") else {
        return Err(unreadable(
            "a manifest's name ends in .manifest.json (its object is <id>.pgkeep beside it)".into(),
        ));
    };
    let bytes = store.get(manifest_key).await?;
    let mut manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    if manifest.manifest_version != MANIFEST_VERSION {
        return Err(unreadable(format!(
            "manifest version {} is not one this pgkeep reads ({MANIFEST_VERSION})",
            manifest.manifest_version
        )));
    }
    let file_name = |key: &str| key.rsplit('/').next().unwrap_or("").to_owned();
    let object_key = format!("{stem}.pgkeep");
    if file_name(&manifest.backup.object_key) != file_name(&object_key) {
        return Err(unreadable(format!(
            "it names the object {:?}, not {object_key:?} beside it",
            manifest.backup.object_key
        )));
    }
    for (i, part) in manifest.backup.parts.iter_mut().enumerate() {
        let beside = part_key(&object_key, i + 1);
        if file_name(&part.object_key) != file_name(&beside) {
            return Err(unreadable(format!(
                "it names data part {} {:?}, not {beside:?} beside it",
                i + 1,
                part.object_key
            )));
        }
        part.object_key = beside;
    }
    manifest.backup.object_key = object_key;
    Ok(manifest)
}

/// The archive of a single-stream backup read from its manifest ([`read_manifest`]); a
/// parallel backup's parts are read with [`cat_parts`].
pub async fn open_from_manifest(
    store: &dyn ObjectStore,
    keys: &dyn KeyProvider,
    manifest: &Manifest,
) -> Result<ArchiveStream, Error> {
    let record = &manifest.backup;
    refuse_parts(record)?;
    let (_, stream) = open_object(store, keys, &record.object_key, record).await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use crate::model::Manifest;
    use crate::pipeline::crypt::HeaderFields;

    /// FORMAT.md: a field given twice is an error, not "the last wins", in the header
    /// metadata and in the manifest alike.
    #[test]
    fn duplicate_json_keys_are_refused() {
        let header = r#"{"backup_id":"a","database":"shop","compression":"zstd","key_id":"file:1","wrapped_key":"AA=="}"#;
        assert!(serde_json::from_str::<HeaderFields>(header).is_ok());
        let twice = header.replacen('{', r#"{"compression":"gzip","#, 1);
        let err = serde_json::from_str::<HeaderFields>(&twice).unwrap_err();
        assert!(err.to_string().contains("duplicate field"), "{err}");

        let manifest = r#"{"manifest_version":1,"tool_version":"0.1.0",
            "backup":{"id":"20261124T154851222Z-29b946c0","database":"shop","kind":"manual",
              "status":"completed","created_at":"2026-11-24T15:48:51Z","completed_at":null,
              "object_key":"shop/2026/11/20261124T154851222Z-29b946c0.pgkeep","size_bytes":10,
              "sha256":"00","compression":"gzip","key_id":"file:1","server_version":"15",
              "row_counts":{"public.t":3},"duration_ms":null,"error":null},
            "encryption":{"format_version":1,"aead":"AES-256-GCM","chunk_size":1048576,
              "key_id":"file:1","wrapped_key":"AA=="},
            "archive":{"format":"pg_dump custom","archive_version":"1.14.0","dump_version":"15",
              "archive_bytes":100,"tables":[],"large_objects":0}}"#;
        assert!(serde_json::from_str::<Manifest>(manifest).is_ok());
        for twice in [
            manifest.replacen('{', r#"{"manifest_version":99,"#, 1),
            manifest.replacen(
                r#""status":"completed""#,
                r#""status":"completed","status":"verified""#,
                1,
            ),
        ] {
            let err = serde_json::from_str::<Manifest>(&twice).unwrap_err();
            assert!(err.to_string().contains("duplicate field"), "{err}");
        }
    }
}
