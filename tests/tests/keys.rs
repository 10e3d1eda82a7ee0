//! Key rotation end to end (real PostgreSQL, the real binary): retired key files in the key
//! ring read old backups, everything written uses the current key, and without the ring the
//! error names the key a backup needs and how to give it.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use pgkeep_tests::cli::{counts_by_name, record_counts, Pgkeep};
use pgkeep_tests::{load_sample, unique_name, PgCluster};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn after_a_rotation_old_backups_are_read_with_the_old_key_and_writes_use_the_new_one() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("keys");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 1).unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));

    let old_backup = pgkeep.backup_ok(&[]);
    let id = old_backup["id"].as_str().unwrap();
    let old_id = old_backup["key_id"].as_str().unwrap().to_owned();
    let archive = pgkeep.run(&["cat", id]);
    assert!(archive.status.success(), "{}", stderr(&archive));

    // `pgkeep key id` names the file exactly as the record (and the manifest) do.
    let key = pgkeep.key.to_str().unwrap();
    assert_eq!(pgkeep.run_ok(&["key", "id", key]).trim(), old_id);
    assert_eq!(
        pgkeep.run_ok(&["key", "id"]).trim(),
        old_id,
        "the configured key file"
    );
    let shown: Value = serde_json::from_str(&pgkeep.run_ok(&["key", "id", key, "--json"])).unwrap();
    assert_eq!(shown["key_id"], old_id.as_str());
    assert_eq!(shown["path"], key);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            pgkeep
                .object_path(&old_backup)
                .with_extension("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["backup"]["key_id"], old_id.as_str());
    assert_eq!(manifest["encryption"]["key_id"], old_id.as_str());

    // Rotate: the old key is retired to another file, the next backup makes a new one.
    let retired = pgkeep.dir.path().join("retired.key");
    std::fs::rename(&pgkeep.key, &retired).unwrap();
    let new_backup = pgkeep.backup_ok(&[]);
    let new_id = new_backup["key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);

    // Without the ring: refused, naming the key needed and the flag.
    for args in [&["cat", id][..], &["verify", "--json", id]] {
        let out = pgkeep.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
        assert!(
            err.contains(&old_id) && err.contains("--old-key-file"),
            "{args:?}: {err}"
        );
    }

    // With the ring (flag or variable, comma-separated): cat gives the same archive.
    let retired_path = retired.to_str().unwrap();
    let by_flag = pgkeep.run(&["--old-key-file", retired_path, "cat", id]);
    assert!(by_flag.status.success(), "{}", stderr(&by_flag));
    assert!(
        by_flag.stdout == archive.stdout,
        "cat with the old key differs"
    );
    let by_env = pgkeep
        .command()
        .env("PGKEEP_OLD_KEY_FILES", format!(",{retired_path}, "))
        .args(["cat", id])
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{}", stderr(&by_env));
    assert!(by_env.stdout == archive.stdout);

    // verify through the ring.
    let (out, verified) = pgkeep.verify(&["--old-key-file", retired_path, id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(verified["status"], "verified", "{verified:#}");

    // restore --overwrite of the old backup: its safety backup uses the new key.
    cluster
        .psql(
            &db,
            "CREATE TABLE after_rotation AS SELECT g FROM generate_series(1, 10) g;",
        )
        .unwrap();
    let (out, report) = pgkeep.restore(&[
        "--old-key-file",
        retired_path,
        id,
        "--target-db",
        &db,
        "--overwrite",
        "--confirm",
        &db,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        counts_by_name(&cluster, &db).unwrap(),
        record_counts(&old_backup)
    );
    let safety = pgkeep.show(report["safety_backup"].as_str().expect("a safety backup"));
    assert_eq!(safety["kind"], "pre_restore");
    assert_eq!(safety["key_id"], new_id.as_str(), "{safety:#}");
    assert_eq!(record_counts(&safety)["public.after_rotation"], 10);
    // And the safety backup reads with the current key alone.
    let out = pgkeep.run(&["cat", safety["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn old_key_files_are_checked_like_the_key_file() {
    let pgkeep = Pgkeep::new();
    std::fs::create_dir_all(pgkeep.key.parent().unwrap()).unwrap();
    let mut bytes = [0u8; 32];
    bytes[0] = 7;
    let write_key = |path: &std::path::Path, mode: u32| {
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let old = pgkeep.dir.path().join("old.key");
    write_key(&old, 0o600);
    write_key(&pgkeep.key, 0o600);
    let loose = pgkeep.dir.path().join("loose.key");
    write_key(&loose, 0o644);
    let link = pgkeep.dir.path().join("link.key");
    std::os::unix::fs::symlink(&old, &link).unwrap();
    std::fs::create_dir_all(&pgkeep.repo).unwrap();
    let inside = pgkeep.repo.join("old.key");
    write_key(&inside, 0o600);

    let id = "20260101T000000000Z-01234567";
    for (path, needle) in [
        (&loose, "chmod 600"),
        (&link, "symbolic link"),
        (&inside, "inside the repository"),
        (&pgkeep.dir.path().join("missing.key"), "not found"),
    ] {
        let out = pgkeep.run(&["--old-key-file", path.to_str().unwrap(), "cat", id]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{path:?} accepted");
        assert!(err.contains(needle), "{path:?}: {err}");
    }
    // The same checks for `key id`.
    let out = pgkeep.run(&["key", "id", link.to_str().unwrap()]);
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    // A KMS key is not a key file.
    let out = pgkeep.run(&["--old-key-file", "kms://alias/old", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("old KMS keys need no setting"));
}
