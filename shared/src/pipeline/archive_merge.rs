//! One custom-format archive from a parallel backup's parts (`pgkeep cat` of `backup --jobs N`).
//!
//! A parallel backup is a schema archive (`pg_dump --section=pre-data --section=post-data`)
//! and N data archives (`pg_dump --section=data`, each a subset of the tables), all from one
//! snapshot. Stock pg_restore reads one archive, so the parts are merged:
//!
//! * the schema archive's header, verbatim;
//! * a TOC of the schema archive's entries up to its first post-data entry, then every data
//!   part's data-section entries (TABLE DATA, SEQUENCE SET, BLOBS, ...) renumbered to fresh dump
//!   ids above every id of the schema archive, then the rest of the schema archive's entries.
//!   The entries each part repeats (ENCODING, STDSTRINGS, SEARCHPATH) appear once;
//! * the data blocks, copied from the parts one after another in that TOC order, their block
//!   headers' dump ids rewritten. Blocks are streamed chunk by chunk, never held whole.
//!
//! Exact or refused: pg_restore ties a TABLE DATA entry to its table through the entry's first
//! dependency (`buildTocEntryArrays`), and post-data entries wait for the data of the tables
//! they depend on through that tie (`repoint_table_dependencies`). The dependencies of a data
//! part name dump ids of its own catalog scan; they are only kept if each names, in the schema
//! archive, the object with the same identity (TABLE DATA `s t` → TABLE `s t` with the same
//! OID, SEQUENCE SET → SEQUENCE, BLOBS → large-object metadata). Anything else is refused with
//! the entry named, before a byte is written.
//!
//! On a pipe every data offset is "not set", as pg_dump writes it there: pg_restore then reads
//! the blocks sequentially, which works because they come in TOC order. Into a file the TOC is
//! rewritten afterwards with each block's real offset ([`Merger::rewrite_toc`]), in place (the
//! offsets have the header's fixed width), so `pg_restore -j` can seek.

use std::collections::{HashMap, HashSet};
use std::io;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncSeek, AsyncSeekExt, AsyncWrite, AsyncWriteExt,
};

use super::archive_format::{
    decode_int, decode_le, encode_int, encode_le, toc_fields, TocField, BLK_BLOBS, BLK_DATA,
    FORMAT_CUSTOM, K_OFFSET_NO_DATA, K_OFFSET_POS_NOT_SET, K_OFFSET_POS_SET, MAGIC, MAX_MINOR,
    SECTION_DATA, SECTION_POST_DATA,
};

/// Oldest archive version merged: 1.14, what pg_dump 13 (the oldest pgkeep backs up with)
/// writes; the parts of a parallel backup are never older.
const MIN_MINOR: u8 = 14;
/// Longest TOC string accepted (definitions of huge functions or views are far shorter).
const MAX_STRING: i64 = 1 << 30;

/// Why the parts could not be merged into one archive; nothing more is written after it.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A part is not a custom-format archive this merge follows.
    #[error("{part}: {what}")]
    Unreadable {
        /// Which part ("the schema part", "data part 2").
        part: String,
        /// What is wrong.
        what: String,
    },
    /// The parts do not fit together exactly; merging them could restore wrongly.
    #[error("the parts of this parallel backup cannot be merged exactly: {0}; restore it with `pgkeep restore` instead")]
    Mismatch(String),
    /// Reading a part failed (the stream's own error: integrity, storage).
    #[error("reading {part}: {source}")]
    Read {
        /// Which part.
        part: String,
        /// The stream's error.
        #[source]
        source: io::Error,
    },
    /// Writing the merged archive failed.
    #[error("writing the merged archive: {0}")]
    Write(#[source] io::Error),
}

/// A part's header and table of contents, as read from its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toc {
    /// The header's bytes, verbatim.
    pub head: Vec<u8>,
    /// Archive minor version (1.`minor`).
    pub minor: u8,
    /// Bytes of an int's magnitude.
    pub int_size: usize,
    /// Bytes of a data offset.
    pub off_size: usize,
    /// What must agree between parts: compression, database, server and pg_dump versions.
    pub identity: Vec<Vec<u8>>,
    /// The entries, in archive order.
    pub entries: Vec<Entry>,
}

