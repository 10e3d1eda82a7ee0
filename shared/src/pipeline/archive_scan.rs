//! Counts the rows of every table while a `pg_dump --format=custom -Z0` archive streams past.
//!
//! The backup manifest records how many rows each table had. Asking the server again would
//! take a second scan and could disagree with the snapshot pg_dump used, so the counts come
//! from the archive bytes themselves, on their way to compression and storage.
//!
//! # The format (pg_backup_archiver.c, pg_backup_custom.c)
//!
//! * Header: `"PGDMP"`, version bytes major/minor/rev, intSize, offSize, format (1 = custom),
//!   compression (an int level up to 1.14, an algorithm byte from 1.15), seven date ints,
//!   then the database name, the server version and pg_dump's version as strings.
//! * An int is a sign byte then intSize bytes little-endian; a string is an int length
//!   (-1 = NULL) then that many bytes.
//! * The TOC: an entry count, then per entry dumpId, hadDumper, table OID, OID, tag, desc,
//!   section, defn, dropStmt, copyStmt, namespace, tablespace, tableam (from 1.14),
//!   relkind (an int, from 1.16), owner, "with oids", dependencies (strings ending with a
//!   NULL one), then the custom format's data offset (a state byte and offSize bytes).
//! * Then one data block per entry with data: a type byte (1 = table data, 3 = large
//!   objects), the dumpId, then chunks (an int length and that many bytes) ending with a
//!   zero length. A large-object block holds, per object, a nonzero OID and its chunks, and
//!   ends with OID 0. The archive ends after the last block.
//!
//! With `-Z0` a TABLE DATA block is COPY text: one row per line, newlines inside values
//! escaped, so rows are counted with a vectorised newline count per chunk. pg_dump (at
//! least up to 17) appends COPY's end marker `\.` and two empty lines to every table's data;
//! those lines are recognised at the end of the block and not counted. No line of COPY
//! data can be `\.` (a backslash in a value is written as `\\`), so the marker is unambiguous.
//!
//! Tables defined without data (`pg_dump --exclude-table-data`) are listed too
//! ([`ArchiveSummary::schema_only_tables`]): TABLE entries with no TABLE DATA entry. A
//! partitioned table has no data of its own and is not listed; it is told apart by the TOC's
//! relkind (archive 1.16) or by having no table access method (1.14, 1.15); older archives
//! cannot tell, and list it.
//!
//! Memory stays bounded: data is never buffered, TOC strings other than entries' names are
//! skipped without being stored.

use std::collections::{HashMap, HashSet};

use crate::model::TableName;

/// Archive versions are compared as (major, minor); these bound what this parser follows.
const MIN_MINOR: u8 = 12;
const MAX_MINOR: u8 = 16;
const MAGIC: &[u8; 5] = b"PGDMP";
/// `archCustom` in pg_backup.h.
const FORMAT_CUSTOM: u8 = 1;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const K_OFFSET_POS_NOT_SET: u8 = 1;
const K_OFFSET_NO_DATA: u8 = 3;
/// Longest header or TOC string kept in memory (names; real ones are far shorter).
const MAX_KEPT_STRING: i64 = 1 << 20;
/// Largest fixed-size item: the offset state byte plus up to 31 offset bytes.
const FIXED_MAX: usize = 32;
/// Bytes kept from the end of a table's data to recognise COPY's end marker.
const TAIL: usize = 16;

/// Watches a pg_dump custom-format archive written with `-Z0` and counts the rows of each table's data.
///
/// Feed it every byte of the archive in order; it keeps only the archive's small metadata,
/// so any archive size works. Errors are sticky: once `feed` fails, later calls fail the same way.
#[derive(Debug, Clone)]
pub struct ArchiveScanner {
    state: State,
    /// Bytes passed to `feed`.
    fed: u64,
    /// Bytes parsed (equals `fed` unless an error stopped parsing).
    pos: u64,
    /// Where the item being read started, for error messages.
    item_start: u64,
    scratch: [u8; FIXED_MAX],
    scratch_len: usize,
    /// Bytes left of the string being read, once its length is known.
    str_remaining: Option<u64>,
    str_len: u64,
    str_buf: Vec<u8>,
    minor: u8,
    int_size: usize,
    off_size: usize,
    archive_version: String,
    server_version: String,
    dump_version: String,
    database: String,
    toc_count: u64,
    toc_index: u64,
    toc_fields: Vec<TocField>,
    field_index: usize,
    entry: EntryBuilder,
    /// Entries that carry data, in TOC order.
    entries: Vec<DataEntry>,
    by_dump_id: HashMap<i64, usize>,
    block: Option<Block>,
    large_objects: u64,
    failed: Option<ArchiveScanError>,
    /// Whether to list the schema objects of the TOC ([`ArchiveScanner::collecting_objects`]).
    collect_objects: bool,
    objects: Vec<ArchiveObject>,
    /// Ordinary tables the TOC defines (TABLE entries), in TOC order.
    defined_tables: Vec<TableName>,
}

/// What the archive says about itself and its tables, for the backup manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Archive format version, e.g. "1.14.0": tells which pg_restore can read it.
    pub archive_version: String,
    /// The archive header's remote (server) version string: what was backed up.
    pub server_version: String,
    /// pg_dump's version string from the header: what made the archive.
    pub dump_version: String,
    /// The archive header's database name.
    pub database: String,
    /// One per TABLE DATA entry whose data block was seen, in TOC order.
    pub tables: Vec<TableRows>,
    /// Ordinary tables the TOC defines but holds no data for (`--exclude-table-data`), in
    /// TOC order: a restore creates them empty.
    pub schema_only_tables: Vec<TableName>,
    /// Number of large objects in BLOBS blocks.
    pub large_objects: u64,
    /// The schema objects the TOC declares, in TOC order (of the kinds in [`OBJECT_KINDS`]);
    /// empty unless the scanner was [collecting them](ArchiveScanner::collecting_objects).
    pub objects: Vec<ArchiveObject>,
}

/// TOC entry kinds ("desc") listed in [`ArchiveSummary::objects`]: what a verification
/// compares between an archive and the database restored from it.
pub const OBJECT_KINDS: &[&str] = &[
    "TABLE",
    "SEQUENCE",
    "INDEX",
    "CONSTRAINT",
    "VIEW",
    "MATERIALIZED VIEW",
    "FOREIGN TABLE",
    "FUNCTION",
    "PROCEDURE",
    "EXTENSION",
];

/// One schema object declared by the archive's TOC, named exactly as pg_dump named it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchiveObject {
    /// The TOC entry's kind, e.g. `TABLE`, `MATERIALIZED VIEW`, `FUNCTION`.
    pub kind: String,
    /// Schema (namespace) name, unquoted; empty when the entry has none (extensions).
    pub schema: String,
    /// The TOC tag: the object's name; `table constraint` for constraints,
    /// `name(argtype, ...)` for functions.
    pub name: String,
}

