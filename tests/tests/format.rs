//! docs/FORMAT.md is exact enough to read a backup without pgkeep: the Python reader written
//! from it alone (docs/pgkeep_decrypt.py) must produce exactly what `pgkeep cat` produces.

use std::process::Command;

use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{load_sample, unique_name, PgCluster};

/// The Python with `cryptography` and `zstandard` that scripts/test prepares.
fn python() -> Option<String> {
    match std::env::var("PGKEEP_TEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("PGKEEP_TEST_PYTHON is not set: run the tests through scripts/test")
        }
        Err(_) => {
            eprintln!("skipped: PGKEEP_TEST_PYTHON is not set (scripts/test sets it)");
            None
        }
    }
}

#[test]
fn the_documented_format_decrypts_without_pgkeep() {
    let Some(python) = python() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("format");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 1).unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let reader = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/pgkeep_decrypt.py");

    for compression in ["zstd", "gzip"] {
        let record = pgkeep.backup_ok(&["--compression", compression]);
        let id = record["id"].as_str().unwrap();
        let by_pgkeep = pgkeep.command().args(["cat", id]).output().unwrap();
        assert!(by_pgkeep.status.success());
        let object = pgkeep.object_path(&record);
        let by_python = Command::new(&python)
            .arg(reader)
            .arg("--key-file")
            .arg(&pgkeep.key)
            .arg(&object)
            .output()
            .unwrap();
        assert!(
            by_python.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&by_python.stderr)
        );
        assert!(by_python.stdout.starts_with(b"PGDMP"));
        assert!(
            by_python.stdout == by_pgkeep.stdout,
            "{compression}: the documented reader disagrees with pgkeep cat"
        );

        // And it refuses a damaged object, as the document says.
        let mut damaged = std::fs::read(&object).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let copy = pgkeep.dir.path().join("damaged.pgkeep");
        std::fs::write(&copy, damaged).unwrap();
        let refused = Command::new(&python)
            .arg(reader)
            .arg("--key-file")
            .arg(&pgkeep.key)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            !refused.status.success(),
            "{compression}: damage not detected"
        );
    }
}
