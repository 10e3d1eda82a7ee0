//! The manifest must agree with the record and with the object before a backup counts as
//! proven: a manifest is what a stranger (or `pgkeep repair`) reads without the catalog, so a
//! swapped, edited or unknown manifest is a verification failure, with the difference named.

use std::collections::BTreeMap;

use base64::Engine;

use crate::model::{qualified_name, BackupRecord, Manifest, MANIFEST_VERSION};
use crate::pipeline::archive_scan::ArchiveSummary;
use crate::pipeline::crypt::{HeaderFields, FORMAT_VERSION};

/// Every way the manifest disagrees with the record and the object header (checked before
/// anything is restored).
pub(super) fn against_record(
    manifest: &Manifest,
    record: &BackupRecord,
    header: &HeaderFields,
) -> Vec<String> {
    let mut out = Vec::new();
    if manifest.manifest_version != MANIFEST_VERSION {
        // Nothing else in a manifest of another version can be trusted to mean the same.
        out.push(format!(
            "manifest_version {} is not one this pgkeep reads ({MANIFEST_VERSION})",
            manifest.manifest_version
        ));
        return out;
    }
    let b = &manifest.backup;
    let mut field = |name: &str, manifest: String, record: String| {
        if manifest != record {
            out.push(format!(
                "backup.{name} is {manifest}, the record says {record}"
            ));
        }
    };
    let show = |v: &dyn std::fmt::Debug| format!("{v:?}");
    field("id", b.id.to_string(), record.id.to_string());
    field("database", show(&b.database), show(&record.database));
    field("kind", b.kind.to_string(), record.kind.to_string());
    field(
        "created_at",
        crate::model::format_time(b.created_at),
        crate::model::format_time(record.created_at),
    );
    field(
        "object_key",
        b.object_key.clone(),
        record.object_key.clone(),
    );
    field("size_bytes", show(&b.size_bytes), show(&record.size_bytes));
    field("sha256", show(&b.sha256), show(&record.sha256));
    field(
        "compression",
        b.compression.to_string(),
        record.compression.to_string(),
    );
    field("key_id", show(&b.key_id), show(&record.key_id));
    field(
        "schema_only_tables",
        show(&b.schema_only_tables),
        show(&record.schema_only_tables),
    );
    field("selection", show(&b.selection), show(&record.selection));
    field("parts", show(&b.parts), show(&record.parts));
    out.extend(count_differences(
        "backup.row_counts",
        &b.row_counts,
        &record.row_counts,
        "the record",
    ));

    let e = &manifest.encryption;
    if u32::from(e.format_version) != u32::from(FORMAT_VERSION) {
        out.push(format!(
            "encryption.format_version is {}, the object's is {FORMAT_VERSION}",
            e.format_version
        ));
    }
    if e.key_id != header.key_id {
        out.push(format!(
            "encryption.key_id is {:?}, the object header's is {:?}",
            e.key_id, header.key_id
        ));
    }
    let wrapped = base64::engine::general_purpose::STANDARD.encode(&header.wrapped_key);
    if e.wrapped_key != wrapped {
        out.push("encryption.wrapped_key differs from the object header's".into());
    }
    out
}

/// Every way the manifest's `archive` disagrees with the archive as read (after the replay).
pub(super) fn against_archive(manifest: &Manifest, archive: &ArchiveSummary) -> Vec<String> {
    let declared: BTreeMap<String, u64> = manifest
        .archive
        .tables
        .iter()
        .map(|t| (qualified_name(&t.schema, &t.table), t.rows))
        .collect();
    let read: BTreeMap<String, u64> = archive
        .tables
        .iter()
        .map(|t| (qualified_name(&t.schema, &t.table), t.rows))
        .collect();
    let mut out = count_differences("archive.tables", &declared, &read, "the archive");
    if manifest.archive.large_objects != archive.large_objects {
        out.push(format!(
            "archive.large_objects is {}, the archive holds {}",
            manifest.archive.large_objects, archive.large_objects
        ));
    }
    out
}

fn count_differences(
    what: &str,
    manifest: &BTreeMap<String, u64>,
    other: &BTreeMap<String, u64>,
    other_name: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for (table, n) in manifest {
        match other.get(table) {
            Some(m) if m == n => {}
            Some(m) => out.push(format!("{what}[{table}] is {n}, {other_name} says {m}")),
            None => out.push(format!("{what} lists {table}, {other_name} does not")),
        }
    }
    for table in other.keys().filter(|t| !manifest.contains_key(*t)) {
        out.push(format!("{what} lacks {table}, which {other_name} lists"));
    }
    out
}
