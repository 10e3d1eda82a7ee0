//! RDS IAM authentication through the real `pgkeep` binary, against a real PostgreSQL server.
//!
//! No local server can check an RDS auth token, so the server here lets the role in over TLS
//! without checking its password and refuses it without TLS (`PgCluster::enable_tls`): what
//! is shown is that every connection pgkeep makes (its own and pg_dump's, pg_restore's) uses
//! TLS, `require` or `verify-full`, with the token as the password, and that the token never
//! appears in output. The token itself is checked against the reference signer in
//! `pgkeep::postgres::rds_iam`.

use std::process::Output;

use pgkeep_tests::cli::{counts_by_name, record_counts, Pgkeep};
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::Value;

const ROLE: &str = "pgkeep_iam";

/// `pgkeep` with IAM authentication on and fixed AWS credentials (tokens are signed locally;
/// nothing calls AWS).
fn pgkeep_iam(url: &str) -> Pgkeep {
    Pgkeep::new()
        .database_url(url.to_owned())
        .env("PGKEEP_DATABASE_IAM_AUTH", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )
        .env("AWS_SESSION_TOKEN", "session-token-example")
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/pgkeep-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/pgkeep-test")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nothing printed or recorded may carry a token or the credentials it was signed with.
fn assert_no_secret(text: &str) {
    for secret in ["X-Amz-", "wJalrXUtnFEMI", "session-token-example"] {
        assert!(!text.contains(secret), "{secret} shown in: {text}");
    }
}

#[test]
fn iam_authentication_connects_only_over_tls_with_a_token() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("iam");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g;",
        )
        .unwrap();
    cluster
        .psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN SUPERUSER"))
        .unwrap();
    let url = format!("postgresql://{ROLE}@127.0.0.1:{}/{db}", cluster.port());
    let expected = counts_by_name(&cluster, &db).unwrap();

    // A server without TLS is refused: the token is never sent in the clear.
    let pgkeep = pgkeep_iam(&url);
    let (out, record) = pgkeep.backup(&[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    assert_no_secret(&stderr(&out));
    assert_no_secret(&record.to_string());

    // With TLS (`require`: encrypted, the certificate unchecked), backup, verify and restore
    // all connect; the server refuses this role without TLS, so every connection used it.
    let ca = cluster.enable_tls(ROLE).unwrap();
    let record = pgkeep.backup_ok(&[]);
    assert_eq!(record_counts(&record), expected);
    let id = record["id"].as_str().unwrap();
    let (out, verified) = pgkeep.verify(&[id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(verified["status"], "verified");
    let target = unique_name("iam_restored");
    let (out, _) = pgkeep.restore(&[id, "--target-db", &target]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), expected);
    assert_no_secret(&pgkeep.run_ok(&["list", "--json"]));

    // verify-full: the server's certificate must chain to the configured CA and name the host.
    let full = pgkeep_iam(&url).env("PGKEEP_DATABASE_SSL_ROOT_CERT", ca.to_str().unwrap());
    full.backup_ok(&[]);
    let other_ca = pgkeep.dir.path().join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(pgkeep.dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .args(["-days", "1", "-subj", "/CN=another CA"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let wrong = pgkeep_iam(&url).env("PGKEEP_DATABASE_SSL_ROOT_CERT", other_ca.to_str().unwrap());
    let (out, _) = wrong.backup(&[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    assert_no_secret(&stderr(&out));
}

#[test]
fn iam_settings_that_cannot_work_are_refused_before_anything_runs() {
    let with_password = "postgresql://pgkeep_iam:hunter2@127.0.0.1:5432/shop";
    for (pgkeep, needle) in [
        (
            pgkeep_iam("postgresql://pgkeep_iam@127.0.0.1:5432/shop").env(
                "PGKEEP_DATABASE_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:shop",
            ),
            "exclude each other",
        ),
        (pgkeep_iam(with_password), "no password"),
        (
            pgkeep_iam("postgresql://127.0.0.1:5432/shop"),
            "the database user",
        ),
        (
            Pgkeep::new()
                .database_url("postgresql://u@127.0.0.1:5432/shop".into())
                .env("PGKEEP_DATABASE_SSL_ROOT_CERT", "/ca.pem"),
            "PGKEEP_DATABASE_IAM_AUTH=true only",
        ),
    ] {
        let (out, record) = pgkeep.backup(&[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(record, Value::Null, "nothing recorded");
        assert!(pgkeep.stored_files().is_empty());
        assert!(!pgkeep.key.exists(), "not even a key was created");
    }
}
