//! Smoke test of the harness itself: a real throwaway cluster, awkward names, sample data,
//! authentication, and clean-up on drop.

use std::time::Instant;

use pgkeep_tests::{load_sample, unique_name, PgCluster, SAMPLE_NOTES_ROWS};

#[tokio::test]
async fn cluster_lifecycle() -> anyhow::Result<()> {
    let t = Instant::now();
    let cluster = PgCluster::start()?;
    eprintln!(
        "cluster started in {:?} on port {} ({})",
        t.elapsed(),
        cluster.port(),
        cluster.bin_dir().display()
    );
    let data_dir = cluster.data_dir().to_path_buf();
    let port = cluster.port();
    assert!(data_dir.join("PG_VERSION").exists());
    assert!(
        !format!("{cluster:?}").contains(cluster.password()),
        "Debug must not show the password"
    );

    // A name that breaks naive quoting anywhere: space, quotes, semicolon, unicode.
    let db = format!("{} it's \"odd\"; ü", unique_name("smoke"));
    cluster.create_database(&db)?;
    assert!(cluster.database_names()?.contains(&db));

    let t = Instant::now();
    load_sample(&cluster, &db, 1)?;
    eprintln!("load_sample(scale 1) took {:?}", t.elapsed());

    let counts = cluster.table_counts(&db)?;
    let get = |table: &str| {
        counts
            .get(&("public".to_string(), table.to_string()))
            .copied()
    };
    assert_eq!(get("pgbench_accounts"), Some(100_000), "{counts:?}");
    assert_eq!(get("pgbench_branches"), Some(1));
    assert_eq!(get("pgbench_tellers"), Some(10));
    assert_eq!(get("pgbench_history"), Some(0));
    assert_eq!(get("notes"), Some(SAMPLE_NOTES_ROWS));
    assert!(counts.keys().all(|(schema, _)| schema == "public"));

    // Partitions count, partitioned parents and other schemas' names come back raw.
    cluster.psql(
        &db,
        r#"CREATE SCHEMA "Odd Schema";
           CREATE TABLE "Odd Schema"."t; x" (v int);
           INSERT INTO "Odd Schema"."t; x" SELECT generate_series(1, 7);
           CREATE TABLE parted (k int) PARTITION BY RANGE (k);
           CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (10);
           INSERT INTO parted SELECT generate_series(0, 4);"#,
    )?;
    let counts = cluster.table_counts(&db)?;
    assert_eq!(
        counts.get(&("Odd Schema".to_string(), "t; x".to_string())),
        Some(&7)
    );
    assert_eq!(
        counts.get(&("public".to_string(), "parted_low".to_string())),
        Some(&5)
    );
    assert!(!counts.contains_key(&("public".to_string(), "parted".to_string())));

    // The notes text survived: newlines, backslashes, unicode, NULLs.
    let probe = cluster.psql(
        &db,
        "SELECT count(*) FILTER (WHERE body LIKE E'%\\n%'), \
                count(*) FILTER (WHERE body LIKE '%\\\\%'), \
                count(*) FILTER (WHERE body LIKE '%🐘%'), \
                count(*) FILTER (WHERE body IS NULL) FROM notes",
    )?;
    let probe: Vec<i64> = probe
        .trim()
        .split('|')
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(probe.iter().all(|&n| n > 0), "{probe:?}");

    // url() percent-encodes the awkward name; tokio-postgres decodes it back.
    let (client, conn) = tokio_postgres::connect(&cluster.url(&db), tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    let row = client.query_one("SELECT current_database()", &[]).await?;
    assert_eq!(row.get::<_, String>(0), db);
    drop(client);
    conn.await??;

    // The server really checks the password (scram over TCP).
    let wrong = format!(
        "host=127.0.0.1 port={port} user={} password=wrong dbname=postgres",
        cluster.user()
    );
    let err = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password must be rejected");
    assert!(
        format!("{err:?}").contains("password authentication failed"),
        "{err:?}"
    );
    let out = cluster
        .command("psql")
        .env("PGPASSWORD", "wrong")
        .args(["-X", "-At", "-c", "SELECT 1", "-d", "postgres"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));

    cluster.drop_database(&db)?;
    assert!(!cluster.database_names()?.contains(&db));
    cluster.drop_database(&db)?; // IF EXISTS

    let t = Instant::now();
    drop(cluster);
    eprintln!("cluster stopped and removed in {:?}", t.elapsed());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after drop"
    );
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    Ok(())
}

#[test]
fn unique_names_differ() {
    let a = unique_name("db");
    let b = unique_name("db");
    assert_ne!(a, b);
    assert!(a.starts_with(&format!("db_{}_", std::process::id())));
}
