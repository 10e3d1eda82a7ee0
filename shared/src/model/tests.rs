use super::*;
use chrono::TimeZone;

#[test]
fn ids_sort_by_time_and_round_trip() {
    let a = BackupId::generate(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
    let b = BackupId::generate(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6).unwrap());
    assert!(a < b);
    assert_eq!(a.as_str().parse::<BackupId>().unwrap(), a);
    assert!(a.as_str().starts_with("20260102T030405000Z-"));
}

#[test]
fn malformed_ids_are_refused() {
    for bad in [
        "",
        "x",
        "20260102T030405000Z-9f3a1c2",
        "20260102T030405000Z-9F3A1C2B",
        "20260102T030405000Z_9f3a1c2b",
        "../../etc/passwd",
        "20260102T03040500AZ-9f3a1c2b",
    ] {
        assert!(bad.parse::<BackupId>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn transitions_follow_the_lifecycle() {
    use BackupStatus::*;
    let allowed = [
        (InProgress, Completed),
        (InProgress, Failed),
        (Completed, Verified),
        (Completed, VerificationFailed),
        (Completed, Deleted),
        (Verified, Verified),
        (Verified, VerificationFailed),
        (Verified, Deleted),
        (VerificationFailed, Verified),
        (VerificationFailed, VerificationFailed),
        (VerificationFailed, Deleted),
        (Failed, Deleted),
    ];
    for from in BackupStatus::ALL {
        for to in BackupStatus::ALL {
            let expected = allowed.contains(&(*from, *to));
            assert_eq!(from.can_become(*to), expected, "{from} -> {to}");
        }
    }
    let mut r = BackupRecord::start(
        BackupId::generate(Utc::now()),
        "db",
        BackupKind::Manual,
        Compression::Zstd,
    );
    assert!(r.transition(Verified).is_err());
    assert_eq!(r.status, InProgress);
    r.transition(Completed).unwrap();
    assert_eq!(r.status, Completed);
    assert!(r.transition(InProgress).is_err());
}

#[test]
fn names_quote_only_when_needed() {
    assert_eq!(qualified_name("public", "t1"), "public.t1");
    assert_eq!(qualified_name("Sales", "a b"), "\"Sales\".\"a b\"");
    assert_eq!(qualified_name("s", "x\";y"), "s.\"x\"\";y\"");
    assert_eq!(qualified_name("a.b", "c"), "\"a.b\".c");
    assert_eq!(quote_ident("1abc"), "\"1abc\"");
}

#[test]
fn object_keys_are_safe_paths() {
    let id: BackupId = "20261124T153512123Z-9f3a1c2b".parse().unwrap();
    assert_eq!(
        object_key("shop", &id),
        "shop/2026/11/20261124T153512123Z-9f3a1c2b.pgkeep"
    );
    let k = object_key("../a b/é", &id);
    assert!(!k.contains(".."), "{k}");
    assert!(k.starts_with("%2E.%2Fa%20b%2F%C3%A9/"), "{k}");
    assert_eq!(manifest_key(&k), k.replace(".pgkeep", ".manifest.json"));
}

#[test]
fn records_serialize_with_stable_names() {
    let r = BackupRecord::start(
        "20261124T153512123Z-9f3a1c2b".parse().unwrap(),
        "shop",
        BackupKind::PreRestore,
        Compression::Gzip,
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["kind"], "pre_restore");
    assert_eq!(v["status"], "in_progress");
    assert_eq!(v["compression"], "gzip");
    let back: BackupRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn labels_selection_and_schema_only_tables_are_optional_in_records_and_manifests() {
    // A record and manifest as written before labels and selections existed.
    let old = serde_json::json!({
        "id": "20261124T154851222Z-29b946c0", "database": "shop", "kind": "manual",
        "status": "completed", "created_at": "2026-11-24T15:48:51.222Z",
        "completed_at": "2026-11-24T15:48:51.460Z",
        "object_key": "shop/2026/11/20261124T154851222Z-29b946c0.pgkeep",
        "size_bytes": 10, "sha256": "00", "compression": "gzip", "key_id": "file:1",
        "server_version": "15.18", "row_counts": {"public.t": 3},
        "duration_ms": null, "error": null
    });
    let r: BackupRecord = serde_json::from_value(old.clone()).unwrap();
    assert!(r.labels.is_empty() && r.schema_only_tables.is_empty());
    assert!(r.selection.is_everything(), "no selection: everything");
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        old,
        "written back unchanged"
    );
    let manifest = serde_json::json!({
        "manifest_version": 1, "tool_version": "0.1.0", "backup": old,
        "encryption": {"format_version": 1, "aead": "AES-256-GCM", "chunk_size": 1048576,
                       "key_id": "file:1", "wrapped_key": "AA=="},
        "archive": {"format": "pg_dump custom", "archive_version": "1.14.0",
                    "dump_version": "15.18", "archive_bytes": 100,
                    "tables": [{"schema": "public", "table": "t", "rows": 3}],
                    "large_objects": 0}
    });
    let m: Manifest = serde_json::from_value(manifest).unwrap();
    assert!(m.archive.schema_only_tables.is_empty());
    assert!(m.backup.selection.is_everything());

    let mut r = r;
    r.kind = BackupKind::PreMigration;
    r.labels.insert("release".into(), "v2".into());
    r.selection.exclude_table_data = vec!["public.sessions".into()];
    r.schema_only_tables = vec!["public.sessions".into()];
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["kind"], "pre_migration");
    assert_eq!(v["labels"]["release"], "v2");
    assert_eq!(v["selection"]["exclude_table_data"][0], "public.sessions");
    assert!(v["selection"].get("exclude_schemas").is_none());
    assert_eq!(v["schema_only_tables"][0], "public.sessions");
    assert_eq!(serde_json::from_value::<BackupRecord>(v).unwrap(), r);
    assert_eq!(
        "pre_migration".parse::<BackupKind>(),
        Ok(BackupKind::PreMigration)
    );
}

#[test]
fn verifications_serialize_readably_and_old_records_still_read() {
    let mut r = BackupRecord::start(
        "20261124T153512123Z-9f3a1c2b".parse().unwrap(),
        "shop",
        BackupKind::Manual,
        Compression::Zstd,
    );
    let old = serde_json::to_value(&r).unwrap();
    assert!(old.get("verification").is_none());
    assert_eq!(serde_json::from_value::<BackupRecord>(old).unwrap(), r);

    r.verification = Some(Verification {
        verified_at: Utc.with_ymd_and_hms(2026, 11, 24, 16, 0, 0).unwrap(),
        ok: false,
        result: VerificationResult::Differences,
        reason: Some("1 table differs".into()),
        restore_duration_ms: Some(1234),
        duration_ms: 2000,
        scratch_server: Some("postgresql://u@h:5432/postgres".into()),
        scratch_database: Some("pgkeep_verify_x".into()),
        tables: vec![TableCheck {
            table: "public.t".into(),
            expected: Some(3),
            actual: Some(2),
            schema_only: false,
        }],
        large_objects: Some(CountCheck {
            expected: Some(1),
            actual: Some(1),
        }),
        objects_checked: 12,
        missing_objects: vec!["index public.t_idx".into()],
        extra_objects: vec![],
    });
    let v = serde_json::to_value(&r).unwrap();
    let check = &v["verification"];
    assert_eq!(check["result"], "differences");
    assert_eq!(check["restore_duration_ms"], 1234);
    assert_eq!(check["tables"][0]["table"], "public.t");
    assert_eq!(check["tables"][0]["expected"], 3);
    assert_eq!(check["tables"][0]["actual"], 2);
    assert_eq!(check["missing_objects"][0], "index public.t_idx");
    assert!(!r.verification.as_ref().unwrap().tables[0].matches());
    assert_eq!(serde_json::from_value::<BackupRecord>(v).unwrap(), r);
}

#[test]
fn compression_names_a_level_as_pg_dump_does() {
    let zstd1: CompressionChoice = "zstd:1".parse().unwrap();
    assert_eq!((zstd1.algorithm, zstd1.level()), (Compression::Zstd, 1));
    let gzip: CompressionChoice = "gzip".parse().unwrap();
    assert_eq!(
        (gzip.algorithm, gzip.level, gzip.level()),
        (Compression::Gzip, None, 6)
    );
    assert_eq!(CompressionChoice::default().level(), 3);
    for text in ["zstd", "zstd:9", "gzip:9"] {
        assert_eq!(text.parse::<CompressionChoice>().unwrap().to_string(), text);
    }
    for (bad, says) in [
        ("zstd:0", "1-9 (default 3)"),
        ("zstd:19", "1-9"),
        ("gzip:10", "1-9 (default 6)"),
        ("zstd:", "is not one of"),
        ("zstd:fast", "\"fast\""),
        ("lz4:1", "expected one of: zstd, gzip"),
    ] {
        let err = bad.parse::<CompressionChoice>().unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn records_without_a_compression_level_still_read() {
    let mut record = BackupRecord::start(
        BackupId::generate(Utc::now()),
        "shop",
        BackupKind::Manual,
        Compression::Zstd,
    );
    let old = serde_json::to_value(&record).unwrap();
    assert!(old.get("compression_level").is_none(), "{old}");
    let read: BackupRecord = serde_json::from_value(old).unwrap();
    assert_eq!(read.compression_level, None);
    record.compression_level = Some(1);
    let new = serde_json::to_string(&record).unwrap();
    assert_eq!(serde_json::from_str::<BackupRecord>(&new).unwrap(), record);
}
