//! End to end on the AWS backends, against the emulator `scripts/test` starts (moto): the real
//! `pgkeep` binary with `s3://`, `dynamodb://` and `kms://` URLs, and the library where a
//! failure has to be injected into an upload.

use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use pgkeep::model::{BackupKind, BackupStatus};
use pgkeep::ops::backup::{backup, BackupRequest};
use pgkeep::postgres::PgTarget;
use pgkeep::store::s3::S3Options;
use pgkeep::testing::PartFault;
use pgkeep_tests::aws::Moto;
use pgkeep_tests::cli::{counts_by_name, record_counts, Pgkeep};
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Rows of random hex: about 42 MB of archive that compresses only about 2:1, so a backup
/// spans several 5 MiB parts.
const NOISE_SQL: &str = "CREATE TABLE public.noise AS
    SELECT g AS id,
           md5(g::text || random()::text) || md5(random()::text) ||
           md5(random()::text) || md5(random()::text) AS payload
    FROM generate_series(1, 300000) g;
    CREATE TABLE public.small (id int primary key, note text);
    INSERT INTO public.small SELECT g, 'note ' || g FROM generate_series(1, 1234) g;";

fn noisy_database(cluster: &PgCluster) -> String {
    let db = unique_name("aws");
    cluster.create_database(&db).unwrap();
    cluster.psql(&db, NOISE_SQL).unwrap();
    db
}

/// `pgkeep` with the three AWS backends selected by URL, pointed at the emulator.
fn pgkeep_on(moto: &Moto, cluster: &PgCluster, db: &str) -> Pgkeep {
    Pgkeep::new()
        .database_url(cluster.url(db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cli_backs_up_to_s3_in_parts_and_restores_through_cat() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = noisy_database(&cluster);
    let expected = counts_by_name(&cluster, &db).unwrap();
    let pgkeep = pgkeep_on(&moto, &cluster, &db).env("PGKEEP_S3_PART_SIZE_MIB", "5");

    let record = pgkeep.backup_ok(&[]);
    assert_eq!(record_counts(&record), expected);
    assert_eq!(record["key_id"], moto.key_arn.as_str(), "{record:#}");
    let id = record["id"].as_str().unwrap();
    let object_key = record["object_key"].as_str().unwrap();

    // Stored byte for byte as recorded, in more than three parts, and nothing left open.
    let (object, etag) = moto.get(&moto.s3_key(object_key));
    assert_eq!(object.len() as u64, record["size_bytes"].as_u64().unwrap());
    assert_eq!(
        hex::encode(Sha256::digest(&object)),
        record["sha256"].as_str().unwrap()
    );
    let parts: u32 = etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a multipart ETag: {etag}"));
    assert!(parts > 3, "{parts} parts");
    assert!(moto.open_uploads().is_empty());
    let manifest_key = object_key.replace(".pgkeep", ".manifest.json");
    let manifest: Value = serde_json::from_slice(&moto.get(&moto.s3_key(&manifest_key)).0).unwrap();
    assert_eq!(manifest["backup"]["id"], id);
    assert_eq!(manifest["encryption"]["key_id"], moto.key_arn.as_str());

    // cat gives the whole archive back; pg_restore of it has exactly the manifest's counts.
    let archive = pgkeep.dir.path().join("out.dump");
    pgkeep.run_ok(&["cat", id, "-o", archive.to_str().unwrap()]);
    let archive_len = std::fs::metadata(&archive).unwrap().len();
    assert_eq!(
        archive_len,
        manifest["archive"]["archive_bytes"].as_u64().unwrap()
    );
    let target = unique_name("restored");
    cluster.create_database(&target).unwrap();
    pgkeep.restore_with_cat(&cluster, id, &target).unwrap();
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), expected);

    // The catalog commands read DynamoDB.
    let listed = pgkeep.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["status"], "completed");
    let shown: Value = serde_json::from_str(&pgkeep.run_ok(&["show", id, "--json"])).unwrap();
    assert_eq!(record_counts(&shown), expected);
    let status: Value = serde_json::from_str(&pgkeep.run_ok(&["status", "--json"])).unwrap();
    assert_eq!(status[0]["database"], db.as_str());
    assert_eq!(status[0]["latest_good"]["id"], id);
}

