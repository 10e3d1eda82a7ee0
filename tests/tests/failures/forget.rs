//! A database that only ever had failed backups (a typo in `--database-url`) is dismissed with
//! `pgkeep forget`: `status` stops listing it; a database with a real backup is refused by
//! name. Locally and with the DynamoDB catalog (moto). See the table in `main.rs`.

use pgkeep::model::AuditEntry;
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{load_sample, unique_name, PgCluster};
use serde_json::Value;

/// `pgkeep status --json` (its exit code and the databases it lists).
fn status(pgkeep: &Pgkeep) -> (Option<i32>, Vec<String>) {
    let out = pgkeep.run(&["status", "--json"]);
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = health
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["database"].as_str().unwrap().to_owned())
        .collect();
    (out.status.code(), names)
}

/// The whole story on one repository: two failed backups of a misspelt database, one good
/// backup of the real one; `forget` refuses the real one (naming its backup), shows the typo's
/// records under `--dry-run`, then removes them; the audit trail (read by `audit`) says who.
/// `real` is created here; `pgkeep`'s database URL names it.
fn forget_a_typo_named(
    pgkeep: &Pgkeep,
    cluster: &PgCluster,
    real: &str,
    audit: impl Fn() -> Vec<AuditEntry>,
) {
    cluster.create_database(real).unwrap();
    load_sample(cluster, real, 1).unwrap();
    let real = real.to_owned();
    let typo = format!("{real}_typo");
    let bin = cluster.bin_dir().to_str().unwrap().to_owned();

    let good = pgkeep.backup_ok(&["--pg-bin", &bin]);
    let mut failed = Vec::new();
    for _ in 0..2 {
        let out = pgkeep
            .command()
            .env("PGKEEP_DATABASE_URL", cluster.url(&typo))
            .args(["backup", "--json", "--pg-bin", &bin])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(6),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let record: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["status"], "failed");
        assert_eq!(record["database"], typo.as_str());
        failed.push(record["id"].as_str().unwrap().to_owned());
    }
    let (code, names) = status(pgkeep);
    assert_eq!(code, Some(11), "the typo makes status unhealthy");
    assert!(names.contains(&typo) && names.contains(&real), "{names:?}");

    // A database with a real backup: refused, naming it, nothing changed.
    let out = pgkeep.run(&["forget", &real]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains(good["id"].as_str().unwrap()), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(
        pgkeep.show(good["id"].as_str().unwrap())["status"],
        "completed"
    );

    // A dry run names the records and changes nothing.
    let dry: Value =
        serde_json::from_str(&pgkeep.run_ok(&["forget", &typo, "--dry-run", "--json"])).unwrap();
    assert_eq!(dry["dry_run"], true);
    let mut listed: Vec<String> = dry["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    failed.sort();
    assert_eq!(listed, failed);
    assert_eq!(status(pgkeep).1.len(), 2);

    let done: Value =
        serde_json::from_str(&pgkeep.run_ok(&["forget", &typo, "--json", "--actor", "dora"]))
            .unwrap();
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["records"].as_array().unwrap().len(), 2);
    let (code, names) = status(pgkeep);
    assert_eq!(names, vec![real.clone()]);
    assert_eq!(code, Some(0), "only the healthy database is left");
    assert!(pgkeep.list().iter().all(|r| r["database"] != typo.as_str()));
    let entry = audit()
        .into_iter()
        .find(|e| e.action == "forget")
        .expect("a forget audit entry");
    assert_eq!(entry.actor, "dora");
    assert_eq!(entry.database, typo);
    assert_eq!(entry.details["records"].as_array().unwrap().len(), 2);

    // Gone from the repository too: a repair does not bring it back.
    pgkeep.run_ok(&["repair", "--json"]);
    assert_eq!(status(pgkeep).1, vec![real.clone()]);

    // Gone: forgetting it again says so (exit 4), and a backup of it starts afresh.
    let again = pgkeep.run(&["forget", &typo]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("no records"), "{stderr}");
}

#[test]
fn forget_dismisses_a_database_whose_every_backup_failed() {
    let cluster = PgCluster::start().unwrap();
    let real = unique_name("real");
    let pgkeep = Pgkeep::new().database_url(cluster.url(&real));
    forget_a_typo_named(&pgkeep, &cluster, &real, || pgkeep.audit());
}

#[test]
fn forget_on_dynamodb() {
    let Some(moto) = pgkeep_tests::aws::Moto::start() else {
        return;
    };
    let cluster = PgCluster::start().unwrap();
    let real = unique_name("real");
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&real))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint);
    let catalog = moto.services(Default::default()).catalog;
    forget_a_typo_named(&pgkeep, &cluster, &real, || {
        moto.runtime
            .block_on(catalog.list_audit(None, 1000))
            .unwrap()
    });
}
