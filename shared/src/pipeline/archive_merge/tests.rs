//! The merge plan on hand-built TOCs: renumbering, placement, repeated entries once, and
//! every way parts can disagree refused with the entry named; the TOC round trip.

use super::*;

fn s(v: &str) -> Option<Vec<u8>> {
    Some(v.as_bytes().to_vec())
}

/// An entry as pg_dump 15 writes it (archive 1.14: eight strings after section).
fn entry(id: i64, desc: &str, ns: &str, tag: &str, section: i64, deps: &[i64]) -> Entry {
    let data = matches!(desc, "TABLE DATA" | "BLOBS");
    Entry {
        dump_id: id,
        had_dumper: i64::from(data),
        table_oid: s("0"),
        oid: s(&(16000 + id).to_string()),
        tag: s(tag),
        desc: s(desc),
        section,
        strings: vec![
            s(&format!("-- {desc} {tag}")),
            s(""),
            if desc == "TABLE DATA" {
                s("COPY ...")
            } else {
                s("")
            },
            s(ns),
            s(""),
            s("heap"),
            s("postgres"),
            s("false"),
        ],
        relkind: 0,
        deps: deps.iter().map(|d| d.to_string().into_bytes()).collect(),
        offset: (
            if data {
                K_OFFSET_POS_SET
            } else {
                K_OFFSET_NO_DATA
            },
            0,
        ),
    }
}

fn toc(entries: Vec<Entry>) -> Toc {
    Toc {
        head: b"PGDMP\x01\x0e\x00\x04\x08\x01".to_vec(),
        minor: 14,
        int_size: 4,
        off_size: 8,
        identity: vec![vec![0], b"shop".to_vec()],
        entries,
    }
}

const PRE: i64 = 2;
const DATA: i64 = SECTION_DATA;
const POST: i64 = SECTION_POST_DATA;

fn schema() -> Toc {
    toc(vec![
        entry(1, "ENCODING", "", "ENCODING", PRE, &[]),
        entry(2, "TABLE", "public", "a", PRE, &[]),
        entry(3, "TABLE", "We\"ird", "b c", PRE, &[]),
        entry(4, "SEQUENCE", "public", "s", PRE, &[]),
        entry(5, "BLOB", "", "16401", PRE, &[]),
        entry(9, "INDEX", "public", "a_pkey", POST, &[2]),
    ])
}

/// A TABLE DATA entry whose OID is its table's (as pg_dump writes it).
fn table_data(id: i64, ns: &str, tag: &str, table: i64) -> Entry {
    let mut e = entry(id, "TABLE DATA", ns, tag, DATA, &[table]);
    e.oid = s(&(16000 + table).to_string());
    e
}

fn parts() -> Vec<Toc> {
    vec![
        toc(vec![
            entry(1, "ENCODING", "", "ENCODING", PRE, &[]),
            table_data(10, "public", "a", 2),
            entry(11, "SEQUENCE SET", "public", "s", DATA, &[4]),
        ]),
        toc(vec![
            entry(1, "ENCODING", "", "ENCODING", PRE, &[]),
            table_data(10, "We\"ird", "b c", 3),
            entry(12, "BLOBS", "", "BLOBS", DATA, &[]),
        ]),
    ]
}