#[test]
fn a_part_failing_mid_upload_leaves_no_upload_open_and_a_failed_record() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = noisy_database(&cluster);
    let services = moto.services(S3Options {
        part_size: pgkeep::store::s3::MIN_PART_SIZE,
        fault: Some(PartFault {
            part: 2,
            failures: u32::MAX,
        }),
        ..S3Options::default()
    });
    let mut request = BackupRequest::new(
        PgTarget::parse(&cluster.url(&db)).unwrap(),
        BackupKind::Scheduled,
    );
    request.pg_bin = Some(cluster.bin_dir().to_owned());
    let id = pgkeep::model::BackupId::generate(chrono::Utc::now());
    request.id = Some(id.clone());

    let err = moto
        .runtime
        .block_on(backup(&services, &request, Arc::default()))
        .unwrap_err();
    assert!(err.to_string().contains("part 2 failed"), "{err}");

    assert!(moto.open_uploads().is_empty(), "{:?}", moto.open_uploads());
    let record = moto.runtime.block_on(services.catalog.get(&id)).unwrap();
    // Only the failed record's state object (docs/FORMAT.md) is in the bucket.
    assert_eq!(moto.objects(), vec![moto.s3_key(&record.state_key())]);
    assert_eq!(record.status, BackupStatus::Failed);
    assert!(record.error.unwrap().contains("part 2 failed"));
    // The lease was given back: the next run may start.
    let lease = pgkeep::model::Lease {
        database: db.clone(),
        holder: "next".into(),
        expires_at: chrono::Utc::now() + pgkeep::ops::backup::DEFAULT_LEASE_TTL,
        process: None,
    };
    let held = moto
        .runtime
        .block_on(services.catalog.acquire_lease(&lease, chrono::Utc::now()))
        .unwrap();
    assert_eq!(held, None);
}