/// One TOC entry, every field kept so it can be written back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// Dump id.
    pub dump_id: i64,
    /// Whether it had a data dumper.
    pub had_dumper: i64,
    /// Catalog table OID and object OID, as strings.
    pub table_oid: Option<Vec<u8>>,
    /// The object's OID.
    pub oid: Option<Vec<u8>>,
    /// The object's name.
    pub tag: Option<Vec<u8>>,
    /// The kind, e.g. `TABLE DATA`.
    pub desc: Option<Vec<u8>>,
    /// `teSection`.
    pub section: i64,
    /// The remaining string fields in archive order: defn, dropStmt, copyStmt, namespace,
    /// tablespace, tableam (1.14+), owner, "with oids".
    pub strings: Vec<Option<Vec<u8>>>,
    /// relkind (1.16).
    pub relkind: i64,
    /// Dependencies: dump ids as decimal strings.
    pub deps: Vec<Vec<u8>>,
    /// Data offset flag (`K_OFFSET_*`) and offset.
    pub offset: (u8, u64),
}

/// Index of the namespace in [`Entry::strings`].
const NAMESPACE: usize = 3;
/// Index of defn in [`Entry::strings`].
const DEFN: usize = 0;

impl Entry {
    fn text(v: &Option<Vec<u8>>) -> String {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
    fn desc(&self) -> String {
        Self::text(&self.desc)
    }
    fn namespace(&self) -> Option<&[u8]> {
        self.strings.get(NAMESPACE).and_then(|s| s.as_deref())
    }
    fn has_data(&self) -> bool {
        self.offset.0 != K_OFFSET_NO_DATA
    }
    /// `TABLE DATA "public"."t"` (for messages).
    fn describe(&self) -> String {
        let ns = self.namespace().map(String::from_utf8_lossy);
        match ns {
            Some(ns) if !ns.is_empty() => format!(
                "{} \"{}\".\"{}\" (dump id {})",
                self.desc(),
                ns,
                Self::text(&self.tag),
                self.dump_id
            ),
            _ => format!(
                "{} \"{}\" (dump id {})",
                self.desc(),
                Self::text(&self.tag),
                self.dump_id
            ),
        }
    }
    fn same_name(&self, other: &Entry) -> bool {
        self.tag == other.tag && self.namespace() == other.namespace()
    }
    fn deps(&self) -> Result<Vec<i64>, String> {
        self.deps
            .iter()
            .map(|d| {
                std::str::from_utf8(d)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        format!(
                            "{} has a dependency {:?} that is not a dump id",
                            self.describe(),
                            String::from_utf8_lossy(d)
                        )
                    })
            })
            .collect()
    }
}

/// Reads archive items from a buffered stream, counting (and optionally recording) bytes.
struct In<'a, R> {
    r: &'a mut R,
    part: &'a str,
    int_size: usize,
    record: Option<Vec<u8>>,
}

impl<R: AsyncBufRead + Unpin> In<'_, R> {
    fn bad(&self, what: impl Into<String>) -> MergeError {
        MergeError::Unreadable {
            part: self.part.to_owned(),
            what: what.into(),
        }
    }

    fn read_err(&self, e: io::Error) -> MergeError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return self.bad("it ends in the middle of its header or table of contents");
        }
        MergeError::Read {
            part: self.part.to_owned(),
            source: e,
        }
    }

    async fn bytes(&mut self, n: usize) -> Result<Vec<u8>, MergeError> {
        let mut buf = vec![0; n];
        self.r
            .read_exact(&mut buf)
            .await
            .map_err(|e| self.read_err(e))?;
        if let Some(rec) = &mut self.record {
            rec.extend_from_slice(&buf);
        }
        Ok(buf)
    }

    async fn byte(&mut self) -> Result<u8, MergeError> {
        Ok(self.bytes(1).await?[0])
    }

    async fn int(&mut self) -> Result<i64, MergeError> {
        let b = self.bytes(1 + self.int_size).await?;
        decode_int(&b).map_err(|e| self.bad(e.to_string()))
    }

    async fn string(&mut self) -> Result<Option<Vec<u8>>, MergeError> {
        let len = self.int().await?;
        if len == -1 {
            return Ok(None);
        }
        if !(0..=MAX_STRING).contains(&len) {
            return Err(self.bad(format!("invalid string length {len}")));
        }
        Ok(Some(self.bytes(len as usize).await?))
    }
}

