//! The whole server (`backup --all-databases`, `restore --run`) end to end: real clusters, the
//! real binary. A run's databases and roles come back on a brand-new empty cluster with their
//! owners and grants; a role that cannot read pg_authid still backs up (without passwords);
//! one database failing fails only its own backup.

use std::collections::BTreeMap;
use std::process::Output;

use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::PgCluster;
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// Three databases; `appowner` owns tables in two of them, `connector` may only CONNECT to
/// `misc`, `connector` is a member of `readers`, and `app_one` has a database-level setting.
fn source_server(cluster: &PgCluster) {
    cluster
        .psql(
            "postgres",
            "CREATE ROLE appowner LOGIN PASSWORD 'owner-secret';
             CREATE ROLE readers NOLOGIN CONNECTION LIMIT 3;
             CREATE ROLE connector LOGIN PASSWORD 'connector-secret';
             GRANT readers TO connector;
             CREATE DATABASE app_one OWNER appowner;
             CREATE DATABASE app_two;
             CREATE DATABASE misc;
             REVOKE CONNECT ON DATABASE misc FROM PUBLIC;
             GRANT CONNECT ON DATABASE misc TO connector;
             ALTER DATABASE app_one SET work_mem = '8MB';
             ALTER ROLE connector IN DATABASE app_two SET search_path = app, public;",
        )
        .unwrap();
    cluster
        .psql(
            "app_one",
            "CREATE TABLE orders (id int PRIMARY KEY, note text);
             INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1234) g;
             ALTER TABLE orders OWNER TO appowner;
             GRANT SELECT ON orders TO readers;",
        )
        .unwrap();
    cluster
        .psql(
            "app_two",
            "CREATE SCHEMA app;
             CREATE TABLE app.items (id int PRIMARY KEY);
             INSERT INTO app.items SELECT generate_series(1, 321);
             ALTER TABLE app.items OWNER TO appowner;
             GRANT USAGE ON SCHEMA app TO readers;
             GRANT SELECT, UPDATE ON app.items TO readers;
             CREATE TABLE plain (v text);
             INSERT INTO plain VALUES ('a'), ('b');",
        )
        .unwrap();
    cluster
        .psql(
            "misc",
            "CREATE TABLE notes (id int);
             INSERT INTO notes SELECT generate_series(1, 50);
             GRANT SELECT ON notes TO connector;",
        )
        .unwrap();
}

/// Every ordinary table of `database`: rows, owner and grants (sorted ACL entries).
fn tables(cluster: &PgCluster, database: &str) -> BTreeMap<String, (i64, String, String)> {
    let counts = cluster.table_counts(database).unwrap();
    let out = cluster
        .psql(
            database,
            "SELECT coalesce(json_object_agg(n.nspname || '.' || c.relname,
                        json_build_array(pg_get_userbyid(c.relowner),
                          coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text)
                                    FROM unnest(c.relacl) a), ''))), '{}')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema');",
        )
        .unwrap();
    let meta: BTreeMap<String, (String, String)> = serde_json::from_str(out.trim()).unwrap();
    counts
        .into_iter()
        .map(|((schema, table), rows)| {
            let key = format!("{schema}.{table}");
            let (owner, acl) = meta[&key].clone();
            (key, (rows, owner, acl))
        })
        .collect()
}

/// A database's owner, sorted ACL entries and settings (its own and its roles').
fn database_globals(cluster: &PgCluster, database: &str) -> String {
    cluster
        .psql(
            "postgres",
            &format!(
                "SELECT json_build_array(pg_get_userbyid(d.datdba),
                    coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.datacl) a), ''),
                    coalesce((SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ';'), ',' ORDER BY 1)
                              FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
                              WHERE s.setdatabase = d.oid), ''))
                 FROM pg_database d WHERE d.datname = '{database}';"
            ),
        )
        .unwrap()
        .trim()
        .to_owned()
}

