//! Selective backups, kinds and labels end to end: real PostgreSQL, the real binary.
//!
//! A backup that leaves out a schema and one table's rows restores into exactly the selected
//! objects (and verifies), records its selection in the record and the manifest, and labels
//! find backups again and keep them through prune.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use pgkeep_tests::cli::{counts_by_name, record_counts, working_databases, Pgkeep};
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::{json, Value};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Three schemas: `public` and `app` to keep, `audit` to leave out; `public."Session Log"`
/// (a name that needs quoting in a pattern) to keep without its rows; a partitioned table,
/// whose parent has no rows of its own and must not be taken for a schema-only table; a
/// foreign key into the kept schema, and a view over the data-less table.
const SQL: &str = r#"
CREATE SCHEMA app;
CREATE SCHEMA audit;
CREATE TABLE public.customers (id int PRIMARY KEY, name text);
INSERT INTO public.customers SELECT g, 'customer ' || g FROM generate_series(1, 120) g;
CREATE TABLE public.orders (id int PRIMARY KEY, customer int REFERENCES public.customers, total numeric);
INSERT INTO public.orders SELECT g, 1 + g % 120, g * 1.5 FROM generate_series(1, 480) g;
CREATE TABLE public."Session Log" (id bigint PRIMARY KEY, customer int, at timestamptz);
INSERT INTO public."Session Log" SELECT g, 1 + g % 120, now() FROM generate_series(1, 999) g;
CREATE VIEW public.recent_sessions AS SELECT * FROM public."Session Log" WHERE id > 900;
CREATE TABLE app.items (id int PRIMARY KEY, label text);
INSERT INTO app.items SELECT g, 'item ' || g FROM generate_series(1, 64) g;
CREATE TABLE app.events (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO app.events SELECT g, DATE '2025-06-01' + (g % 300) FROM generate_series(1, 700) g;
CREATE TABLE audit.log (id int PRIMARY KEY, what text);
INSERT INTO audit.log SELECT g, 'did ' || g FROM generate_series(1, 333) g;
CREATE TABLE audit.trail (id int);
INSERT INTO audit.trail SELECT generate_series(1, 5);
CREATE FUNCTION audit.stamp() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
"#;

const SESSIONS: &str = "public.\"Session Log\"";

fn database(cluster: &PgCluster) -> String {
    let db = unique_name("selective");
    cluster.create_database(&db).unwrap();
    cluster.psql(&db, SQL).unwrap();
    db
}

/// Schemas of a database other than the system's.
fn schemas(cluster: &PgCluster, db: &str) -> BTreeSet<String> {
    cluster
        .psql(
            db,
            "SELECT nspname FROM pg_namespace
             WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'",
        )
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_selective_backup_restores_exactly_the_selection_and_verifies() {
    let cluster = PgCluster::start().unwrap();
    let db = database(&cluster);
    let source = counts_by_name(&cluster, &db).unwrap();
    assert_eq!(source[SESSIONS], 999);
    assert_eq!(source["audit.log"], 333);

    // What the selection should give: no audit tables, the session log empty, the rest equal.
    let mut expected = source.clone();
    expected.retain(|name, _| !name.starts_with("audit."));
    expected.insert(SESSIONS.to_owned(), 0);

    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[
        "--exclude-schema",
        "audit",
        "--exclude-table-data",
        "public.\"Session Log\"",
        "--kind",
        "pre-migration",
        "--label",
        "release=2026.11",
    ]);
    let id = backup["id"].as_str().unwrap().to_owned();
    assert_eq!(backup["kind"], "pre_migration");
    assert_eq!(backup["labels"], json!({"release": "2026.11"}));

    // The record: the selection, counts of exactly the included tables with rows, and the
    // data-less table as schema only (not as 0 rows).
    let selection = json!({
        "exclude_schemas": ["audit"],
        "exclude_table_data": ["public.\"Session Log\""],
    });
    assert_eq!(backup["selection"], selection);
    assert_eq!(backup["schema_only_tables"], json!([SESSIONS]));
    let counts = record_counts(&backup);
    let mut with_rows = expected.clone();
    with_rows.remove(SESSIONS);
    assert_eq!(
        counts, with_rows,
        "row counts of exactly the included tables"
    );
    assert!(!counts.contains_key(SESSIONS));
    assert!(
        !counts.contains_key("app.events"),
        "a partitioned parent has no rows"
    );

    // The manifest beside the object says the same.
    let object = pgkeep.object_path(&backup);
    let manifest_path = object.with_file_name(
        object
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".pgkeep", ".manifest.json"),
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["backup"]["selection"], selection);
    assert_eq!(manifest["backup"]["schema_only_tables"], json!([SESSIONS]));
    assert_eq!(
        manifest["archive"]["schema_only_tables"],
        json!([{"schema": "public", "table": "Session Log"}])
    );
    assert!(manifest["archive"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["schema"] != "audit" && t["table"] != "Session Log"));

    // Restored into a new database: exactly the selected objects.
    let copy = unique_name("selective_copy");
    let (out, _) = pgkeep.restore(&[&id, "--target-db", &copy]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts_by_name(&cluster, &copy).unwrap(), expected);
    assert_eq!(
        schemas(&cluster, &copy),
        BTreeSet::from(["app".to_owned(), "public".to_owned()]),
        "the excluded schema is absent"
    );
    let view = cluster
        .psql(&copy, "SELECT count(*) FROM public.recent_sessions")
        .unwrap();
    assert_eq!(view.trim(), "0", "the view over the data-less table exists");

    // Verification compares only what was selected, and proves it.
    let (out, verified) = pgkeep.verify(&[&id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(verified["status"], "verified", "{verified:#}");
    let tables: BTreeMap<String, Value> = verified["verification"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["table"].as_str().unwrap().to_owned(), t.clone()))
        .collect();
    assert_eq!(
        tables.keys().cloned().collect::<BTreeSet<_>>(),
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "checked: the included tables, and no table of the excluded schema"
    );
    assert_eq!(tables[SESSIONS]["schema_only"], true);
    assert_eq!(tables[SESSIONS]["actual"], 0);
    assert!(tables[SESSIONS]["expected"].is_null());
    assert_eq!(tables["public.orders"]["expected"], 480);
    assert_eq!(tables["public.orders"]["actual"], 480);
    assert!(tables
        .values()
        .all(|t| t.get("schema_only").is_none() || t["table"] == SESSIONS));

    // People see it in `show`.
    let shown = pgkeep.run_ok(&["show", &id]);
    assert!(
        shown.contains(
            "selection:       exclude_schemas: audit; exclude_table_data: public.\"Session Log\""
        ),
        "{shown}"
    );
    assert!(
        shown.contains("labels:          release=2026.11"),
        "{shown}"
    );
    let session_line = shown
        .lines()
        .find(|l| l.trim_start().starts_with(SESSIONS))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(session_line.trim_end().ends_with("schema only"), "{shown}");
    assert!(working_databases(&cluster).is_empty());
}

/// `--jobs 3` holds exactly what a single stream holds, for a selection by name (pg_dump
/// interprets it before the tables are dealt) and for one that only leaves out rows (the tables
/// come from the catalog and every stream starts at once).
#[test]
fn a_parallel_selective_backup_holds_what_a_single_stream_holds() {
    let cluster = PgCluster::start().unwrap();
    let db = database(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let by_name: &[&str] = &[
        "--exclude-schema",
        "audit",
        "--exclude-table-data",
        SESSIONS,
    ];
    let rows_only: &[&str] = &["--exclude-table-data", SESSIONS];
    for selection in [by_name, rows_only] {
        let single = pgkeep.backup_ok(selection);
        let mut args = selection.to_vec();
        args.extend(["--jobs", "3"]);
        let parallel = pgkeep.backup_ok(&args);
        assert!(
            parallel["parts"].as_array().is_some_and(|p| p.len() >= 2),
            "{parallel:#}"
        );
        assert_eq!(
            record_counts(&parallel),
            record_counts(&single),
            "{selection:?}"
        );
        assert_eq!(parallel["schema_only_tables"], json!([SESSIONS]));
        assert_eq!(parallel["selection"], single["selection"]);

        let copy = unique_name("selective_parallel");
        let id = parallel["id"].as_str().unwrap();
        let (out, _) = pgkeep.restore(&[id, "--target-db", &copy, "--jobs", "2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut expected = record_counts(&single);
        expected.insert(SESSIONS.to_owned(), 0);
        assert_eq!(
            counts_by_name(&cluster, &copy).unwrap(),
            expected,
            "{selection:?}"
        );
    }
}

#[test]
fn selective_patterns_are_arguments_not_options_and_unknown_includes_fail() {
    let cluster = PgCluster::start().unwrap();
    let db = database(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));

    // Patterns that look like options or shell stay patterns: they match nothing, nothing
    // is written where they point (pgkeep and pg_dump run in `dir`), and the backup is whole.
    let dir = pgkeep.dir.path();
    let out = pgkeep
        .command()
        .current_dir(dir)
        .args([
            "backup",
            "--json",
            "--exclude-table=--file=owned",
            "--exclude-schema=x; touch owned",
            "--exclude-table-data=$(touch owned)",
            "--exclude-schema=-n",
            "--exclude-table",
            "'; DROP TABLE public.orders; --",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let backup: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !dir.join("owned").exists(),
        "a pattern became an option or a command"
    );
    assert_eq!(
        record_counts(&backup),
        counts_by_name(&cluster, &db).unwrap(),
        "nothing matched, everything was backed up"
    );
    assert_eq!(
        backup["selection"]["exclude_tables"],
        json!(["--file=owned", "'; DROP TABLE public.orders; --"])
    );
    assert_eq!(
        backup["selection"]["exclude_schemas"],
        json!(["x; touch owned", "-n"])
    );

    // An include pattern that matches nothing fails the backup (an empty backup would verify).
    let (out, record) = pgkeep.backup(&["--schema", "no_such_schema"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("no_such_schema"), "{}", stderr(&out));
    assert_eq!(record["status"], "failed");
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("no matching schemas"),
        "{record:#}"
    );

    // Only some tables: exactly those.
    let only = pgkeep.backup_ok(&["--table", "public.customers", "--table", "app.items"]);
    assert_eq!(
        record_counts(&only).keys().cloned().collect::<Vec<_>>(),
        ["app.items", "public.customers"]
    );

    // Bad patterns are refused before anything is recorded.
    let before = pgkeep.list().len();
    for bad in [&["--exclude-schema", ""][..], &["--table", "a\nb"]] {
        let out = pgkeep.run(&[&["backup"][..], bad].concat());
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("pattern"), "{}", stderr(&out));
    }
    assert_eq!(pgkeep.list().len(), before);
}

#[test]
fn labels_find_backups_and_keep_them_through_prune_and_bad_labels_are_refused() {
    let cluster = PgCluster::start().unwrap();
    let db = database(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let v1 = pgkeep.backup_ok(&["--label", "release=v1", "--label", "team=ops"]);
    let v2 = pgkeep.backup_ok(&["--kind", "pre-migration", "--label", "release=v2"]);
    let plain = pgkeep.backup_ok(&[]);
    let id = |r: &Value| r["id"].as_str().unwrap().to_owned();

    let listed = |args: &[&str]| -> Vec<String> {
        let out = pgkeep.run_ok(&[&["list", "--json"][..], args].concat());
        serde_json::from_str::<Vec<Value>>(&out)
            .unwrap()
            .iter()
            .map(id)
            .collect()
    };
    assert_eq!(listed(&["--label", "release"]), [id(&v2), id(&v1)]);
    assert_eq!(listed(&["--label", "release=v1"]), [id(&v1)]);
    assert_eq!(listed(&["--label", "team=ops", "--limit", "1"]), [id(&v1)]);
    assert!(listed(&["--label", "release=v3"]).is_empty());
    assert_eq!(listed(&[]).len(), 3);
    let table = pgkeep.run_ok(&["list"]);
    assert!(table.lines().next().unwrap().ends_with("LABELS"), "{table}");
    assert!(table.contains("release=v1, team=ops"), "{table}");
    assert_eq!(pgkeep.show(&id(&v2))["kind"], "pre_migration");

    // Bad labels: a clear error, usage exit code, nothing recorded.
    for (args, needle) in [
        (&["backup", "--label", "Release=v1"][..], "upper-case"),
        (&["backup", "--label", "release"], "has no '='"),
        (
            &["backup", "--label", "a=1", "--label", "a=2"],
            "more than once",
        ),
        (
            &["backup", "--label", "note=tab\there"],
            "control character",
        ),
        (&["list", "--label", "Bad"], "upper-case"),
        (
            &["prune", "--keep-last", "1", "--keep-label=-x"],
            "does not start",
        ),
    ] {
        let out = pgkeep.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(listed(&[]).len(), 3);

    // Prune keeps what carries a kept label, and says why.
    let out = pgkeep.run_ok(&[
        "prune",
        "--dry-run",
        "--json",
        "--keep-last",
        "1",
        "--keep-label",
        "release=v1",
    ]);
    let plan: Value = serde_json::from_str(&out).unwrap();
    let decisions: BTreeMap<String, Value> = plan["plan"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d.clone()))
        .collect();
    assert_eq!(decisions[&id(&plain)]["action"], "keep");
    assert_eq!(decisions[&id(&v1)]["action"], "keep");
    assert_eq!(decisions[&id(&v1)]["reasons"], json!(["label release=v1"]));
    assert_eq!(decisions[&id(&v2)]["action"], "remove");
    // The same from the environment, then for real.
    let out = pgkeep
        .command()
        .args(["prune", "--keep-last", "1"])
        .env("PGKEEP_KEEP_LABELS", "release=v1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let statuses: BTreeMap<String, String> = pgkeep
        .list()
        .iter()
        .map(|r| (id(r), r["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(statuses[&id(&v1)], "completed");
    assert_eq!(statuses[&id(&plain)], "completed");
    assert_eq!(statuses[&id(&v2)], "deleted");
}