/// Rows counted in one table's data, to check a restore against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    /// Schema name as pg_dump recorded it (unquoted).
    pub schema: String,
    /// Table name as pg_dump recorded it (unquoted).
    pub table: String,
    /// Rows in the table's COPY data.
    pub rows: u64,
}

/// Why an archive could not be scanned; each message says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveScanError {
    /// The input does not start with the custom format's magic bytes.
    #[error(
        "input is not a pg_dump custom-format archive (it does not start with \"PGDMP\"): \
         run pg_dump with --format=custom"
    )]
    NotAnArchive,
    /// The header names another archive format (e.g. a directory dump's toc.dat).
    #[error(
        "archive format code {found} is not the custom format (1): \
         run pg_dump with --format=custom"
    )]
    WrongFormat {
        /// Format code found in the header.
        found: u8,
    },
    /// The archive version is outside what this parser follows.
    #[error("unsupported archive version {version}: {advice}")]
    UnsupportedVersion {
        /// Version from the header, e.g. "1.17.0".
        version: String,
        /// What to do about it.
        advice: &'static str,
    },
    /// The archive's data is compressed, so its rows cannot be counted.
    #[error(
        "archive data is compressed ({algorithm}), so its rows cannot be counted: run pg_dump \
         with -Z0 (pgkeep compresses the stream itself)"
    )]
    Compressed {
        /// Compression named by the header, e.g. "gzip level 6" or "zstd".
        algorithm: String,
    },
    /// A table's data is not COPY text, so a line is not a row.
    #[error(
        "the data of table \"{schema}\".\"{table}\" is INSERT statements, not COPY data, so its \
         rows cannot be counted: run pg_dump without --inserts/--column-inserts/--rows-per-insert"
    )]
    NotCopyData {
        /// Schema of the table.
        schema: String,
        /// Name of the table.
        table: String,
    },
    /// The bytes do not follow the format: corruption, or not pg_dump's output.
    #[error("malformed archive at byte {offset}: {what}")]
    Malformed {
        /// Offset of the offending item from the start of the archive.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// The input ended in the middle of a structure.
    #[error(
        "archive ends at byte {offset} in the middle of {what}: the dump is incomplete \
         (did pg_dump fail or get killed?)"
    )]
    Truncated {
        /// Bytes received.
        offset: u64,
        /// The structure that was cut off.
        what: String,
    },
    /// The input ended cleanly between blocks, but an entry's data never came.
    #[error(
        "archive ended without the data of {what} (TOC entry {dump_id}): the dump is \
         incomplete (did pg_dump fail or get killed?)"
    )]
    MissingData {
        /// The TOC entry's dump ID.
        dump_id: i64,
        /// The entry, e.g. `table "public"."users"`.
        what: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Magic,
    MajorMinor,
    Rev,
    Sizes,
    Compression,
    CreateDate(u8),
    Database,
    ServerVersion,
    DumpVersion,
    TocCount,
    Toc,
    /// Between data blocks: the only place the archive may end.
    BlockType,
    BlockId(u8),
    ChunkLen,
    ChunkBody(u64),
    LargeObjectOid,
}

/// TOC entry fields in archive order; which are present depends on the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TocField {
    DumpId,
    HadDumper,
    TableOid,
    Oid,
    Tag,
    Desc,
    Section,
    Defn,
    DropStmt,
    CopyStmt,
    Namespace,
    Tablespace,
    TableAm,
    RelKind,
    Owner,
    WithOids,
    Deps,
    Offset,
}

/// ReadToc's field list for archive version 1.`minor` (1.12 to 1.16).
fn toc_fields(minor: u8) -> Vec<TocField> {
    use TocField::*;
    let mut fields = vec![
        DumpId, HadDumper, TableOid, Oid, Tag, Desc, Section, Defn, DropStmt, CopyStmt, Namespace,
        Tablespace,
    ];
    if minor >= 14 {
        fields.push(TableAm);
    }
    if minor >= 16 {
        fields.push(RelKind);
    }
    fields.extend([Owner, WithOids, Deps, Offset]);
    fields
}

