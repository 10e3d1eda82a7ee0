//! Who asked for what, and what was done since: `requested_by` on the records the real binary
//! writes, `list --kind`, and `pgkeep audit` over the audit trail, on the embedded default.

use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::Value;

fn small_database(cluster: &PgCluster) -> String {
    let db = unique_name("hist");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g;",
        )
        .unwrap();
    db
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn records_name_who_asked_listings_filter_by_kind_and_the_audit_trail_reads_back() {
    let cluster = PgCluster::start().unwrap();
    let db = small_database(&cluster);
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .env("USER", "carol");

    let manual = pgkeep.backup_ok(&[]);
    let pre_migration = pgkeep.backup_ok(&["--kind", "pre-migration"]);
    let manual_id = manual["id"].as_str().unwrap();
    let pre_id = pre_migration["id"].as_str().unwrap();
    assert_eq!(manual["requested_by"], "cli:carol", "{manual}");
    assert_eq!(pgkeep.show(pre_id)["requested_by"], "cli:carol");
    let shown = pgkeep.run_ok(&["show", manual_id]);
    assert!(shown.contains("requested by:    cli:carol"), "{shown}");

    // --kind: only that kind; a bad kind names the good ones.
    let listed = json(&pgkeep.run_ok(&["list", "--kind", "pre-migration", "--json"]));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pre_id]);
    assert_eq!(listed[0]["requested_by"], "cli:carol");
    let all = json(&pgkeep.run_ok(&["list", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 2);
    let bad = pgkeep.run(&["list", "--kind", "weekly"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("pre_migration"), "{stderr}");

    // Nothing audited yet; a deletion is, under the actor.
    assert_eq!(
        json(&pgkeep.run_ok(&["audit", "--json"])),
        Value::Array(vec![])
    );
    assert!(pgkeep.run_ok(&["audit"]).contains("no audit entries"));
    pgkeep.run_ok(&["delete", manual_id, "--actor", "dave"]);
    let audit = json(&pgkeep.run_ok(&["audit", "--json"]));
    let entries = audit.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"], "dave");
    assert_eq!(entries[0]["action"], "delete");
    assert_eq!(entries[0]["backup_id"], manual_id);
    assert_eq!(entries[0]["database"], db.as_str());
    let text = pgkeep.run_ok(&["audit", "--database", &db, "--since", "1h"]);
    assert!(
        text.contains("dave") && text.contains("delete") && text.contains(manual_id),
        "{text}"
    );
    // Filters that exclude it: another database, a time after it.
    assert_eq!(
        json(&pgkeep.run_ok(&["audit", "--json", "--database", "other"])),
        Value::Array(vec![])
    );
    assert_eq!(
        json(&pgkeep.run_ok(&["audit", "--json", "--since", "2999-01-01T00:00:00Z"])),
        Value::Array(vec![])
    );
    let bad = pgkeep.run(&["audit", "--since", "last week"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--since") && stderr.contains("7d"),
        "{stderr}"
    );
}

#[test]
fn local_restores_and_dry_runs_are_recorded_and_listed() {
    let cluster = PgCluster::start().unwrap();
    let db = small_database(&cluster);
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .env("USER", "carol");
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    assert_eq!(pgkeep.run_ok(&["restores"]).trim(), "no restores yet");

    let copy = unique_name("copy");
    let (out, dry) = pgkeep.restore(&[id, "--target-db", &copy, "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry_id = dry["restore_id"].as_str().unwrap().to_owned();
    let (out, done) = pgkeep.restore(&[id, "--target-db", &copy]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done_id = done["restore_id"].as_str().unwrap().to_owned();
    // Into a database that exists, without --overwrite: refused, recorded failed.
    let (out, _) = pgkeep.restore(&[id, "--target-db", &copy]);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Over it, with its safety backup named.
    let (out, over) =
        pgkeep.restore(&[id, "--target-db", &copy, "--overwrite", "--confirm", &copy]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let safety = over["safety_backup"].as_str().unwrap().to_owned();

    let runs = json(&pgkeep.run_ok(&["restores", "--json"]));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 4, "{runs:?}");
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["succeeded", "failed", "succeeded", "succeeded"]);
    for r in runs {
        assert_eq!(r["backup_id"], id);
        assert_eq!(r["target_db"], copy.as_str());
        assert_eq!(r["requested_by"], "carol");
        assert!(r["duration_ms"].as_u64().is_some(), "{r}");
    }
    assert_eq!(runs[0]["safety_backup_id"], safety.as_str());
    assert_eq!(runs[0]["overwrite"], true);
    let error = runs[1]["error"].as_str().unwrap();
    assert!(error.contains("exists"), "{error}");
    assert_eq!(runs[2]["id"], done_id.as_str());
    assert_eq!(runs[2]["rows"], 100);
    assert!(runs[2].get("listing").is_none());
    assert_eq!(runs[3]["id"], dry_id.as_str());
    assert_eq!(runs[3]["dry_run"], true);
    let listing = runs[3]["listing"].as_str().unwrap();
    assert!(listing.contains("TABLE DATA public t"), "{listing}");

    let one = pgkeep.run_ok(&["restores", "--id", &dry_id]);
    assert!(
        one.contains("state:           succeeded") && one.contains("TABLE DATA public t"),
        "{one}"
    );
    let table = pgkeep.run_ok(&["restores", "--limit", "1"]);
    assert!(
        table.contains(&safety) && !table.contains(&dry_id),
        "{table}"
    );
    let bad = pgkeep.run(&["restores", "--id", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    let missing = pgkeep.run(&["restores", "--id", id]);
    assert_eq!(missing.status.code(), Some(4));
}