/// Writes archive items, counting the bytes written.
struct Out<'a, W> {
    w: &'a mut W,
    int_size: usize,
    off_size: usize,
    pos: u64,
}

impl<W: AsyncWrite + Unpin> Out<'_, W> {
    async fn bytes(&mut self, b: &[u8]) -> Result<(), MergeError> {
        self.w.write_all(b).await.map_err(MergeError::Write)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    async fn int(&mut self, v: i64) -> Result<(), MergeError> {
        self.bytes(&encode_int(v, self.int_size)).await
    }

    async fn string(&mut self, s: &Option<Vec<u8>>) -> Result<(), MergeError> {
        match s {
            None => self.int(-1).await,
            Some(s) => {
                self.int(s.len() as i64).await?;
                self.bytes(s).await
            }
        }
    }

    async fn entry(&mut self, minor: u8, e: &Entry) -> Result<(), MergeError> {
        let mut strings = e.strings.iter();
        for field in toc_fields(minor) {
            match field {
                TocField::DumpId => self.int(e.dump_id).await?,
                TocField::HadDumper => self.int(e.had_dumper).await?,
                TocField::TableOid => self.string(&e.table_oid).await?,
                TocField::Oid => self.string(&e.oid).await?,
                TocField::Tag => self.string(&e.tag).await?,
                TocField::Desc => self.string(&e.desc).await?,
                TocField::Section => self.int(e.section).await?,
                TocField::RelKind => self.int(e.relkind).await?,
                TocField::Deps => {
                    for d in &e.deps {
                        self.string(&Some(d.clone())).await?;
                    }
                    self.string(&None).await?;
                }
                TocField::Offset => {
                    self.bytes(&[e.offset.0]).await?;
                    self.bytes(&encode_le(e.offset.1, self.off_size)).await?;
                }
                _ => {
                    let s = strings.next().cloned().unwrap_or(None);
                    self.string(&s).await?;
                }
            }
        }
        Ok(())
    }
}

/// Reads a custom-format archive's header and TOC from `r`, leaving it at the first data
/// block. `part` names the part in errors.
pub async fn read_toc<R: AsyncBufRead + Unpin>(r: &mut R, part: &str) -> Result<Toc, MergeError> {
    let mut i = In {
        r,
        part,
        int_size: 4,
        record: Some(Vec::new()),
    };
    if i.bytes(5).await? != MAGIC {
        return Err(i.bad("it is not a pg_dump custom-format archive (no \"PGDMP\")"));
    }
    let (major, minor, _rev) = (i.byte().await?, i.byte().await?, i.byte().await?);
    if major != 1 || !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(i.bad(format!(
            "archive version {major}.{minor} is outside 1.{MIN_MINOR}-1.{MAX_MINOR} (pg_dump 13 to 18), which this merge follows"
        )));
    }
    let int_size = i.byte().await? as usize;
    let off_size = i.byte().await? as usize;
    if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) {
        return Err(i.bad(format!(
            "unusable integer/offset sizes {int_size}/{off_size}"
        )));
    }
    i.int_size = int_size;
    if i.byte().await? != FORMAT_CUSTOM {
        return Err(i.bad("it is not in the custom format"));
    }
    let compression = if minor >= 15 {
        vec![i.byte().await?]
    } else {
        i.int().await?.to_le_bytes().to_vec()
    };
    for _ in 0..7 {
        i.int().await?;
    }
    let database = i.string().await?.unwrap_or_default();
    let server = i.string().await?.unwrap_or_default();
    let dumper = i.string().await?.unwrap_or_default();
    let head = i.record.take().unwrap_or_default();

    let count = i.int().await?;
    if count < 0 {
        return Err(i.bad(format!("invalid TOC entry count {count}")));
    }
    let fields = toc_fields(minor);
    let mut entries = Vec::with_capacity((count as usize).min(1 << 16));
    for _ in 0..count {
        let mut e = Entry::default();
        for &field in &fields {
            match field {
                TocField::DumpId => e.dump_id = i.int().await?,
                TocField::HadDumper => e.had_dumper = i.int().await?,
                TocField::TableOid => e.table_oid = i.string().await?,
                TocField::Oid => e.oid = i.string().await?,
                TocField::Tag => e.tag = i.string().await?,
                TocField::Desc => e.desc = i.string().await?,
                TocField::Section => e.section = i.int().await?,
                TocField::RelKind => e.relkind = i.int().await?,
                TocField::Deps => {
                    while let Some(d) = i.string().await? {
                        e.deps.push(d);
                    }
                }
                TocField::Offset => {
                    let b = i.bytes(1 + off_size).await?;
                    if !(K_OFFSET_POS_NOT_SET..=K_OFFSET_NO_DATA).contains(&b[0]) {
                        return Err(i.bad(format!("unexpected data offset flag {}", b[0])));
                    }
                    e.offset = (b[0], decode_le(&b[1..]));
                }
                _ => e.strings.push(i.string().await?),
            }
        }
        if e.dump_id <= 0 {
            return Err(i.bad(format!("TOC entry id {} out of range", e.dump_id)));
        }
        entries.push(e);
    }
    Ok(Toc {
        head,
        minor,
        int_size,
        off_size,
        identity: vec![compression, database, server, dumper],
        entries,
    })
}

