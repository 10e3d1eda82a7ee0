//! The data blocks after the TOC: each is matched to its TOC entry, and a table's COPY text is
//! counted row by row as it streams past.

use super::toc::EntryKind;
use super::{ArchiveScanError, ArchiveScanner, State, TAIL};
use crate::pipeline::archive_format::BLK_BLOBS;

#[derive(Debug, Clone)]
pub(super) struct Block {
    /// Index of its entry in [`ArchiveScanner`]'s data entries.
    pub(super) entry: usize,
    large_objects: bool,
    /// Present for table data, whose rows are counted.
    pub(super) rows: Option<RowCounter>,
}

/// Counts newlines in a table's data and remembers its last bytes.
#[derive(Debug, Clone, Default)]
pub(super) struct RowCounter {
    newlines: u64,
    total: u64,
    tail: [u8; TAIL],
    tail_len: usize,
}

impl RowCounter {
    #[inline]
    pub(super) fn add(&mut self, chunk: &[u8]) {
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
    pub(super) fn rows(&self) -> u64 {
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

impl ArchiveScanner {
    pub(super) fn start_block(&mut self, block_type: u8, id: i64) -> Result<(), ArchiveScanError> {
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
    pub(super) fn end_chunks(&mut self) {
        match &self.block {
            Some(block) if block.large_objects => self.state = State::LargeObjectOid,
            _ => self.end_block(),
        }
    }

    pub(super) fn end_block(&mut self) {
        if let Some(block) = self.block.take() {
            let entry = &mut self.entries[block.entry];
            entry.rows = block.rows.map_or(0, |counter| counter.rows());
            entry.done = true;
        }
        self.state = State::BlockType;
    }
}