fn refusal(schema: Toc, parts: Vec<Toc>) -> String {
    match Merger::new(schema, parts) {
        Err(MergeError::Mismatch(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn data_entries_are_renumbered_between_pre_and_post_data_and_repeats_appear_once() {
    let merger = Merger::new(schema(), parts()).unwrap();
    let got: Vec<(i64, String, i64)> = merger
        .entries()
        .iter()
        .map(|e| (e.dump_id, e.desc(), e.offset.0 as i64))
        .collect();
    let nd = K_OFFSET_NO_DATA as i64;
    let unset = K_OFFSET_POS_NOT_SET as i64;
    assert_eq!(
        got,
        vec![
            (1, "ENCODING".into(), nd),
            (2, "TABLE".into(), nd),
            (3, "TABLE".into(), nd),
            (4, "SEQUENCE".into(), nd),
            (5, "BLOB".into(), nd),
            (10, "TABLE DATA".into(), unset),
            (11, "SEQUENCE SET".into(), nd),
            (12, "TABLE DATA".into(), unset),
            (13, "BLOBS".into(), unset),
            (9, "INDEX".into(), nd),
        ]
    );
    // Dependencies still name the schema part's tables.
    assert_eq!(merger.entries()[7].deps, vec![b"3".to_vec()]);
    let blocks: Vec<(usize, i64, usize)> = merger
        .blocks
        .iter()
        .map(|b| (b.part, b.old_id, b.entry))
        .collect();
    assert_eq!(blocks, vec![(0, 10, 5), (1, 10, 7), (1, 12, 8)]);
}

#[test]
fn a_table_data_entry_naming_another_table_is_refused() {
    let mut parts = parts();
    // "b c"'s data claims table 2, which is "a" in the schema part.
    parts[1].entries[1] = table_data(10, "We\"ird", "b c", 2);
    let why = refusal(schema(), parts);
    assert!(why.contains("data part 2"), "{why}");
    assert!(why.contains("TABLE DATA \"We\"ird\".\"b c\""), "{why}");
    assert!(why.contains("TABLE \"public\".\"a\""), "{why}");
}

#[test]
fn a_table_data_entry_with_another_oid_is_refused() {
    let mut parts = parts();
    parts[0].entries[1].oid = s("99999");
    let why = refusal(schema(), parts);
    assert!(why.contains("TABLE DATA \"public\".\"a\""), "{why}");
}

#[test]
fn dependencies_the_schema_part_lacks_or_missing_are_refused() {
    let mut parts = parts();
    parts[0].entries[1] = table_data(10, "public", "a", 77);
    let why = refusal(schema(), parts);
    assert!(why.contains("dump id 77"), "{why}");

    let mut parts = self::parts();
    parts[0].entries[1].deps.clear();
    let why = refusal(schema(), parts);
    assert!(why.contains("no dependency"), "{why}");

    let mut parts = self::parts();
    parts[0].entries[2] = entry(11, "SEQUENCE SET", "public", "s", DATA, &[2]);
    let why = refusal(schema(), parts);
    assert!(why.contains("SEQUENCE SET \"public\".\"s\""), "{why}");
}

#[test]
fn parts_that_differ_otherwise_are_refused() {
    // Another database or pg_dump version in a header.
    let mut parts = parts();
    parts[1].identity[1] = b"other".to_vec();
    assert!(refusal(schema(), parts).contains("data part 2's archive header"));

    // A pre-data entry the schema part does not have.
    let mut parts = self::parts();
    parts[0]
        .entries
        .push(entry(13, "SEARCHPATH", "", "SEARCHPATH", PRE, &[]));
    assert!(refusal(schema(), parts).contains("SEARCHPATH"));

    // The same table's data in two parts.
    let mut parts = self::parts();
    parts[1].entries.push(table_data(14, "public", "a", 2));
    assert!(refusal(schema(), parts).contains("more than one data part"));

    // Data in the schema part.
    let mut schema = schema();
    schema.entries.push(table_data(20, "public", "a", 2));
    assert!(refusal(schema, self::parts()).contains("schema part holds data"));
}

#[tokio::test]
async fn a_toc_written_reads_back_the_same_and_blocks_are_rewritten() {
    let parts = parts();
    let mut merger = Merger::new(schema(), parts.clone()).unwrap();
    // The head is a stand-in: write_toc copies it verbatim; read the TOC part back.
    let mut out = Vec::new();
    merger.write_toc(&mut out).await.unwrap();
    let toc_bytes = &out[merger.schema.head.len()..];
    let mut reader = In {
        r: &mut &toc_bytes[..],
        part: "test",
        int_size: 4,
        record: None,
    };
    let n = reader.int().await.unwrap();
    assert_eq!(n as usize, merger.entries().len());

    // Data part 1 as bytes: its TOC, then the block of dump id 10.
    let mut part = Vec::new();
    let mut w = Out {
        w: &mut part,
        int_size: 4,
        off_size: 8,
        pos: 0,
    };
    w.bytes(b"PGDMP\x01\x0e\x00\x04\x08\x01").await.unwrap();
    w.int(0).await.unwrap();
    for _ in 0..7 {
        w.int(1).await.unwrap();
    }
    w.string(&s("shop")).await.unwrap();
    w.string(&s("15")).await.unwrap();
    w.string(&s("15")).await.unwrap();
    w.int(parts[0].entries.len() as i64).await.unwrap();
    for e in &parts[0].entries {
        w.entry(14, e).await.unwrap();
    }
    w.bytes(&[BLK_DATA]).await.unwrap();
    w.int(10).await.unwrap();
    w.int(4).await.unwrap();
    w.bytes(b"1\tx\n").await.unwrap();
    w.int(0).await.unwrap();

    let read = read_toc(&mut &part[..], "data part 1").await.unwrap();
    assert_eq!(read.entries, parts[0].entries);
    // The merger compares the re-read TOC with the planned one: use the bytes' own.
    merger.parts[0] = read;
    let before = out.len();
    merger.copy_part(0, &mut &part[..], &mut out).await.unwrap();
    // Block type, dump id 10 renumbered to 10 (its merged id), one chunk, end.
    let block = &out[before..];
    assert_eq!(block[0], BLK_DATA);
    assert_eq!(&block[1..6], &[0, 10, 0, 0, 0]);
    assert_eq!(&block[11..15], b"1\tx\n");
    assert_eq!(
        merger.entries()[5].offset,
        (K_OFFSET_POS_SET, before as u64)
    );
    // Part 2's blocks never came.
    assert!(merger.finish().is_err());
}