/// A data entry's identity: desc, namespace, tag.
type EntryKey = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Where a data block of the merged archive comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    /// Data part (index into the parts given to [`Merger::new`]).
    part: usize,
    /// Its dump id in that part.
    old_id: i64,
    /// Index of its entry in the merged TOC.
    entry: usize,
}

/// The merged TOC and the order its data blocks are copied in; see the module documentation.
#[derive(Debug)]
pub struct Merger {
    schema: Toc,
    parts: Vec<Toc>,
    entries: Vec<Entry>,
    blocks: Vec<Block>,
    /// Blocks copied so far.
    next: usize,
    /// Bytes written so far, and where the TOC starts.
    pos: u64,
    toc_at: u64,
}

impl Merger {
    /// Plans the merge of the schema part's TOC and the data parts' TOCs (in part order);
    /// refuses parts that do not fit together exactly.
    pub fn new(schema: Toc, parts: Vec<Toc>) -> Result<Merger, MergeError> {
        let mismatch = MergeError::Mismatch;
        let by_id: HashMap<i64, &Entry> = schema.entries.iter().map(|e| (e.dump_id, e)).collect();
        if by_id.len() != schema.entries.len() {
            return Err(mismatch("the schema part repeats a dump id".into()));
        }
        if let Some(e) = schema.entries.iter().find(|e| e.has_data()) {
            return Err(mismatch(format!(
                "the schema part holds data ({})",
                e.describe()
            )));
        }
        let max_id = schema.entries.iter().map(|e| e.dump_id).max().unwrap_or(0);
        let mut next_id = max_id + 1;
        let mut data: Vec<Entry> = Vec::new();
        let mut blocks: Vec<(usize, i64, usize)> = Vec::new();
        let mut seen: HashSet<EntryKey> = HashSet::new();
        for (p, part) in parts.iter().enumerate() {
            let name = format!("data part {}", p + 1);
            if (part.minor, part.int_size, part.off_size, &part.identity)
                != (
                    schema.minor,
                    schema.int_size,
                    schema.off_size,
                    &schema.identity,
                )
            {
                return Err(mismatch(format!(
                    "{name}'s archive header (version, sizes, compression, database or versions) differs from the schema part's"
                )));
            }
            let mut ids = HashSet::new();
            for e in &part.entries {
                if !ids.insert(e.dump_id) {
                    return Err(mismatch(format!("{name} repeats dump id {}", e.dump_id)));
                }
                if e.section != SECTION_DATA {
                    // ENCODING, STDSTRINGS, SEARCHPATH: every part has them; once is enough,
                    // and only if the schema part has the very same.
                    let same = schema.entries.iter().any(|s| {
                        s.desc == e.desc
                            && s.same_name(e)
                            && s.strings.get(DEFN) == e.strings.get(DEFN)
                    });
                    if !same || e.has_data() {
                        return Err(mismatch(format!(
                            "{name} has {} outside the data section, which the schema part does not have",
                            e.describe()
                        )));
                    }
                    continue;
                }
                check_dependencies(e, &by_id)
                    .map_err(|why| mismatch(format!("{name}'s {}: {why}", e.describe())))?;
                let key = (
                    e.desc.clone(),
                    e.strings.get(NAMESPACE).cloned().flatten(),
                    e.tag.clone(),
                );
                if !seen.insert(key) {
                    let twin = data.iter().find(|d| d.desc == e.desc && d.same_name(e));
                    let identical = twin.is_some_and(|d| {
                        !d.has_data() && !e.has_data() && d.strings == e.strings && d.deps == e.deps
                    });
                    if identical && e.desc.as_deref() != Some(b"BLOBS") {
                        continue;
                    }
                    return Err(mismatch(format!(
                        "{} is in more than one data part",
                        e.describe()
                    )));
                }
                let mut merged = e.clone();
                merged.dump_id = next_id;
                next_id += 1;
                if merged.has_data() {
                    merged.offset = (K_OFFSET_POS_NOT_SET, 0);
                    blocks.push((p, e.dump_id, data.len()));
                }
                data.push(merged);
            }
        }
        let split = schema
            .entries
            .iter()
            .position(|e| e.section == SECTION_POST_DATA)
            .unwrap_or(schema.entries.len());
        let mut entries = schema.entries[..split].to_vec();
        let base = entries.len();
        entries.extend(data);
        entries.extend_from_slice(&schema.entries[split..]);
        let blocks = blocks
            .into_iter()
            .map(|(part, old_id, i)| Block {
                part,
                old_id,
                entry: base + i,
            })
            .collect();
        Ok(Merger {
            schema,
            parts,
            entries,
            blocks,
            next: 0,
            pos: 0,
            toc_at: 0,
        })
    }

