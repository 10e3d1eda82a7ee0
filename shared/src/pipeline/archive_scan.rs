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
//!
//! This file holds the scanner's state machine and the format's primitives (ints, strings);
//! `archive_scan/toc.rs` reads TOC entries, `archive_scan/data.rs` the data blocks and their rows.

use std::collections::{HashMap, HashSet};

use crate::model::TableName;
use data::Block;
use toc::{DataEntry, EntryBuilder, EntryKind};

mod data;
mod toc;

use super::archive_format::{
    decode_int, toc_fields, TocField, BLK_BLOBS, BLK_DATA, FORMAT_CUSTOM, MAGIC, MAX_MINOR,
};

/// Oldest archive version the scanner follows (1.12).
const MIN_MINOR: u8 = 12;
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
    /// Every TOC entry, when collecting objects.
    toc: Vec<TocEntry>,
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
    /// Every TOC entry with its dependencies, in TOC order (a restore plans its steps with
    /// them); empty unless the scanner was collecting objects.
    pub toc: Vec<TocEntry>,
}

/// One TOC entry as pg_restore orders it: what it is, its section and what it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// The entry's dump ID (what a `pg_restore --use-list` line names).
    pub dump_id: i64,
    /// Its kind ("desc"), e.g. `TABLE`, `INDEX`, `FK CONSTRAINT`.
    pub kind: String,
    /// pg_dump's section: 1 none, 2 pre-data, 3 data, 4 post-data.
    pub section: i64,
    /// Schema (namespace) name, unquoted; empty when the entry has none.
    pub schema: String,
    /// The TOC tag (a table's name for TABLE and TABLE DATA).
    pub name: String,
    /// Dump IDs of the entries it depends on.
    pub deps: Vec<i64>,
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
            toc: Vec::new(),
        }
    }

    /// Also lists the TOC's schema objects ([`ArchiveSummary::objects`]), so a restore can be
    /// compared with what the archive declares, and keeps every entry with its dependencies
    /// ([`ArchiveSummary::toc`]). Costs memory in proportion to the TOC only.
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
            toc: self.toc,
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
        decode_int(&b[..n])
            .map(Some)
            .map_err(|e| self.malformed(e.to_string()))
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
mod tests;