/// Waits until one of `children` exits, removes it and returns its output.
fn first_to_exit(children: &mut Vec<Child>) -> Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for i in 0..children.len() {
            if children[i].try_wait().unwrap().is_some() {
                return children.remove(i).wait_with_output().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "neither backup finished");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn of_two_concurrent_dumps_one_runs_and_the_other_names_the_lease_holder() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("lease");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g;",
        )
        .unwrap();
    let pgkeep = pgkeep_on(&moto, &cluster, &db);

    // Hold a lock that pg_dump must wait for, so the dump that gets the lease cannot finish
    // before the other one has tried.
    let (locker, connection) = moto
        .runtime
        .block_on(tokio_postgres::connect(
            &cluster.url(&db),
            tokio_postgres::NoTls,
        ))
        .unwrap();
    moto.runtime.spawn(connection);
    moto.runtime
        .block_on(locker.batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;"))
        .unwrap();

    let spawn = || {
        pgkeep
            .command()
            .args(["backup", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut children = vec![spawn(), spawn()];
    let loser = first_to_exit(&mut children);
    assert_eq!(loser.status.code(), Some(8), "{}", stderr(&loser));
    let message = stderr(&loser);
    // The winner records its run right after taking the lease; wait for that record.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let listed = pgkeep.list();
        if !listed.is_empty() || Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        running.len(),
        1,
        "the refused run records nothing: {running:#?}"
    );
    assert_eq!(running[0]["status"], "in_progress");
    let winner_id = running[0]["id"].as_str().unwrap();
    assert!(
        message.contains(&format!("{winner_id} holds its lease until")),
        "{message}"
    );

    moto.runtime
        .block_on(locker.batch_execute("ROLLBACK"))
        .unwrap();
    let winner = children.pop().unwrap().wait_with_output().unwrap();
    assert!(winner.status.success(), "{}", stderr(&winner));
    let record: Value = serde_json::from_slice(&winner.stdout).unwrap();
    assert_eq!(record["id"], winner_id);
    assert_eq!(record["status"], "completed");
    // The lease was released: the next backup runs.
    pgkeep.backup_ok(&[]);
    assert_eq!(pgkeep.list().len(), 2);
}

/// The object header's JSON (see docs/FORMAT.md): offset 19 holds its length, 23 its start.
fn header_json(object: &[u8]) -> (usize, Value) {
    let len = u32::from_be_bytes(object[19..23].try_into().unwrap()) as usize;
    (len, serde_json::from_slice(&object[23..23 + len]).unwrap())
}

fn with_header_json(object: &[u8], json: &Value) -> Vec<u8> {
    let (old_len, _) = header_json(object);
    let new = serde_json::to_vec(json).unwrap();
    let mut out = object[..19].to_vec();
    out.extend_from_slice(&(new.len() as u32).to_be_bytes());
    out.extend_from_slice(&new);
    out.extend_from_slice(&object[23 + old_len..]);
    out
}

#[test]
fn a_kms_wrapped_key_moved_to_another_backup_does_not_decrypt() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("kms");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    let pgkeep = pgkeep_on(&moto, &cluster, &db);
    let a = pgkeep.backup_ok(&[]);
    let b = pgkeep.backup_ok(&[]);
    let key_of = |r: &Value| moto.s3_key(r["object_key"].as_str().unwrap());
    let (object_a, _) = moto.get(&key_of(&a));
    let (object_b, _) = moto.get(&key_of(&b));
    let (_, header_a) = header_json(&object_a);
    let (_, mut header_b) = header_json(&object_b);
    assert_eq!(header_a["key_id"], moto.key_arn.as_str());
    assert_ne!(header_a["wrapped_key"], header_b["wrapped_key"]);
    // A's wrapped key is a valid KMS ciphertext under the same key...
    assert!(base64::engine::general_purpose::STANDARD
        .decode(header_a["wrapped_key"].as_str().unwrap())
        .is_ok());

    // ...but KMS refuses it for B: the encryption context names backup A.
    header_b["wrapped_key"] = header_a["wrapped_key"].clone();
    moto.put(&key_of(&b), with_header_json(&object_b, &header_b));
    let id_b = b["id"].as_str().unwrap();
    let scratch = pgkeep.dir.path().join("out.dump");
    let scratch = scratch.to_str().unwrap();
    let out = pgkeep.run(&["cat", id_b, "-o", scratch]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not unwrap"), "{}", stderr(&out));

    // Put back, B reads again; A was never affected.
    moto.put(&key_of(&b), object_b);
    pgkeep.run_ok(&["cat", id_b, "-o", scratch]);
    pgkeep.run_ok(&["cat", a["id"].as_str().unwrap(), "-o", scratch]);
}

#[test]
fn the_cli_takes_database_credentials_from_a_secret() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("secret");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 42) g;",
        )
        .unwrap();
    let secret = serde_json::json!({
        "engine": "postgres",
        "username": cluster.user(),
        "password": cluster.password(),
        "host": cluster.host(),
        "port": cluster.port(),
        "dbname": db,
    });
    let arn = moto.secret(&secret.to_string());
    // Local repository and key, credentials from Secrets Manager, no database URL at all.
    let pgkeep = Pgkeep::new()
        .env("PGKEEP_DATABASE_SECRET_ARN", &arn)
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint);
    let (out, record) = pgkeep.backup(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(record["database"], db.as_str());
    assert_eq!(record["row_counts"]["public.t"], 42);
    assert!(!stderr(&out).contains(cluster.password()));

    let missing = Pgkeep::new()
        .env("PGKEEP_DATABASE_SECRET_ARN", "pgkeep/no-such-secret")
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint);
    let out = missing.run(&["backup"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pgkeep/no-such-secret"),
        "{}",
        stderr(&out)
    );
}
