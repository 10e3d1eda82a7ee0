//! The table of contents: which fields each archive version writes, and what an entry tells
//! the scanner (a table's data to count, large objects, a table defined without data, a schema
//! object to list).

use super::{ArchiveObject, ArchiveScanError, ArchiveScanner, State, Str, TocEntry, OBJECT_KINDS};
use crate::model::TableName;
use crate::pipeline::archive_format::{TocField, K_OFFSET_NO_DATA, K_OFFSET_POS_NOT_SET};

#[derive(Debug, Clone, Default)]
pub(super) struct EntryBuilder {
    dump_id: i64,
    had_dumper: bool,
    tag: Vec<u8>,
    desc: Vec<u8>,
    namespace: Vec<u8>,
    /// Length of copyStmt; None when NULL.
    copy_len: Option<u64>,
    /// Whether tableam is set (archives from 1.14): ordinary tables have one, partitioned
    /// tables none.
    has_table_am: bool,
    /// relkind (archives from 1.16), e.g. `b'r'`.
    relkind: Option<i64>,
    section: i64,
    /// Dependency dump IDs, kept only when collecting objects.
    deps: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EntryKind {
    Table { schema: String, table: String },
    Blobs,
    Other { desc: String, tag: String },
}

#[derive(Debug, Clone)]
pub(super) struct DataEntry {
    pub(super) dump_id: i64,
    pub(super) kind: EntryKind,
    pub(super) rows: u64,
    pub(super) started: bool,
    pub(super) done: bool,
}

impl DataEntry {
    pub(super) fn describe(&self) -> String {
        match &self.kind {
            EntryKind::Table { schema, table } => format!("table \"{schema}\".\"{table}\""),
            EntryKind::Blobs => "large objects".to_string(),
            EntryKind::Other { desc, tag } => format!("{desc} {tag}"),
        }
    }
}

impl ArchiveScanner {
    pub(super) fn start_toc_entry(&mut self) {
        if self.toc_index == self.toc_count {
            self.state = State::BlockType;
            return;
        }
        self.entry = EntryBuilder::default();
        self.field_index = 0;
        self.state = State::Toc;
    }

    /// Reads one field of the current TOC entry; false when more input is needed.
    pub(super) fn read_toc_field(&mut self, input: &mut &[u8]) -> Result<bool, ArchiveScanError> {
        let field = self.toc_fields[self.field_index];
        match field {
            TocField::DumpId | TocField::HadDumper | TocField::Section | TocField::RelKind => {
                let Some(value) = self.read_int(input)? else {
                    return Ok(false);
                };
                match field {
                    TocField::DumpId if value <= 0 => {
                        return Err(self.malformed(format!("TOC entry ID {value} out of range")));
                    }
                    TocField::DumpId => self.entry.dump_id = value,
                    TocField::HadDumper => self.entry.had_dumper = value != 0,
                    TocField::RelKind => self.entry.relkind = Some(value),
                    TocField::Section => self.entry.section = value,
                    _ => {}
                }
            }
            TocField::Deps => {
                // Dependency IDs as strings, until a NULL one.
                let Some(s) = self.read_str(input, self.collect_objects)? else {
                    return Ok(false);
                };
                match s {
                    Str::Null => {}
                    Str::Skipped(_) => return Ok(true),
                    Str::Kept(v) => {
                        let id = std::str::from_utf8(&v)
                            .ok()
                            .and_then(|t| t.parse::<i64>().ok())
                            .filter(|id| *id > 0)
                            .ok_or_else(|| {
                                self.malformed(format!(
                                    "TOC entry {} has an invalid dependency {:?}",
                                    self.entry.dump_id,
                                    String::from_utf8_lossy(&v)
                                ))
                            })?;
                        self.entry.deps.push(id);
                        return Ok(true);
                    }
                }
            }
            TocField::Offset => {
                let Some(b) = self.read_fixed(input, 1 + self.off_size) else {
                    return Ok(false);
                };
                if !(K_OFFSET_POS_NOT_SET..=K_OFFSET_NO_DATA).contains(&b[0]) {
                    return Err(self.malformed(format!("unexpected data offset flag {}", b[0])));
                }
                self.finish_toc_entry(b[0] != K_OFFSET_NO_DATA)?;
                return Ok(true);
            }
            _ => {
                // Names are kept (entries with data and table definitions need them);
                // everything else is skipped unread.
                let keep = matches!(field, TocField::Tag | TocField::Desc | TocField::Namespace);
                let Some(s) = self.read_str(input, keep)? else {
                    return Ok(false);
                };
                match (field, s) {
                    (TocField::Tag, Str::Kept(v)) => self.entry.tag = v,
                    (TocField::Desc, Str::Kept(v)) => self.entry.desc = v,
                    (TocField::Namespace, Str::Kept(v)) => self.entry.namespace = v,
                    (TocField::CopyStmt, Str::Skipped(len)) => self.entry.copy_len = Some(len),
                    (TocField::TableAm, Str::Skipped(_)) => self.entry.has_table_am = true,
                    _ => {}
                }
            }
        }
        self.field_index += 1;
        Ok(true)
    }

    fn finish_toc_entry(&mut self, has_offset: bool) -> Result<(), ArchiveScanError> {
        let entry = std::mem::take(&mut self.entry);
        self.toc_index += 1;
        if self.collect_objects {
            let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
            let kind = text(&entry.desc);
            if OBJECT_KINDS.contains(&kind.as_str()) {
                self.objects.push(ArchiveObject {
                    kind: kind.clone(),
                    schema: text(&entry.namespace),
                    name: text(&entry.tag),
                });
            }
            self.toc.push(TocEntry {
                dump_id: entry.dump_id,
                kind,
                section: entry.section,
                schema: text(&entry.namespace),
                name: text(&entry.tag),
                deps: entry.deps.clone(),
            });
        }
        if entry.desc == b"TABLE" && self.is_ordinary_table(&entry) {
            self.defined_tables.push(TableName {
                schema: String::from_utf8_lossy(&entry.namespace).into_owned(),
                table: String::from_utf8_lossy(&entry.tag).into_owned(),
            });
        }
        if entry.had_dumper && has_offset {
            let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
            let kind = match entry.desc.as_slice() {
                b"TABLE DATA" => {
                    let (schema, table) = (text(&entry.namespace), text(&entry.tag));
                    if entry.copy_len.unwrap_or(0) == 0 {
                        return Err(ArchiveScanError::NotCopyData { schema, table });
                    }
                    EntryKind::Table { schema, table }
                }
                b"BLOBS" => EntryKind::Blobs,
                desc => EntryKind::Other {
                    desc: text(desc),
                    tag: text(&entry.tag),
                },
            };
            if self.by_dump_id.contains_key(&entry.dump_id) {
                return Err(self.malformed(format!("duplicate TOC entry ID {}", entry.dump_id)));
            }
            self.by_dump_id.insert(entry.dump_id, self.entries.len());
            self.entries.push(DataEntry {
                dump_id: entry.dump_id,
                kind,
                rows: 0,
                started: false,
                done: false,
            });
        }
        self.start_toc_entry();
        Ok(())
    }

    /// Whether a TABLE entry is an ordinary table (one that has rows of its own), as far as
    /// the archive version tells: relkind `r` (1.16), a table access method (1.14, 1.15),
    /// else assumed.
    fn is_ordinary_table(&self, entry: &EntryBuilder) -> bool {
        if let Some(relkind) = entry.relkind {
            return relkind == i64::from(b'r');
        }
        if self.minor >= 14 {
            return entry.has_table_am;
        }
        true
    }
}