#[derive(Debug, Clone, Default)]
struct EntryBuilder {
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryKind {
    Table { schema: String, table: String },
    Blobs,
    Other { desc: String, tag: String },
}

#[derive(Debug, Clone)]
struct DataEntry {
    dump_id: i64,
    kind: EntryKind,
    rows: u64,
    started: bool,
    done: bool,
}

impl DataEntry {
    fn describe(&self) -> String {
        match &self.kind {
            EntryKind::Table { schema, table } => format!("table \"{schema}\".\"{table}\""),
            EntryKind::Blobs => "large objects".to_string(),
            EntryKind::Other { desc, tag } => format!("{desc} {tag}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    entry: usize,
    large_objects: bool,
    /// Present for table data, whose rows are counted.
    rows: Option<RowCounter>,
}

/// Counts newlines in a table's data and remembers its last bytes.
#[derive(Debug, Clone, Default)]
struct RowCounter {
    newlines: u64,
    total: u64,
    tail: [u8; TAIL],
    tail_len: usize,
}

impl RowCounter {
    #[inline]
    fn add(&mut self, chunk: &[u8]) {
        self.newlines += memchr::memchr_iter(b'\n', chunk).count() as u64;
        self.total += chunk.len() as u64;
        if chunk.len() >= TAIL {
            self.tail.copy_from_slice(&chunk[chunk.len() - TAIL..]);
            self.tail_len = TAIL;
        } else {
            let keep = self.tail_len.min(TAIL - chunk.len());
            self.tail
                .copy_within(self.tail_len - keep..self.tail_len, 0);
            self.tail[keep..keep + chunk.len()].copy_from_slice(chunk);
            self.tail_len = keep + chunk.len();
        }
    }

    /// Rows: newlines, minus those of a trailing `\.` end-marker line and the empty lines after it.
    fn rows(&self) -> u64 {
        let tail = &self.tail[..self.tail_len];
        let mut end = tail.len();
        while end > 0 && tail[end - 1] == b'\n' {
            end -= 1;
        }
        let trailing = tail.len() - end;
        if trailing == 0 || end < 2 || &tail[end - 2..end] != b"\\." {
            return self.newlines;
        }
        let start = end - 2;
        let at_line_start = if start == 0 {
            self.total == tail.len() as u64
        } else {
            tail[start - 1] == b'\n'
        };
        if at_line_start {
            self.newlines - trailing as u64
        } else {
            self.newlines
        }
    }
}

enum Str {
    Null,
    Skipped(u64),
    Kept(Vec<u8>),
}

impl Default for ArchiveScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ArchiveScanner {
    /// A scanner expecting the first byte of an archive.
    pub fn new() -> Self {
        Self {
            state: State::Magic,
            fed: 0,
            pos: 0,
            item_start: 0,
            scratch: [0; FIXED_MAX],
            scratch_len: 0,
            str_remaining: None,
            str_len: 0,
            str_buf: Vec::new(),
            minor: 0,
            int_size: 4,
            off_size: 8,
            archive_version: String::new(),
            server_version: String::new(),
            dump_version: String::new(),
            database: String::new(),
            toc_count: 0,
            toc_index: 0,
            toc_fields: Vec::new(),
            field_index: 0,
            entry: EntryBuilder::default(),
            entries: Vec::new(),
            by_dump_id: HashMap::new(),
            block: None,
            large_objects: 0,
            failed: None,
            collect_objects: false,
            objects: Vec::new(),
            defined_tables: Vec::new(),
        }
    }

    /// Also lists the TOC's schema objects ([`ArchiveSummary::objects`]), so a restore can be
    /// compared with what the archive declares. Costs memory in proportion to the TOC only.
    pub fn collecting_objects(mut self) -> Self {
        self.collect_objects = true;
        self
    }

    /// Feed the next bytes of the archive, in order, in chunks of any size (1 byte to megabytes).
    ///
    /// Fails as soon as the bytes cannot be a usable archive, so a backup can stop early.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ArchiveScanError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.fed += bytes.len() as u64;
        self.parse(bytes)
            .inspect_err(|err| self.failed = Some(err.clone()))
    }

    /// At end of input: error if the archive ended mid-structure or a table's data was never seen complete.
    pub fn finish(self) -> Result<ArchiveSummary, ArchiveScanError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if self.state != State::BlockType {
            return Err(ArchiveScanError::Truncated {
                offset: self.pos,
                what: self.position_description(),
            });
        }
        if let Some(missing) = self.entries.iter().find(|e| !e.done) {
            return Err(ArchiveScanError::MissingData {
                dump_id: missing.dump_id,
                what: missing.describe(),
            });
        }
        let with_data: HashSet<(&str, &str)> = self
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Table { schema, table } => Some((schema.as_str(), table.as_str())),
                _ => None,
            })
            .collect();
        let schema_only_tables = self
            .defined_tables
            .iter()
            .filter(|t| !with_data.contains(&(t.schema.as_str(), t.table.as_str())))
            .cloned()
            .collect();
        let tables = self
            .entries
            .into_iter()
            .filter_map(|e| match e.kind {
                EntryKind::Table { schema, table } => Some(TableRows {
                    schema,
                    table,
                    rows: e.rows,
                }),
                _ => None,
            })
            .collect();
        Ok(ArchiveSummary {
            archive_version: self.archive_version,
            server_version: self.server_version,
            dump_version: self.dump_version,
            database: self.database,
            tables,
            schema_only_tables,
            large_objects: self.large_objects,
            objects: self.objects,
        })
    }