    /// The merged TOC's entries, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Writes the header and the merged TOC (offsets not set).
    pub async fn write_toc<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> Result<(), MergeError> {
        let mut out = self.out(w);
        out.bytes(&self.schema.head).await?;
        let toc_at = out.pos;
        out.int(self.entries.len() as i64).await?;
        for e in &self.entries {
            out.entry(self.schema.minor, e).await?;
        }
        let pos = out.pos;
        self.toc_at = toc_at;
        self.pos = pos;
        Ok(())
    }

    /// Copies data part `part`'s blocks from its stream `r` (positioned at its start), with
    /// their dump ids rewritten, and reads it to its end (so its checks run).
    pub async fn copy_part<R, W>(
        &mut self,
        part: usize,
        r: &mut R,
        w: &mut W,
    ) -> Result<(), MergeError>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let name = format!("data part {}", part + 1);
        let toc = read_toc(r, &name).await?;
        if Some(&toc) != self.parts.get(part) {
            return Err(MergeError::Mismatch(format!(
                "{name} read differently the second time"
            )));
        }
        let (int_size, off_size) = (self.schema.int_size, self.schema.off_size);
        let mut i = In {
            r,
            part: &name,
            int_size,
            record: None,
        };
        let mut out = Out {
            w,
            int_size,
            off_size,
            pos: self.pos,
        };
        loop {
            let at_end = match i.r.fill_buf().await {
                Ok(buf) => buf.is_empty(),
                Err(e) => return Err(i.read_err(e)),
            };
            if at_end {
                break;
            }
            let kind = i.byte().await?;
            let id = i.int().await?;
            let Some(block) = self.blocks.get(self.next).filter(|b| b.part == part) else {
                return Err(i.bad(format!(
                    "a data block (dump id {id}) that its TOC does not lead to expect here"
                )));
            };
            if block.old_id != id {
                return Err(i.bad(format!(
                    "data block for dump id {id} where dump id {} was next in its TOC",
                    block.old_id
                )));
            }
            let entry = block.entry;
            self.entries[entry].offset = (K_OFFSET_POS_SET, out.pos);
            out.bytes(&[kind]).await?;
            out.int(self.entries[entry].dump_id).await?;
            match kind {
                BLK_DATA => copy_chunks(&mut i, &mut out).await?,
                BLK_BLOBS => loop {
                    let oid = i.int().await?;
                    out.int(oid).await?;
                    if oid == 0 {
                        break;
                    }
                    copy_chunks(&mut i, &mut out).await?;
                },
                other => return Err(i.bad(format!("unknown data block type {other}"))),
            }
            self.next += 1;
        }
        if let Some(missing) = self.blocks.get(self.next).filter(|b| b.part == part) {
            return Err(i.bad(format!(
                "it ended without the data of {}",
                self.entries[missing.entry].describe()
            )));
        }
        self.pos = out.pos;
        Ok(())
    }

    /// After the last part: every block was copied.
    pub fn finish(&self) -> Result<(), MergeError> {
        match self.blocks.get(self.next) {
            None => Ok(()),
            Some(b) => Err(MergeError::Mismatch(format!(
                "the data of {} never came",
                self.entries[b.entry].describe()
            ))),
        }
    }

    /// Rewrites the TOC in place with each data block's real offset (a file, after
    /// [`Merger::finish`]), so pg_restore can seek (`-j`); leaves the position at the end.
    pub async fn rewrite_toc<W>(&self, w: &mut W) -> Result<(), MergeError>
    where
        W: AsyncWrite + AsyncSeek + Unpin,
    {
        w.flush().await.map_err(MergeError::Write)?;
        w.seek(io::SeekFrom::Start(self.toc_at))
            .await
            .map_err(MergeError::Write)?;
        let mut buf = Vec::new();
        let mut out = Out {
            w: &mut buf,
            int_size: self.schema.int_size,
            off_size: self.schema.off_size,
            pos: self.toc_at,
        };
        out.int(self.entries.len() as i64).await?;
        for e in &self.entries {
            out.entry(self.schema.minor, e).await?;
        }
        w.write_all(&buf).await.map_err(MergeError::Write)?;
        w.seek(io::SeekFrom::Start(self.pos))
            .await
            .map_err(MergeError::Write)?;
        w.flush().await.map_err(MergeError::Write)
    }

    fn out<'a, W>(&self, w: &'a mut W) -> Out<'a, W> {
        Out {
            w,
            int_size: self.schema.int_size,
            off_size: self.schema.off_size,
            pos: 0,
        }
    }
}

