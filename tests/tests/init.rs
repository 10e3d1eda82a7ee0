//! `pgkeep init` against the emulator (moto), through the real binary: it creates the catalog
//! table as Terraform declares it, checks the bucket and the key without writing to them,
//! changes nothing when run again, refuses a table that differs (naming the difference), and
//! is what pgkeep's error after a lost table points to.

use std::process::Output;

use aws_sdk_dynamodb::types::{PointInTimeRecoveryStatus, TimeToLiveStatus};
use pgkeep_tests::aws::Moto;
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::unique_name;
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pgkeep(moto: &Moto, repo: &str, table: &str, key: &str) -> Pgkeep {
    Pgkeep::new()
        .with_urls(repo, &format!("dynamodb://{table}"), key)
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint)
}

fn init(pgkeep: &Pgkeep) -> Value {
    serde_json::from_str(&pgkeep.run_ok(&["init", "--json"])).expect("init --json is JSON")
}

fn table_exists(moto: &Moto, table: &str) -> bool {
    moto.runtime.block_on(async {
        aws_sdk_dynamodb::Client::new(&moto.config)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .is_ok()
    })
}

#[test]
fn init_creates_the_table_as_terraform_does_and_is_idempotent() {
    let Some(moto) = Moto::start() else { return };
    let table = unique_name("pgkeep-init");
    let pgkeep = pgkeep(&moto, &moto.repo_url(), &table, &moto.key_url());

    let report = init(&pgkeep);
    assert_eq!(report["catalog_step"], "created", "{report:#}");
    assert_eq!(report["repository_step"], "ok");
    assert_eq!(report["key_step"], "ok");
    assert_eq!(report["key_arn"], moto.key_arn.as_str());
    assert!(moto.objects().is_empty(), "init wrote to the bucket");

    let client = aws_sdk_dynamodb::Client::new(&moto.config);
    moto.runtime.block_on(async {
        let described = client
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        assert_eq!(described.deletion_protection_enabled(), Some(true));
        assert_eq!(
            described
                .sse_description()
                .and_then(|s| s.kms_master_key_arn()),
            Some(moto.key_arn.as_str())
        );
        let mut indexes: Vec<&str> = described
            .global_secondary_indexes()
            .iter()
            .filter_map(|i| i.index_name())
            .collect();
        indexes.sort();
        assert_eq!(indexes, ["by_database", "by_status", "by_time"]);
        let ttl = client
            .describe_time_to_live()
            .table_name(&table)
            .send()
            .await
            .unwrap();
        let ttl = ttl.time_to_live_description().unwrap();
        assert_eq!(ttl.attribute_name(), Some("ttl"));
        assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
        let pitr = client
            .describe_continuous_backups()
            .table_name(&table)
            .send()
            .await
            .unwrap();
        assert_eq!(
            pitr.continuous_backups_description()
                .and_then(|d| d.point_in_time_recovery_description())
                .and_then(|p| p.point_in_time_recovery_status()),
            Some(&PointInTimeRecoveryStatus::Enabled)
        );
    });

    // Again: nothing to do. And the catalog works.
    let again = init(&pgkeep);
    assert_eq!(again["catalog_step"], "ok", "{again:#}");
    assert_eq!(pgkeep.list(), Vec::<Value>::new());
    let human = pgkeep.run_ok(&["init"]);
    assert!(
        human.contains(&format!("dynamodb://{table}: ok")),
        "{human}"
    );

    // The table is lost: pgkeep's error names `init`, then `repair`; init brings it back.
    moto.runtime.block_on(async {
        client
            .update_table()
            .table_name(&table)
            .deletion_protection_enabled(false)
            .send()
            .await
            .unwrap();
        client
            .delete_table()
            .table_name(&table)
            .send()
            .await
            .unwrap();
    });
    let out = pgkeep.run(&["list"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("pgkeep init") && err.contains("pgkeep repair"),
        "{err}"
    );
    assert_eq!(init(&pgkeep)["catalog_step"], "created");
}

#[test]
fn init_refuses_a_different_table_and_unusable_buckets_or_keys_and_creates_nothing() {
    let Some(moto) = Moto::start() else { return };

    // The emulator's table was made for tests: no deletion protection (not compared) and an
    // AWS owned key, where init with a KMS key expects that key: named, nothing changed.
    let out = pgkeep(&moto, &moto.repo_url(), &moto.table, &moto.key_url()).run(&["init"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains("differs") && err.contains(&format!("expected the KMS key {}", moto.key_arn)),
        "{err}"
    );

    let table = unique_name("pgkeep-init");
    for (repo, key, needle) in [
        (
            "s3://pgkeep-no-such-bucket/p".to_owned(),
            moto.key_url(),
            "does not exist",
        ),
        (
            moto.repo_url(),
            "kms://alias/pgkeep-no-such-key".to_owned(),
            "does not exist",
        ),
    ] {
        let out = pgkeep(&moto, &repo, &table, &key).run(&["init"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{repo} {key}");
        assert!(err.contains(needle), "{repo} {key}: {err}");
        assert!(!table_exists(&moto, &table), "{repo} {key}: table created");
    }
    assert!(moto.objects().is_empty());
}

/// `pgkeep key id` without FILE, for a KMS key given by its alias: the key's ARN, the id
/// manifests record; a key that does not exist is an error naming it.
#[test]
fn key_id_of_a_kms_key_is_its_arn() {
    let Some(moto) = Moto::start() else { return };
    let kms = pgkeep(&moto, &moto.repo_url(), &moto.table, &moto.key_url());
    assert_eq!(kms.run_ok(&["key", "id"]).trim(), moto.key_arn);
    let shown: Value = serde_json::from_str(&kms.run_ok(&["key", "id", "--json"])).unwrap();
    assert_eq!(shown["key_id"], moto.key_arn.as_str());
    assert_eq!(shown["key"], moto.key_url().as_str());

    let missing = pgkeep(
        &moto,
        &moto.repo_url(),
        &moto.table,
        "kms://alias/pgkeep-missing",
    );
    let out = missing.run(&["key", "id"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("alias/pgkeep-missing"),
        "{}",
        stderr(&out)
    );
}
