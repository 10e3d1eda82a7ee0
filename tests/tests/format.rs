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

    // Run from an unrelated directory: the reader needs nothing beside itself.
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |extra_env: &[(&str, &std::path::Path)], args: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(&python);
        cmd.current_dir(elsewhere.path()).arg(reader).args(args);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let key = pgkeep.key.as_os_str();
    let wrong_key = pgkeep.dir.path().join("wrong.key");
    std::fs::write(&wrong_key, [7u8; 32]).unwrap();
    // A Python without `zstandard`: a package of that name that cannot be imported.
    let no_zstd = pgkeep.dir.path().join("no-zstd");
    std::fs::create_dir_all(no_zstd.join("zstandard")).unwrap();
    std::fs::write(
        no_zstd.join("zstandard/__init__.py"),
        "raise ImportError('no zstandard here')\n",
    )
    .unwrap();

    for compression in ["zstd", "gzip"] {
        let record = pgkeep.backup_ok(&["--compression", compression]);
        let id = record["id"].as_str().unwrap();
        let by_pgkeep = pgkeep.command().args(["cat", id]).output().unwrap();
        assert!(by_pgkeep.status.success());
        let object = pgkeep.object_path(&record);
        let by_python = run(&[], &["--key-file".as_ref(), key, object.as_os_str()]);
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
        // -o: the same bytes, in a private file.
        let out_file = pgkeep.dir.path().join(format!("{compression}.dump"));
        let to_file = run(
            &[],
            &[
                "--key-file".as_ref(),
                key,
                object.as_os_str(),
                "-o".as_ref(),
                out_file.as_os_str(),
            ],
        );
        assert!(
            to_file.status.success(),
            "{}",
            String::from_utf8_lossy(&to_file.stderr)
        );
        assert!(std::fs::read(&out_file).unwrap() == by_pgkeep.stdout);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // Refusals: each says which it is, exits with its own status, and writes nothing.
        let mut damaged = std::fs::read(&object).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let copy = pgkeep.dir.path().join("damaged.pgkeep");
        std::fs::write(&copy, damaged).unwrap();
        let cases = [
            ("corrupt", key, &copy, 3, "corrupt object: chunk"),
            ("wrong key", wrong_key.as_os_str(), &object, 5, "wrong key"),
        ];
        for (what, key, object, status, needle) in cases {
            let target = pgkeep
                .dir
                .path()
                .join(format!("{compression}-{}.dump", what.replace(' ', "-")));
            for to_file in [false, true] {
                let mut args = vec!["--key-file".as_ref(), key, object.as_os_str()];
                if to_file {
                    args.extend(["-o".as_ref(), target.as_os_str()]);
                }
                let out = run(&[], &args);
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(status),
                    "{compression} {what}: {err}"
                );
                assert!(err.contains(needle), "{compression} {what}: {err}");
                assert!(
                    out.stdout.is_empty(),
                    "{compression} {what}: wrote to stdout"
                );
                assert!(!target.exists(), "{compression} {what}: wrote {target:?}");
            }
        }
        let out = run(
            &[("PYTHONPATH", no_zstd.as_path())],
            &["--key-file".as_ref(), key, object.as_os_str()],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        if compression == "zstd" {
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(
                err.contains("`zstandard` is missing") && err.contains("pip install"),
                "{err}"
            );
            assert!(out.stdout.is_empty());
        } else {
            assert!(out.status.success(), "gzip needs no zstandard: {err}");
        }
    }
    // Nothing was left behind by the failures (no temporary files).
    let leftovers: Vec<_> = std::fs::read_dir(pgkeep.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".pgkeep_decrypt")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `pgkeep cat --manifest`: a backup read straight from its manifest and the object beside it,
/// with no catalog (none is opened or created), from a copy anywhere and from S3.
#[test]
fn cat_reads_straight_from_a_manifest_without_a_catalog() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("stranger");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 1).unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let record = pgkeep.backup_ok(&["--compression", "gzip"]);
    let id = record["id"].as_str().unwrap();
    let by_id = pgkeep.run(&["cat", id]);
    assert!(by_id.status.success());

    // A copy of the two files elsewhere; the catalog gone.
    let object = pgkeep.object_path(&record);
    let manifest = object.with_extension("manifest.json");
    let copy = pgkeep.dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for file in [&object, &manifest] {
        std::fs::copy(file, copy.join(file.file_name().unwrap())).unwrap();
    }
    let catalog = pgkeep.repo.join("catalog.sqlite3");
    std::fs::remove_file(&catalog).unwrap();
    let copied_manifest = copy.join(manifest.file_name().unwrap());
    let out = pgkeep.run(&["cat", "--manifest", copied_manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == by_id.stdout,
        "cat --manifest differs from cat ID"
    );
    assert!(!catalog.exists(), "cat --manifest opened a catalog");

    // A damaged object beside the manifest is refused.
    let copied_object = copy.join(object.file_name().unwrap());
    let mut bytes = std::fs::read(&copied_object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&copied_object, bytes).unwrap();
    let out = pgkeep.run(&["cat", "--manifest", copied_manifest.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a manifest's name.
    let out = pgkeep.run(&["cat", "--manifest", copied_object.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(".manifest.json"));

    // From S3, with only the key configured.
    let Some(moto) = pgkeep_tests::aws::Moto::start() else {
        return;
    };
    let s3 = Pgkeep::new()
        .database_url(cluster.url(&db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint);
    let record = s3.backup_ok(&[]);
    let by_id = s3.run(&["cat", record["id"].as_str().unwrap()]);
    assert!(by_id.status.success());
    let manifest_url = format!(
        "s3://{}/{}",
        moto.bucket,
        moto.s3_key(
            &record["object_key"]
                .as_str()
                .unwrap()
                .replace(".pgkeep", ".manifest.json")
        )
    );
    let out = s3
        .command()
        .env_remove("PGKEEP_REPO")
        .env_remove("PGKEEP_CATALOG")
        .args(["cat", "--manifest", &manifest_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == by_id.stdout);
}