/// A role's attributes and memberships.
fn role(cluster: &PgCluster, name: &str) -> String {
    cluster
        .psql(
            "postgres",
            &format!(
                "SELECT json_build_array(r.rolcanlogin, r.rolconnlimit, r.rolsuper, r.rolcreatedb,
                    ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                          WHERE m.member = r.oid ORDER BY 1))
                 FROM pg_roles r WHERE r.rolname = '{name}';"
            ),
        )
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_run_restores_onto_a_new_empty_cluster_with_owners_grants_and_settings() {
    let source = PgCluster::start().unwrap();
    source_server(&source);
    let pgkeep = Pgkeep::new().database_url(source.url("postgres"));

    let out = pgkeep.run(&["backup", "--all-databases", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = json(&out);
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let names: Vec<&str> = run["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["database"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app_one", "app_two", "misc", "postgres"]);
    assert_eq!(run["globals"]["status"], "completed", "{run:#}");
    assert_eq!(run["role_passwords"], true);
    assert_eq!(run["failed"], serde_json::json!([]));

    // Every backup of the run carries its id; the globals one is told apart.
    let listed: Value =
        serde_json::from_str(&pgkeep.run_ok(&["list", "--run", &run_id, "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|r| r["run_id"] == run_id.as_str()));
    let globals: Vec<&Value> = listed.iter().filter(|r| r["globals"].is_object()).collect();
    assert_eq!(globals.len(), 1);
    assert_eq!(globals[0]["database"], "@globals");
    let text = pgkeep.run_ok(&["show", globals[0]["id"].as_str().unwrap()]);
    assert!(
        text.contains(&format!("run:             {run_id}")),
        "{text}"
    );
    let script = pgkeep.run_ok(&["cat", globals[0]["id"].as_str().unwrap()]);
    assert!(script.contains("CREATE ROLE appowner"), "{script}");
    assert!(
        script.contains("GRANT CONNECT ON DATABASE \"misc\" TO \"connector\""),
        "{script}"
    );

    // A brand-new cluster, where `readers` already exists with other attributes.
    let target = PgCluster::start().unwrap();
    target
        .psql(
            "postgres",
            "CREATE ROLE readers NOLOGIN CONNECTION LIMIT 7;",
        )
        .unwrap();
    let readers_before = role(&target, "readers");
    let restore = |args: &[&str]| {
        let mut cmd = pgkeep.command();
        cmd.env("PGKEEP_TARGET_URL", target.url("postgres"))
            .args(["restore", "--run", &run_id, "--json"])
            .args(args);
        cmd.output().unwrap()
    };

    // `postgres` exists there: refused, nothing changed.
    let out = restore(&[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"postgres\" already exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(role(&target, "appowner"), "");

    // The plan, then the restore.
    let out = restore(&["--exclude", "postgres", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = json(&out);
    assert_eq!(plan["dry_run"], true);
    // `readers` and the bootstrap superuser exist there: kept as they are.
    let kept = plan["globals"]["roles_kept"].as_array().unwrap();
    assert!(kept.contains(&Value::from("readers")), "{plan:#}");
    assert!(!kept.contains(&Value::from("appowner")), "{plan:#}");
    assert!(plan["globals"]["roles_created"]
        .as_array()
        .unwrap()
        .contains(&Value::from("appowner")));
    let planned: Vec<(&str, &str)> = plan["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["database"].as_str().unwrap(),
                d["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        planned,
        [
            ("app_one", "create_new"),
            ("app_two", "create_new"),
            ("misc", "create_new")
        ]
    );
    assert_eq!(target.database_names().unwrap(), ["postgres"]);
    assert_eq!(role(&target, "appowner"), "");

    let out = restore(&["--exclude", "postgres"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["failed"], serde_json::json!([]), "{report:#}");

    for db in ["app_one", "app_two", "misc"] {
        assert_eq!(tables(&target, db), tables(&source, db), "{db}");
        assert!(!tables(&target, db).is_empty());
        assert_eq!(
            database_globals(&target, db),
            database_globals(&source, db),
            "{db}"
        );
    }
    assert_eq!(role(&target, "appowner"), role(&source, "appowner"));
    assert_eq!(role(&target, "connector"), role(&source, "connector"));
    assert_eq!(
        role(&target, "readers"),
        readers_before,
        "an existing role was changed"
    );
    // connector can connect to misc and read its table with the restored password.
    let rows = target
        .command("psql")
        .env("PGPASSWORD", "connector-secret")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(target.url_as("connector", "connector-secret", "misc"))
        .args(["-c", "SELECT count(*) FROM notes"])
        .output()
        .unwrap();
    assert!(rows.status.success(), "{}", stderr(&rows));
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "50");
}

#[test]
fn a_role_without_pg_authid_backs_up_the_server_without_passwords() {
    let source = PgCluster::start().unwrap();
    source_server(&source);
    // What an RDS master user has: no superuser and no pg_authid, but CREATEROLE, CREATEDB,
    // membership in the roles it made, and reads granted on the rest.
    let password = source.create_role("master", "CREATEROLE CREATEDB").unwrap();
    source
        .psql(
            "postgres",
            "GRANT appowner, readers, connector TO master;
             GRANT CONNECT ON DATABASE misc TO master;",
        )
        .unwrap();
    source
        .psql(
            "app_two",
            "GRANT USAGE ON SCHEMA app TO master; GRANT SELECT ON plain TO master;",
        )
        .unwrap();
    source
        .psql("misc", "GRANT SELECT ON notes TO master;")
        .unwrap();
    let readable = source
        .command("psql")
        .args(["-X", "-At", "-d"])
        .arg(source.url_as("master", &password, "postgres"))
        .args(["-c", "SELECT has_table_privilege('pg_authid', 'SELECT')"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&readable.stdout).trim(), "f");
    let pgkeep = Pgkeep::new().database_url(source.url_as("master", &password, "postgres"));

    let out = pgkeep.run(&["backup", "--all-databases"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("role passwords: left out"), "{text}");
    assert!(
        stderr(&out).contains("role passwords were left out"),
        "{}",
        stderr(&out)
    );

    let records: Value = serde_json::from_str(&pgkeep.run_ok(&["list", "--json"])).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 5);
    assert!(
        records.iter().all(|r| r["status"] == "completed"),
        "{records:#?}"
    );
    let globals = records.iter().find(|r| r["globals"].is_object()).unwrap();
    assert_eq!(globals["globals"]["role_passwords"], false);
    let script = pgkeep.run_ok(&["cat", globals["id"].as_str().unwrap()]);
    assert!(script.contains("CREATE ROLE appowner"), "{script}");
    assert!(!script.contains("owner-secret") && !script.contains("SCRAM-SHA-256$"));
    assert!(script.contains("role passwords: left out"), "{script}");
}

#[test]
fn one_database_failing_fails_only_its_backup_and_the_run_names_it() {
    let source = PgCluster::start().unwrap();
    let password = source.create_role("runner", "").unwrap();
    for db in ["good_one", "good_two", "bad"] {
        source.create_database(db).unwrap();
        source
            .psql(
                db,
                "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10);",
            )
            .unwrap();
    }
    source
        .psql("good_one", "GRANT SELECT ON t TO runner;")
        .unwrap();
    source
        .psql("good_two", "GRANT SELECT ON t TO runner;")
        .unwrap();
    // `bad`'s table is not readable by the backing-up role: pg_dump fails there.
    let pgkeep = Pgkeep::new().database_url(source.url_as("runner", &password, "postgres"));

    let out = pgkeep.run(&[
        "backup",
        "--all-databases",
        "--exclude",
        "postgres",
        "--json",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("1 of 4 backups failed: bad"),
        "{}",
        stderr(&out)
    );
    let run = json(&out);
    assert_eq!(run["failed"], serde_json::json!(["bad"]));
    let by_name: BTreeMap<&str, &Value> = run["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["database"].as_str().unwrap(), m))
        .collect();
    assert_eq!(by_name["bad"]["status"], "failed");
    assert!(
        by_name["bad"]["error"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{run:#}"
    );
    assert_eq!(by_name["good_one"]["status"], "completed");
    assert_eq!(by_name["good_two"]["status"], "completed");
    assert_eq!(run["globals"]["status"], "completed");

    // The catalog says the same, by run.
    let run_id = run["run_id"].as_str().unwrap();
    let listed: Value =
        serde_json::from_str(&pgkeep.run_ok(&["list", "--run", run_id, "--json"])).unwrap();
    let statuses: BTreeMap<&str, &str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["database"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([
            ("@globals", "completed"),
            ("bad", "failed"),
            ("good_one", "completed"),
            ("good_two", "completed"),
        ])
    );
}
