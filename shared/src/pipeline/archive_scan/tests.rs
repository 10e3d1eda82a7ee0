use super::data::RowCounter;
use super::*;
use crate::pipeline::archive_format::{K_OFFSET_NO_DATA, K_OFFSET_POS_NOT_SET};
use proptest::prelude::*;

const SAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/archive/sample-pg15.dump");
const SAMPLE_COUNTS: &str = include_str!("../../../tests/fixtures/archive/sample-pg15.counts.json");
/// The same database dumped by pg_dump 18 from a PostgreSQL 18 server (archive 1.16).
const SAMPLE_18: &[u8] = include_bytes!("../../../tests/fixtures/archive/sample-pg18.dump");
const SAMPLE_18_COUNTS: &str =
    include_str!("../../../tests/fixtures/archive/sample-pg18.counts.json");

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
    for (sample, counts, version) in [
        (SAMPLE, SAMPLE_COUNTS, "1.14.0"),
        (SAMPLE_18, SAMPLE_18_COUNTS, "1.16.0"),
    ] {
        let expected: serde_json::Value = serde_json::from_str(counts).unwrap();
        let summary = scan(sample).unwrap();
        assert_eq!(summary.archive_version, version);
        let want: Vec<TableRows> = expected["tables"]
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
        assert_eq!(
            sorted(summary.tables.clone()),
            sorted(want),
            "archive {version}"
        );
        assert_eq!(
            summary.large_objects,
            expected["large_objects"].as_u64().unwrap()
        );
        // Byte at a time gives the same summary.
        assert_eq!(scan_in_chunks(sample, &[1]).unwrap(), summary);
    }
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
fn the_toc_is_kept_with_sections_and_dependencies_when_collecting() {
    assert!(scan(SAMPLE).unwrap().toc.is_empty());
    for sample in [SAMPLE, SAMPLE_18] {
        let mut scanner = ArchiveScanner::new().collecting_objects();
        for chunk in sample.chunks(5) {
            scanner.feed(chunk).unwrap();
        }
        let toc = scanner.finish().unwrap().toc;
        let find = |kind: &str, schema: &str, name: &str| {
            toc.iter()
                .find(|e| e.kind == kind && e.schema == schema && e.name == name)
                .unwrap_or_else(|| panic!("{kind} {schema} {name} in {toc:#?}"))
        };
        let table = find("TABLE", "app", "MixedCase");
        let data = find("TABLE DATA", "app", "MixedCase");
        let key = find("CONSTRAINT", "app", "MixedCase MixedCase_pkey");
        assert_eq!((table.section, data.section, key.section), (2, 3, 4));
        assert!(data.deps.contains(&table.dump_id), "{data:?}");
        assert!(key.deps.contains(&table.dump_id), "{key:?}");
        // IDs are unique; a dependency may name an entry the archive left out (pg_restore
        // ignores those, and so does a restore's plan).
        let ids: HashSet<i64> = toc.iter().map(|e| e.dump_id).collect();
        assert_eq!(ids.len(), toc.len());
        let deps: usize = toc.iter().map(|e| e.deps.len()).sum();
        assert!(
            deps >= toc.len() / 2,
            "{deps} dependencies in {} entries",
            toc.len()
        );
    }
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