    /// Bytes fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.fed
    }

    fn parse(&mut self, mut input: &[u8]) -> Result<(), ArchiveScanError> {
        while !input.is_empty() {
            match self.state {
                State::ChunkBody(remaining) => {
                    // The hot path: table data goes through here once, untouched.
                    let take = remaining.min(input.len() as u64) as usize;
                    let (chunk, rest) = input.split_at(take);
                    input = rest;
                    self.pos += take as u64;
                    if let Some(Block {
                        rows: Some(counter),
                        ..
                    }) = &mut self.block
                    {
                        counter.add(chunk);
                    }
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::ChunkLen
                    } else {
                        State::ChunkBody(left)
                    };
                }
                State::ChunkLen => {
                    let Some(len) = self.read_int(&mut input)? else {
                        break;
                    };
                    if len > 0 {
                        self.state = State::ChunkBody(len as u64);
                    } else if len == 0 {
                        self.end_chunks();
                    } else {
                        return Err(self.malformed(format!("negative data chunk length {len}")));
                    }
                }
                State::Magic => {
                    let at = self.pos as usize;
                    let want = &MAGIC[at..];
                    let take = want.len().min(input.len());
                    if input[..take] != want[..take] {
                        return Err(ArchiveScanError::NotAnArchive);
                    }
                    input = &input[take..];
                    self.pos += take as u64;
                    if self.pos as usize == MAGIC.len() {
                        self.state = State::MajorMinor;
                    }
                }
                State::MajorMinor => {
                    let Some(b) = self.read_fixed(&mut input, 2) else {
                        break;
                    };
                    let (major, minor) = (b[0], b[1]);
                    if major != 1 || minor > MAX_MINOR {
                        return Err(ArchiveScanError::UnsupportedVersion {
                            version: format!("{major}.{minor}"),
                            advice: "it is newer than this pgkeep understands (1.12 to 1.16, \
                                     written by pg_dump up to 17): upgrade pgkeep",
                        });
                    }
                    if minor < MIN_MINOR {
                        return Err(ArchiveScanError::UnsupportedVersion {
                            version: format!("{major}.{minor}"),
                            advice: "it is older than pgkeep supports (1.12 to 1.16): \
                                     dump with a newer pg_dump",
                        });
                    }
                    self.minor = minor;
                    self.state = State::Rev;
                }
                State::Rev => {
                    let Some(b) = self.read_fixed(&mut input, 1) else {
                        break;
                    };
                    self.archive_version = format!("1.{}.{}", self.minor, b[0]);
                    self.state = State::Sizes;
                }
                State::Sizes => {
                    let Some(b) = self.read_fixed(&mut input, 3) else {
                        break;
                    };
                    let (int_size, off_size, format) = (b[0] as usize, b[1] as usize, b[2]);
                    if !(1..=8).contains(&int_size) {
                        return Err(self.malformed(format!("implausible integer size {int_size}")));
                    }
                    if !(1..FIXED_MAX).contains(&off_size) {
                        return Err(self.malformed(format!("implausible offset size {off_size}")));
                    }
                    if format != FORMAT_CUSTOM {
                        return Err(ArchiveScanError::WrongFormat { found: format });
                    }
                    self.int_size = int_size;
                    self.off_size = off_size;
                    self.toc_fields = toc_fields(self.minor);
                    self.state = State::Compression;
                }
                State::Compression => {
                    if self.minor >= 15 {
                        // pg_compress_algorithm: none, gzip, lz4, zstd.
                        let Some(b) = self.read_fixed(&mut input, 1) else {
                            break;
                        };
                        let algorithm = match b[0] {
                            0 => None,
                            1 => Some("gzip"),
                            2 => Some("lz4"),
                            3 => Some("zstd"),
                            other => {
                                return Err(self.malformed(format!(
                                    "unknown compression algorithm code {other}"
                                )));
                            }
                        };
                        if let Some(algorithm) = algorithm {
                            return Err(ArchiveScanError::Compressed {
                                algorithm: algorithm.to_string(),
                            });
                        }
                    } else {
                        let Some(level) = self.read_int(&mut input)? else {
                            break;
                        };
                        if level != 0 {
                            let algorithm = if level == -1 {
                                "gzip, default level".to_string()
                            } else {
                                format!("gzip level {level}")
                            };
                            return Err(ArchiveScanError::Compressed { algorithm });
                        }
                    }
                    self.state = State::CreateDate(0);
                }
                State::CreateDate(n) => {
                    // tm_sec, tm_min, tm_hour, tm_mday, tm_mon, tm_year, tm_isdst.
                    if self.read_int(&mut input)?.is_none() {
                        break;
                    }
                    self.state = if n == 6 {
                        State::Database
                    } else {
                        State::CreateDate(n + 1)
                    };
                }
                State::Database | State::ServerVersion | State::DumpVersion => {
                    let Some(s) = self.read_str(&mut input, true)? else {
                        break;
                    };
                    let value = match s {
                        Str::Kept(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                        _ => String::new(),
                    };
                    self.state = match self.state {
                        State::Database => {
                            self.database = value;
                            State::ServerVersion
                        }
                        State::ServerVersion => {
                            self.server_version = value;
                            State::DumpVersion
                        }
                        _ => {
                            self.dump_version = value;
                            State::TocCount
                        }
                    };
                }
                State::TocCount => {
                    let Some(count) = self.read_int(&mut input)? else {
                        break;
                    };
                    if count < 0 {
                        return Err(self.malformed(format!("negative TOC entry count {count}")));
                    }
                    self.toc_count = count as u64;
                    self.start_toc_entry();
                }
                State::Toc => {
                    if !self.read_toc_field(&mut input)? {
                        break;
                    }
                }
                State::BlockType => {
                    let Some(b) = self.read_fixed(&mut input, 1) else {
                        break;
                    };
                    if b[0] != BLK_DATA && b[0] != BLK_BLOBS {
                        return Err(self.malformed(format!("unknown data block type {}", b[0])));
                    }
                    self.state = State::BlockId(b[0]);
                }
                State::BlockId(block_type) => {
                    let Some(id) = self.read_int(&mut input)? else {
                        break;
                    };
                    self.start_block(block_type, id)?;
                }
                State::LargeObjectOid => {
                    let Some(oid) = self.read_int(&mut input)? else {
                        break;
                    };
                    if oid == 0 {
                        self.end_block();
                    } else {
                        // OIDs above 2^31 are written as negative ints; any nonzero is an object.
                        self.large_objects += 1;
                        self.state = State::ChunkLen;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads `n` bytes, straight from the input when they are all there.
    #[inline]
    fn read_fixed(&mut self, input: &mut &[u8], n: usize) -> Option<[u8; FIXED_MAX]> {
        let mut out = [0u8; FIXED_MAX];
        if self.scratch_len == 0 {
            self.item_start = self.pos;
            if input.len() >= n {
                out[..n].copy_from_slice(&input[..n]);
                *input = &input[n..];
                self.pos += n as u64;
                return Some(out);
            }
        }
        let take = (n - self.scratch_len).min(input.len());
        self.scratch[self.scratch_len..self.scratch_len + take].copy_from_slice(&input[..take]);
        self.scratch_len += take;
        *input = &input[take..];
        self.pos += take as u64;
        if self.scratch_len == n {
            self.scratch_len = 0;
            out[..n].copy_from_slice(&self.scratch[..n]);
            Some(out)
        } else {
            None
        }
    }

    /// ReadInt: a sign byte, then intSize bytes little-endian.
    #[inline]
    fn read_int(&mut self, input: &mut &[u8]) -> Result<Option<i64>, ArchiveScanError> {
        let n = 1 + self.int_size;
        let Some(b) = self.read_fixed(input, n) else {
            return Ok(None);
        };
        let magnitude = b[1..n]
            .iter()
            .rev()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
        let Ok(magnitude) = i64::try_from(magnitude) else {
            return Err(self.malformed("integer out of range".to_string()));
        };
        match b[0] {
            0 => Ok(Some(magnitude)),
            1 => Ok(Some(-magnitude)),
            sign => Err(self.malformed(format!("invalid integer sign byte {sign}"))),
        }
    }

    /// ReadStr: an int length (-1 = NULL), then the bytes, kept only when `keep`.
    fn read_str(&mut self, input: &mut &[u8], keep: bool) -> Result<Option<Str>, ArchiveScanError> {
        let remaining = match self.str_remaining {
            Some(remaining) => remaining,
            None => {
                let Some(len) = self.read_int(input)? else {
                    return Ok(None);
                };
                if len == -1 {
                    return Ok(Some(Str::Null));
                }
                if len < 0 {
                    return Err(self.malformed(format!("invalid string length {len}")));
                }
                if keep && len > MAX_KEPT_STRING {
                    return Err(self.malformed(format!("implausibly long name ({len} bytes)")));
                }
                self.str_len = len as u64;
                self.str_buf.clear();
                len as u64
            }
        };
        let take = remaining.min(input.len() as u64) as usize;
        if keep {
            self.str_buf.extend_from_slice(&input[..take]);
        }
        *input = &input[take..];
        self.pos += take as u64;
        if remaining == take as u64 {
            self.str_remaining = None;
            Ok(Some(if keep {
                Str::Kept(std::mem::take(&mut self.str_buf))
            } else {
                Str::Skipped(self.str_len)
            }))
        } else {
            self.str_remaining = Some(remaining - take as u64);
            Ok(None)
        }
    }

    fn start_toc_entry(&mut self) {
        if self.toc_index == self.toc_count {
            self.state = State::BlockType;
            return;
        }
        self.entry = EntryBuilder::default();
        self.field_index = 0;
        self.state = State::Toc;
    }

    /// Reads one field of the current TOC entry; false when more input is needed.
    fn read_toc_field(&mut self, input: &mut &[u8]) -> Result<bool, ArchiveScanError> {
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
                    _ => {}
                }
            }
            TocField::Deps => {
                // Dependency IDs as strings, until a NULL one.
                let Some(s) = self.read_str(input, false)? else {
                    return Ok(false);
                };
                if !matches!(s, Str::Null) {
                    return Ok(true);
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
            let kind = String::from_utf8_lossy(&entry.desc);
            if OBJECT_KINDS.contains(&kind.as_ref()) {
                self.objects.push(ArchiveObject {
                    kind: kind.into_owned(),
                    schema: String::from_utf8_lossy(&entry.namespace).into_owned(),
                    name: String::from_utf8_lossy(&entry.tag).into_owned(),
                });
            }
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

    fn start_block(&mut self, block_type: u8, id: i64) -> Result<(), ArchiveScanError> {
        let Some(&index) = self.by_dump_id.get(&id) else {
            return Err(self.malformed(format!(
                "data block for TOC entry {id}, which has no data in the TOC"
            )));
        };
        let entry = &mut self.entries[index];
        if entry.started {
            return Err(self.malformed(format!("second data block for TOC entry {id}")));
        }
        let large_objects = block_type == BLK_BLOBS;
        if large_objects != (entry.kind == EntryKind::Blobs) {
            let what = format!("data block type {block_type} for {}", entry.describe());
            return Err(self.malformed(what));
        }
        entry.started = true;
        let rows = matches!(entry.kind, EntryKind::Table { .. }).then(RowCounter::default);
        self.block = Some(Block {
            entry: index,
            large_objects,
            rows,
        });
        self.state = if large_objects {
            State::LargeObjectOid
        } else {
            State::ChunkLen
        };
        Ok(())
    }

    /// A zero chunk length: the end of a large object, or of a table's data.
    fn end_chunks(&mut self) {
        match &self.block {
            Some(block) if block.large_objects => self.state = State::LargeObjectOid,
            _ => self.end_block(),
        }
    }

    fn end_block(&mut self) {
        if let Some(block) = self.block.take() {
            let entry = &mut self.entries[block.entry];
            entry.rows = block.rows.map_or(0, |counter| counter.rows());
            entry.done = true;
        }
        self.state = State::BlockType;
    }

    fn malformed(&self, what: String) -> ArchiveScanError {
        ArchiveScanError::Malformed {
            offset: self.item_start,
            what,
        }
    }

    fn position_description(&self) -> String {
        match self.state {
            State::Magic if self.pos == 0 => "the archive header (no bytes were received)".into(),
            State::Magic
            | State::MajorMinor
            | State::Rev
            | State::Sizes
            | State::Compression
            | State::CreateDate(_)
            | State::Database
            | State::ServerVersion
            | State::DumpVersion => "the archive header".into(),
            State::TocCount => "the table of contents".into(),
            State::Toc => format!(
                "table of contents entry {} of {}",
                self.toc_index + 1,
                self.toc_count
            ),
            State::BlockType | State::BlockId(_) => "a data block header".into(),
            State::ChunkLen | State::ChunkBody(_) | State::LargeObjectOid => match &self.block {
                Some(block) => format!("the data of {}", self.entries[block.entry].describe()),
                None => "a data block".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &[u8] = include_bytes!("../../tests/fixtures/archive/sample-pg15.dump");
    const SAMPLE_COUNTS: &str =
        include_str!("../../tests/fixtures/archive/sample-pg15.counts.json");

    fn scan(bytes: &[u8]) -> Result<ArchiveSummary, ArchiveScanError> {
        let mut scanner = ArchiveScanner::new();
        scanner.feed(bytes)?;
        scanner.finish()
    }

    fn scan_in_chunks(bytes: &[u8], sizes: &[usize]) -> Result<ArchiveSummary, ArchiveScanError> {
        let mut scanner = ArchiveScanner::new();
        let mut rest = bytes;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            scanner.feed(chunk)?;
            rest = tail;
        }
        assert_eq!(scanner.bytes_seen(), bytes.len() as u64);
        scanner.finish()
    }

    fn expected() -> serde_json::Value {
        serde_json::from_str(SAMPLE_COUNTS).unwrap()
    }

    fn sorted(mut tables: Vec<TableRows>) -> Vec<TableRows> {
        tables.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
        tables
    }

    #[test]
    fn sample_row_counts_match_count_star() {
        let summary = scan(SAMPLE).unwrap();
        let want: Vec<TableRows> = expected()["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| TableRows {
                schema: t["schema"].as_str().unwrap().to_string(),
                table: t["table"].as_str().unwrap().to_string(),
                rows: t["count"].as_u64().unwrap(),
            })
            .collect();
        assert!(want.len() >= 8, "fixture lists too few tables");
        assert_eq!(sorted(summary.tables), sorted(want));
        assert_eq!(
            summary.large_objects,
            expected()["large_objects"].as_u64().unwrap()
        );
    }

    #[test]
    fn objects_are_listed_only_when_asked_for_and_named_as_pg_dump_named_them() {
        assert!(scan(SAMPLE).unwrap().objects.is_empty());
        let mut scanner = ArchiveScanner::new().collecting_objects();
        for chunk in SAMPLE.chunks(7) {
            scanner.feed(chunk).unwrap();
        }
        let summary = scanner.finish().unwrap();
        let objects: Vec<(&str, &str, &str)> = summary
            .objects
            .iter()
            .map(|o| (o.kind.as_str(), o.schema.as_str(), o.name.as_str()))
            .collect();
        // As `pg_restore --list` prints them (where names with spaces are ambiguous).
        let want = [
            ("TABLE", "Mixed Schema", "tricky_text"),
            ("TABLE", "app", "MixedCase"),
            ("TABLE", "app", "empty_table"),
            ("TABLE", "app", "no_columns"),
            ("SEQUENCE", "app", "ticket_seq"),
            ("TABLE", "public", "numbers"),
            ("TABLE", "sales", "events"),
            ("MATERIALIZED VIEW", "sales", "event_totals"),
            ("TABLE", "sales", "events_2023"),
            ("TABLE", "sales", "events_2024"),
            ("TABLE", "sales", "odd \"name\"; it's"),
            ("CONSTRAINT", "app", "MixedCase MixedCase_pkey"),
        ];
        let mut got = objects.clone();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want);
        // Counting is unaffected.
        assert_eq!(summary.tables, scan(SAMPLE).unwrap().tables);
    }

    #[test]
    fn sample_header_fields() {
        let summary = scan(SAMPLE).unwrap();
        let want = expected();
        assert_eq!(summary.archive_version, "1.14.0");
        assert_eq!(summary.database, want["database"].as_str().unwrap());
        assert_eq!(
            summary.server_version,
            want["server_version"].as_str().unwrap()
        );
        assert_eq!(summary.dump_version, want["dump_version"].as_str().unwrap());
        assert!(summary.server_version.starts_with("15."));
    }

    #[test]
    fn sample_tables_come_in_toc_order() {
        let names: Vec<String> = scan(SAMPLE)
            .unwrap()
            .tables
            .into_iter()
            .map(|t| format!("{}.{}", t.schema, t.table))
            .collect();
        // pg_dump orders TABLE DATA entries by schema, then name.
        assert_eq!(names.first().unwrap(), "Mixed Schema.tricky_text");
        assert_eq!(names.last().unwrap(), "sales.odd \"name\"; it's");
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        assert_eq!(scan_in_chunks(SAMPLE, &[1]).unwrap(), scan(SAMPLE).unwrap());
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_summary(
            sizes in proptest::collection::vec(1usize..5000, 1..40)
        ) {
            let whole = scan(SAMPLE).unwrap();
            prop_assert_eq!(scan_in_chunks(SAMPLE, &sizes).unwrap(), whole);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        // Feed byte by byte, finishing a clone at every prefix length.
        let mut scanner = ArchiveScanner::new();
        for (len, byte) in SAMPLE.iter().enumerate() {
            assert!(
                scanner.clone().finish().is_err(),
                "a {len}-byte prefix gave a summary"
            );
            scanner.feed(std::slice::from_ref(byte)).unwrap();
        }
        assert!(scanner.finish().is_ok());
    }

    #[test]
    fn truncation_errors_say_what_was_cut() {
        for len in (0..SAMPLE.len()).step_by(97) {
            let mut scanner = ArchiveScanner::new();
            scanner.feed(&SAMPLE[..len]).unwrap();
            match scanner.finish() {
                Err(ArchiveScanError::Truncated { offset, .. }) => {
                    assert_eq!(offset, len as u64)
                }
                Err(ArchiveScanError::MissingData { .. }) => {}
                other => panic!("prefix of {len} bytes: {other:?}"),
            }
        }
        let err = scan(&SAMPLE[..SAMPLE.len() - 10]).unwrap_err();
        assert!(err.to_string().contains("large objects"), "{err}");
        let err = scan(&[]).unwrap_err();
        assert!(
            matches!(err, ArchiveScanError::Truncated { offset: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_not_an_archive() {
        let inputs: [&[u8]; 4] = [
            b"--\n-- PostgreSQL database dump\n--\n",
            &[0x1f, 0x8b, 0x08, 0, 0, 0],
            b"PGDMX\x01\x0e\x00",
            &[0u8; 64],
        ];
        for input in inputs {
            let mut scanner = ArchiveScanner::new();
            assert_eq!(scanner.feed(input), Err(ArchiveScanError::NotAnArchive));
        }
        // Rejected on the first wrong byte, without waiting for more.
        let mut scanner = ArchiveScanner::new();
        assert_eq!(scanner.feed(b"X"), Err(ArchiveScanError::NotAnArchive));
    }

    #[test]
    fn errors_are_sticky() {
        let mut scanner = ArchiveScanner::new();
        assert!(scanner.feed(b"nope").is_err());
        assert_eq!(scanner.feed(SAMPLE), Err(ArchiveScanError::NotAnArchive));
        assert_eq!(scanner.finish(), Err(ArchiveScanError::NotAnArchive));
    }

    #[test]
    fn header_claiming_compression_is_refused() {
        // Archive 1.14: the compression level int starts at byte 11 (sign byte, then LE).
        let mut bytes = SAMPLE.to_vec();
        assert_eq!(&bytes[5..8], &[1, 14, 0]);
        bytes[12] = 6;
        let err = scan(&bytes).unwrap_err();
        assert_eq!(
            err,
            ArchiveScanError::Compressed {
                algorithm: "gzip level 6".into()
            }
        );
        assert!(err.to_string().contains("-Z0"));
        bytes[11] = 1;
        bytes[12] = 1; // -1: Z_DEFAULT_COMPRESSION
        assert!(matches!(
            scan(&bytes),
            Err(ArchiveScanError::Compressed { .. })
        ));

        let archive = Synth::new(15).compression(3).toc(&[]).bytes;
        assert_eq!(
            scan(&archive),
            Err(ArchiveScanError::Compressed {
                algorithm: "zstd".into()
            })
        );
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut bytes = SAMPLE.to_vec();
        bytes[6] = 17;
        let err = scan(&bytes).unwrap_err();
        assert!(matches!(err, ArchiveScanError::UnsupportedVersion { .. }));
        assert!(err.to_string().contains("upgrade pgkeep"), "{err}");
        bytes[5] = 2;
        bytes[6] = 0;
        assert!(matches!(
            scan(&bytes),
            Err(ArchiveScanError::UnsupportedVersion { .. })
        ));
        bytes[5] = 1;
        bytes[6] = 11;
        let err = scan(&bytes).unwrap_err();
        assert!(err.to_string().contains("older"), "{err}");
    }

    #[test]
    fn other_archive_formats_are_refused() {
        let mut bytes = SAMPLE.to_vec();
        bytes[10] = 3; // archTar: what a directory dump's toc.dat says
        assert_eq!(
            scan(&bytes),
            Err(ArchiveScanError::WrongFormat { found: 3 })
        );
    }

    #[test]
    fn corrupted_block_header_is_malformed() {
        let toc_end = data_start(SAMPLE);
        let mut bytes = SAMPLE.to_vec();
        bytes[toc_end] = 7;
        assert!(matches!(
            scan(&bytes),
            Err(ArchiveScanError::Malformed { offset, .. }) if offset == toc_end as u64
        ));
        let mut bytes = SAMPLE.to_vec();
        bytes[toc_end + 2] ^= 0x55; // the block's dump ID
        assert!(matches!(
            scan(&bytes),
            Err(ArchiveScanError::Malformed { .. })
        ));
    }

    #[test]
    fn trailing_bytes_after_the_last_block_are_an_error() {
        let mut bytes = SAMPLE.to_vec();
        bytes.push(0x42);
        assert!(matches!(
            scan(&bytes),
            Err(ArchiveScanError::Malformed { .. })
        ));
        bytes.pop();
        bytes.push(BLK_DATA);
        assert!(matches!(
            scan(&bytes),
            Err(ArchiveScanError::Truncated { .. })
        ));
    }

    /// Offset of the first data block: the first block type byte after the TOC.
    fn data_start(bytes: &[u8]) -> usize {
        let mut scanner = ArchiveScanner::new();
        for (i, byte) in bytes.iter().enumerate() {
            if scanner.state == State::BlockType {
                return i;
            }
            scanner.feed(std::slice::from_ref(byte)).unwrap();
        }
        panic!("no data blocks");
    }

    // --- Synthetic archives, written the way WriteHead/WriteToc/_StartData do, per version.

    struct Synth {
        minor: u8,
        compression: u8,
        bytes: Vec<u8>,
    }

    struct Entry<'a> {
        id: i64,
        desc: &'a str,
        schema: Option<&'a str>,
        tag: &'a str,
        copy: Option<&'a str>,
        has_data: bool,
        /// tableam (1.14 on): `heap` for ordinary tables, NULL for partitioned ones.
        table_am: Option<&'a str>,
        /// relkind (1.16 on).
        relkind: u8,
    }

    fn table<'a>(id: i64, schema: &'a str, tag: &'a str) -> Entry<'a> {
        Entry {
            id,
            desc: "TABLE DATA",
            schema: Some(schema),
            tag,
            copy: Some("COPY x FROM stdin;\n"),
            has_data: true,
            table_am: Some("heap"),
            relkind: b'r',
        }
    }

    /// A TABLE entry (a definition, no data) of relkind `r` or `p`, as pg_dump writes it.
    fn table_def<'a>(id: i64, schema: &'a str, tag: &'a str, relkind: u8) -> Entry<'a> {
        Entry {
            id,
            desc: "TABLE",
            schema: Some(schema),
            tag,
            copy: None,
            has_data: false,
            table_am: (relkind == b'r').then_some("heap"),
            relkind,
        }
    }

    fn schema_only(id: i64, desc: &str) -> Entry<'_> {
        Entry {
            id,
            desc,
            schema: Some("public"),
            tag: "thing",
            copy: None,
            has_data: false,
            table_am: None,
            relkind: 0,
        }
    }

    fn blobs(id: i64) -> Entry<'static> {
        Entry {
            id,
            desc: "BLOBS",
            schema: None,
            tag: "BLOBS",
            copy: None,
            has_data: true,
            table_am: None,
            relkind: 0,
        }
    }

    impl Synth {
        fn new(minor: u8) -> Self {
            Self {
                minor,
                compression: 0,
                bytes: Vec::new(),
            }
        }

        fn compression(mut self, code: u8) -> Self {
            self.compression = code;
            self
        }

        fn int(&mut self, v: i64) {
            self.bytes.push(u8::from(v < 0));
            self.bytes
                .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }

        fn str(&mut self, s: Option<&str>) {
            match s {
                None => self.int(-1),
                Some(s) => {
                    self.int(s.len() as i64);
                    self.bytes.extend_from_slice(s.as_bytes());
                }
            }
        }

        fn toc(mut self, entries: &[Entry]) -> Self {
            self.bytes.extend_from_slice(b"PGDMP");
            self.bytes
                .extend_from_slice(&[1, self.minor, 0, 4, 8, FORMAT_CUSTOM]);
            if self.minor >= 15 {
                self.bytes.push(self.compression);
            } else {
                self.int(i64::from(self.compression));
            }
            for v in [1, 2, 3, 4, 5, 124, 0] {
                self.int(v);
            }
            self.str(Some("synthdb"));
            self.str(Some("17.2"));
            self.str(Some("17.2 (synthetic)"));
            self.int(entries.len() as i64);
            for e in entries {
                self.int(e.id);
                self.int(i64::from(e.has_data));
                self.str(Some("1259"));
                self.str(Some("16384"));
                self.str(Some(e.tag));
                self.str(Some(e.desc));
                self.int(if e.has_data { 3 } else { 2 }); // section
                self.str(Some("CREATE something;\n"));
                self.str(Some("DROP something;\n"));
                self.str(e.copy);
                self.str(e.schema);
                self.str(Some(""));
                if self.minor >= 14 {
                    self.str(e.table_am);
                }
                if self.minor >= 16 {
                    self.int(i64::from(e.relkind));
                }
                self.str(Some("postgres"));
                self.str(Some("false"));
                self.str(Some("12"));
                self.str(Some("13"));
                self.str(None);
                // Written to a pipe, data offsets stay unset; written to a file, pg_dump
                // rewrites the TOC with them set (2). Both mean "has data".
                let flag = match (e.has_data, e.desc) {
                    (false, _) => K_OFFSET_NO_DATA,
                    (true, "BLOBS") => 2,
                    (true, _) => K_OFFSET_POS_NOT_SET,
                };
                self.bytes.push(flag);
                self.bytes.extend_from_slice(&[0; 8]);
            }
            self
        }

        fn data(mut self, id: i64, chunks: &[&[u8]]) -> Self {
            self.bytes.push(BLK_DATA);
            self.int(id);
            for chunk in chunks {
                self.int(chunk.len() as i64);
                self.bytes.extend_from_slice(chunk);
            }
            self.int(0);
            self
        }

        fn blobs(mut self, id: i64, objects: &[(i64, &[&[u8]])]) -> Self {
            self.bytes.push(BLK_BLOBS);
            self.int(id);
            for (oid, chunks) in objects {
                self.int(*oid);
                for chunk in *chunks {
                    self.int(chunk.len() as i64);
                    self.bytes.extend_from_slice(chunk);
                }
                self.int(0);
            }
            self.int(0);
            self
        }
    }

    const END: &[u8] = b"\\.\n\n\n";

    fn synth_archive(minor: u8) -> Vec<u8> {
        let entries = [
            schema_only(1, "SCHEMA"),
            table(10, "public", "a"),
            schema_only(2, "FUNCTION"),
            table(11, "s p", "B \"q\";'"),
            table(12, "public", "empty"),
            blobs(20),
            blobs(21),
        ];
        Synth::new(minor)
            .toc(&entries)
            .data(10, &[b"1\tx\n", b"2\ty\\nz\n", b"3\t\\\\.\n", END])
            .data(11, &[b"\n\n", b"\n", b"\n", END])
            .data(12, &[END])
            .blobs(20, &[(16400, &[b"a\nb\n", b"\n"]), (-5, &[])])
            .blobs(21, &[(16402, &[b"\\.\n\n\n"])])
            .bytes
    }

    #[test]
    fn every_supported_version_parses() {
        for minor in MIN_MINOR..=MAX_MINOR {
            let summary = scan(&synth_archive(minor)).unwrap_or_else(|e| panic!("1.{minor}: {e}"));
            assert_eq!(summary.archive_version, format!("1.{minor}.0"));
            assert_eq!(summary.database, "synthdb");
            assert_eq!(summary.server_version, "17.2");
            assert_eq!(summary.dump_version, "17.2 (synthetic)");
            assert_eq!(
                summary.tables,
                vec![
                    TableRows {
                        schema: "public".into(),
                        table: "a".into(),
                        rows: 3
                    },
                    TableRows {
                        schema: "s p".into(),
                        table: "B \"q\";'".into(),
                        rows: 4
                    },
                    TableRows {
                        schema: "public".into(),
                        table: "empty".into(),
                        rows: 0
                    },
                ],
                "1.{minor}"
            );
            assert_eq!(summary.large_objects, 3, "1.{minor}");
        }
    }

    #[test]
    fn tables_defined_without_data_are_listed_but_partitioned_ones_are_not() {
        for minor in MIN_MINOR..=MAX_MINOR {
            let entries = [
                table_def(1, "public", "a", b'r'),
                table_def(2, "public", "sessions", b'r'),
                table_def(3, "public", "events", b'p'),
                table_def(4, "s p", "Big \"One\"", b'r'),
                table(10, "public", "a"),
            ];
            let archive = Synth::new(minor)
                .toc(&entries)
                .data(10, &[b"1\n", END])
                .bytes;
            let summary = scan(&archive).unwrap_or_else(|e| panic!("1.{minor}: {e}"));
            let names: Vec<String> = summary
                .schema_only_tables
                .iter()
                .map(|t| format!("{}.{}", t.schema, t.table))
                .collect();
            // Before 1.14 the archive cannot tell a partitioned table from an ordinary one.
            let expected: &[&str] = if minor >= 14 {
                &["public.sessions", "s p.Big \"One\""]
            } else {
                &["public.sessions", "public.events", "s p.Big \"One\""]
            };
            assert_eq!(names, expected, "1.{minor}");
            assert_eq!(summary.tables.len(), 1);
        }
    }

    #[test]
    fn a_real_archive_with_a_partitioned_table_has_no_schema_only_tables() {
        // The pg_dump 15 fixture defines sales.events PARTITION BY RANGE, which has no data of
        // its own: it is not a table whose data was left out.
        let summary = scan(SAMPLE).unwrap();
        assert!(
            summary.schema_only_tables.is_empty(),
            "{:?}",
            summary.schema_only_tables
        );
    }

    #[test]
    fn version_dependent_fields_are_read_by_version() {
        // An archive laid out for one version but labelled as a neighbour must not parse where
        // the layouts differ: the compression field (1.15) and relkind (1.16). tableam (1.14)
        // is a string just before the dependency strings, which absorb one string more or
        // less, so a 1.13/1.14 mix-up is harmless and indistinguishable.
        for (written, claimed) in [(14, 15), (15, 14), (13, 15), (15, 16), (16, 15), (14, 16)] {
            let mut bytes = synth_archive(written);
            bytes[6] = claimed;
            assert!(scan(&bytes).is_err(), "1.{written} read as 1.{claimed}");
        }
    }

    #[test]
    fn insert_style_table_data_is_refused() {
        let mut entry = table(10, "public", "t");
        entry.copy = None;
        let archive = Synth::new(14).toc(&[entry]).bytes;
        assert_eq!(
            scan(&archive),
            Err(ArchiveScanError::NotCopyData {
                schema: "public".into(),
                table: "t".into()
            })
        );
    }

    #[test]
    fn missing_table_data_is_an_error() {
        let archive = Synth::new(16)
            .toc(&[table(10, "public", "a"), table(11, "public", "b")])
            .data(10, &[b"1\n", END])
            .bytes;
        let err = scan(&archive).unwrap_err();
        assert_eq!(
            err,
            ArchiveScanError::MissingData {
                dump_id: 11,
                what: "table \"public\".\"b\"".into()
            }
        );
    }

    #[test]
    fn unexpected_or_repeated_blocks_are_malformed() {
        let base = || Synth::new(14).toc(&[table(10, "public", "a"), blobs(20)]);
        let unknown = base().data(99, &[END]).bytes;
        assert!(matches!(
            scan(&unknown),
            Err(ArchiveScanError::Malformed { .. })
        ));
        let twice = base().data(10, &[END]).data(10, &[END]).bytes;
        assert!(matches!(
            scan(&twice),
            Err(ArchiveScanError::Malformed { .. })
        ));
        let wrong_type = base().blobs(10, &[]).bytes;
        assert!(matches!(
            scan(&wrong_type),
            Err(ArchiveScanError::Malformed { .. })
        ));
    }

    #[test]
    fn blocks_may_come_in_any_order_but_tables_keep_toc_order() {
        let archive = Synth::new(14)
            .toc(&[table(10, "public", "a"), table(11, "public", "b")])
            .data(11, &[b"1\n2\n", END])
            .data(10, &[b"1\n", END])
            .bytes;
        let tables = scan(&archive).unwrap().tables;
        assert_eq!((tables[0].table.as_str(), tables[0].rows), ("a", 1));
        assert_eq!((tables[1].table.as_str(), tables[1].rows), ("b", 2));
    }

    fn rows_of(chunks: &[&[u8]]) -> u64 {
        let mut counter = RowCounter::default();
        for chunk in chunks {
            counter.add(chunk);
        }
        counter.rows()
    }

    #[test]
    fn end_marker_is_not_a_row() {
        assert_eq!(rows_of(&[]), 0);
        assert_eq!(rows_of(&[END]), 0);
        assert_eq!(rows_of(&[b"\\.\n"]), 0);
        assert_eq!(rows_of(&[b"a\n", END]), 1);
        assert_eq!(rows_of(&[b"a\n\\", b".", b"\n", b"\n\n"]), 1);
        // Without a marker (should a pg_dump stop writing it) every newline is a row.
        assert_eq!(rows_of(&[b"a\nb\n"]), 2);
        // Zero-column tables: each row is an empty line.
        assert_eq!(rows_of(&[b"\n", b"\n", b"\n"]), 3);
        assert_eq!(rows_of(&[&[b'\n'; 40], END]), 40);
        // A value `\.` is written `\\.`: a row, not the marker.
        assert_eq!(rows_of(&[b"\\\\.\n"]), 1);
        assert_eq!(rows_of(&[b"1\t\\\\.\n", b"2\tx\\.\n"]), 2);
        // The marker spread over many tiny chunks after a long row.
        let long = [b'x'; 100];
        assert_eq!(
            rows_of(&[&long, b"\n", b"\\", b".", b"\n", b"\n", b"\n"]),
            1
        );
    }

    #[test]
    fn bytes_seen_counts_everything_fed() {
        let mut scanner = ArchiveScanner::new();
        assert_eq!(scanner.bytes_seen(), 0);
        scanner.feed(&SAMPLE[..100]).unwrap();
        scanner.feed(&[]).unwrap();
        scanner.feed(&SAMPLE[100..]).unwrap();
        assert_eq!(scanner.bytes_seen(), SAMPLE.len() as u64);
        assert_eq!(ArchiveScanner::default().bytes_seen(), 0);
    }

    #[test]
    fn large_data_is_not_buffered() {
        // 64 MiB of rows in 1 MiB chunks: the scanner's size does not grow with the data.
        let row = b"12345\tsome text\t2024-01-01\n";
        let chunk: Vec<u8> = row
            .iter()
            .copied()
            .cycle()
            .take(row.len() * 40_000)
            .collect();
        let mut archive = Synth::new(14).toc(&[table(10, "public", "big")]).bytes;
        archive.push(BLK_DATA);
        let mut int = Synth::new(14);
        int.int(10);
        int.int(chunk.len() as i64);
        archive.extend_from_slice(&int.bytes);
        let mut scanner = ArchiveScanner::new();
        scanner.feed(&archive).unwrap();
        let mut header = Synth::new(14);
        header.int(chunk.len() as i64);
        for i in 0..64 {
            scanner.feed(&chunk).unwrap();
            if i < 63 {
                scanner.feed(&header.bytes).unwrap();
            }
            assert!(scanner.str_buf.capacity() < 4096);
        }
        let mut end = Synth::new(14);
        end.int(END.len() as i64);
        end.bytes.extend_from_slice(END);
        end.int(0);
        scanner.feed(&end.bytes).unwrap();
        let summary = scanner.finish().unwrap();
        assert_eq!(summary.tables[0].rows, 40_000 * 64);
    }
}
