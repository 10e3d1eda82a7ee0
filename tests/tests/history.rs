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
    assert_eq!(json(&pgkeep.run_ok(&["audit", "--json"])), Value::Array(vec![]));
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
    assert!(stderr.contains("--since") && stderr.contains("7d"), "{stderr}");
}
