//! What pg_dump's custom archive format fixes (pg_backup.h, pg_backup_archiver.c,
//! pg_backup_custom.c), in one place for the two readers of it: the scanner that counts rows
//! as a backup streams past ([`super::archive_scan`]) and the merger that joins a parallel
//! backup's parts into one archive ([`super::archive_merge`]).

/// The first bytes of every archive.
pub(crate) const MAGIC: &[u8; 5] = b"PGDMP";
/// Newest archive version (1.16: pg_dump 17 and 18) either reader follows.
pub(crate) const MAX_MINOR: u8 = 16;
/// `archCustom`, the header's format byte.
pub(crate) const FORMAT_CUSTOM: u8 = 1;
/// Data block types: a table's COPY data, large objects.
pub(crate) const BLK_DATA: u8 = 1;
pub(crate) const BLK_BLOBS: u8 = 3;
/// A TOC entry's data offset state: data follows but where is unknown (written to a pipe),
/// data at a known offset, no data.
pub(crate) const K_OFFSET_POS_NOT_SET: u8 = 1;
pub(crate) const K_OFFSET_POS_SET: u8 = 2;
pub(crate) const K_OFFSET_NO_DATA: u8 = 3;
/// `teSection` values of TOC entries.
pub(crate) const SECTION_DATA: i64 = 3;
pub(crate) const SECTION_POST_DATA: i64 = 4;

/// TOC entry fields in archive order; which are present depends on the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TocField {
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
pub(crate) fn toc_fields(minor: u8) -> Vec<TocField> {
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

/// Why an archive integer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IntError {
    OutOfRange,
    Sign(u8),
}

impl std::fmt::Display for IntError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntError::OutOfRange => write!(f, "integer out of range"),
            IntError::Sign(s) => write!(f, "invalid integer sign byte {s}"),
        }
    }
}

/// ReadInt: a sign byte, then intSize (1 to 8) bytes of magnitude, little-endian.
#[inline]
pub(crate) fn decode_int(b: &[u8]) -> Result<i64, IntError> {
    let magnitude = decode_le(&b[1..]);
    let magnitude = i64::try_from(magnitude).map_err(|_| IntError::OutOfRange)?;
    match b[0] {
        0 => Ok(magnitude),
        1 => Ok(-magnitude),
        sign => Err(IntError::Sign(sign)),
    }
}

/// WriteInt for an archive whose intSize is `int_size`.
pub(crate) fn encode_int(v: i64, int_size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + int_size);
    b.push(u8::from(v < 0));
    b.extend(encode_le(v.unsigned_abs(), int_size));
    b
}

/// Little-endian bytes (offsets, magnitudes), at most 8 of them.
#[inline]
pub(crate) fn decode_le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
}

/// `v` as `width` little-endian bytes (the width of an archive's ints or offsets, 1 to 8).
pub(crate) fn encode_le(mut v: u64, width: usize) -> Vec<u8> {
    (0..width)
        .map(|_| {
            let byte = (v & 0xff) as u8;
            v >>= 8;
            byte
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_round_trip_at_every_width_and_bad_ones_are_named() {
        for width in [1usize, 2, 4, 8] {
            let max = if width == 8 {
                i64::MAX
            } else {
                (1i64 << (8 * width)) - 1
            };
            for v in [0, 1, -1, 255.min(max), -(255.min(max)), max, -max] {
                assert_eq!(decode_int(&encode_int(v, width)), Ok(v), "{v} at {width}");
            }
        }
        assert_eq!(decode_int(&[2, 1, 0, 0, 0]), Err(IntError::Sign(2)));
        assert_eq!(
            decode_int(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(IntError::OutOfRange)
        );
        assert_eq!(decode_le(&encode_le(0x0102_0304_0506, 8)), 0x0102_0304_0506);
        assert_eq!(encode_le(0x0102, 3), vec![2, 1, 0]);
    }
}