/// Copies one run of chunks (an int length, that many bytes; a zero length ends it).
async fn copy_chunks<R, W>(i: &mut In<'_, R>, out: &mut Out<'_, W>) -> Result<(), MergeError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let len = i.int().await?;
        if len < 0 {
            return Err(i.bad(format!("invalid data chunk length {len}")));
        }
        out.int(len).await?;
        let mut left = len as u64;
        while left > 0 {
            let buf = match i.r.fill_buf().await {
                Ok([]) => return Err(i.bad("it ends in the middle of a data block")),
                Ok(buf) => buf,
                Err(e) => return Err(i.read_err(e)),
            };
            let n = (buf.len() as u64).min(left) as usize;
            out.w
                .write_all(&buf[..n])
                .await
                .map_err(MergeError::Write)?;
            out.pos += n as u64;
            i.r.consume(n);
            left -= n as u64;
        }
        if len == 0 {
            return Ok(());
        }
    }
}

/// Whether data entry `e`'s dependencies name, in the schema part, the objects it belongs to.
fn check_dependencies(e: &Entry, schema: &HashMap<i64, &Entry>) -> Result<(), String> {
    let deps = e.deps()?;
    let mut owners = Vec::with_capacity(deps.len());
    for id in &deps {
        match schema.get(id) {
            Some(owner) => owners.push(*owner),
            None => {
                return Err(format!(
                    "it depends on dump id {id}, which the schema part does not have"
                ))
            }
        }
    }
    let desc = e.desc();
    let expect_first = |kinds: &[&str], same_oid: bool| -> Result<(), String> {
        let Some(owner) = owners.first() else {
            return Err("it names no object it belongs to (no dependency)".into());
        };
        let kind_ok = kinds.contains(&owner.desc().as_str());
        let oid_ok = !same_oid || e.oid.as_deref() == Some(b"0") || owner.oid == e.oid;
        if kind_ok && owner.same_name(e) && oid_ok {
            Ok(())
        } else {
            Err(format!(
                "its first dependency is {} in the schema part, not its {}",
                owner.describe(),
                kinds.join(" or ")
            ))
        }
    };
    match desc.as_str() {
        "TABLE DATA" => expect_first(&["TABLE"], true),
        "SEQUENCE SET" => expect_first(&["SEQUENCE"], false),
        "BLOBS" => match owners
            .iter()
            .find(|o| !matches!(o.desc().as_str(), "BLOB METADATA" | "BLOB"))
        {
            None => Ok(()),
            Some(o) => Err(format!(
                "it depends on {}, not on large objects",
                o.describe()
            )),
        },
        _ if owners.is_empty() => Ok(()),
        _ => {
            let owner = owners[0];
            if owner.same_name(e) {
                Ok(())
            } else {
                Err(format!(
                    "its first dependency is {} in the schema part, not the object of the same name",
                    owner.describe()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
