//! See the table in `main.rs`: unsafe output (`cat -o`) and ambiguous JWT groups claims.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{unique_name, PgCluster};

/// Every entry of `dir` with its contents ("-> target" for a symlink), to show nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else if meta.is_file() {
                format!(
                    "{:o} {}",
                    meta.mode() & 0o7777,
                    String::from_utf8_lossy(&std::fs::read(e.path()).unwrap())
                )
            } else {
                format!("{:?}", meta.file_type())
            };
            (e.file_name().to_string_lossy().into_owned(), what)
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn refused(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: expected a refusal (exit 2), got {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether an unprivileged user (nobody) can read `path`; `None` when this test cannot switch
/// users (not root, or no `setpriv`).
fn readable_by_nobody(path: &Path) -> Option<bool> {
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return None;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(path)
        .output()
        .ok()?;
    Some(out.status.success())
}

#[test]
fn cat_o_onto_a_symlink_a_device_and_a_planted_temporary_name_replaces_nothing_and_exposes_nothing()
{
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("out");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
        )
        .unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let record = pgkeep.backup_ok(&[]);
    let id = record["id"].as_str().unwrap();
    let expected = pgkeep.command().args(["cat", id]).output().unwrap();
    assert!(expected.status.success());
    let expected = expected.stdout;
    assert!(expected.starts_with(b"PGDMP"));

    // A directory others may traverse, so that "readable by another user" is a real question.
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = work.path();

    // A new name and an existing world-readable file: both end up 0600 with the archive.
    let out = dir.join("new.dump");
    pgkeep.run_ok(&["cat", id, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    assert_eq!(mode(&out), 0o600);
    assert_ne!(
        readable_by_nobody(&out),
        Some(true),
        "others can read the output"
    );
    let existing = dir.join("existing.dump");
    std::fs::write(&existing, b"old").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    // (The check can tell: a world-readable file there is readable by nobody.)
    assert_ne!(
        readable_by_nobody(&existing),
        Some(false),
        "the check itself"
    );
    pgkeep.run_ok(&["cat", id, "-o", existing.to_str().unwrap()]);
    assert_eq!(std::fs::read(&existing).unwrap(), expected);
    assert_eq!(mode(&existing), 0o600);
    assert_ne!(
        readable_by_nobody(&existing),
        Some(true),
        "others can read the output"
    );

    // A symlink (to a file, or dangling) is refused; neither it nor its target changes.
    let victim = dir.join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("link")).unwrap();
    std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
    let before = snapshot(dir);
    for name in ["link", "dangling"] {
        let out = pgkeep.run(&["cat", id, "-o", dir.join(name).to_str().unwrap()]);
        refused(&out, name);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("symbolic link"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A directory likewise.
    refused(
        &pgkeep.run(&["cat", id, "-o", dir.to_str().unwrap()]),
        "a directory",
    );
    assert_eq!(
        snapshot(dir),
        before,
        "a refused cat -o changed the directory"
    );

    // A device is written into, not replaced: /dev/null stays the null device.
    pgkeep.run_ok(&["cat", id, "-o", "/dev/null"]);
    let null = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(null.file_type().is_char_device(), "/dev/null was replaced");
    // A FIFO is written into: its reader gets the archive, and it stays a FIFO.
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::open(&fifo)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            got
        })
    };
    pgkeep.run_ok(&["cat", id, "-o", fifo.to_str().unwrap()]);
    assert_eq!(reader.join().unwrap(), expected);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // Temporary names planted by "another user": every name the old scheme
    // (`.NAME.pgkeep-partial-<pid>`) could pick for the next thousand processes. None is
    // opened, truncated or renamed; the output is still private and complete.
    let planted_dir = dir.join("planted");
    std::fs::create_dir(&planted_dir).unwrap();
    let last_pid: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(std::process::id());
    for pid in last_pid..last_pid + 1000 {
        let name = planted_dir.join(format!(".out.dump.pgkeep-partial-{pid}"));
        std::fs::write(&name, b"planted").unwrap();
        std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let before = snapshot(&planted_dir);
    let out = planted_dir.join("out.dump");
    pgkeep.run_ok(&["cat", id, "-o", out.to_str().unwrap()]);
    let mut after = snapshot(&planted_dir);
    let written = after.remove("out.dump").expect("the output exists");
    assert!(written.starts_with("600 "), "{}", &written[..10]);
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    assert_eq!(
        after, before,
        "a planted temporary name was used or removed"
    );
    assert_ne!(
        readable_by_nobody(&out),
        Some(true),
        "others can read the output"
    );
}

/// `GET /status` through the real status function, once per groups claim: ambiguous claims
/// grant nothing (403, with a log line that says why), exact ones work.
#[test]
fn ambiguous_jwt_groups_claims_are_refused_and_exact_ones_allowed() {
    use std::time::Duration;

    use pgkeep::backends::{BackendConfig, KeyUrl, KeyUse, RepoUrl};
    use pgkeep::model::{BackupId, BackupKind, BackupRecord, BackupStatus, Compression};
    use pgkeep_tests::lambda_runtime::FakeRuntimeApi;
    use pgkeep_tests::{events, function_bin};

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let key = dir.path().join("pgkeep.key");
    // One fresh completed backup, so an allowed caller sees 200 (healthy).
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let services = BackendConfig {
            repo: RepoUrl::File(repo.clone()),
            catalog: None,
            key: KeyUrl::File(key.clone()),
            old_key_files: Vec::new(),
            aws: Default::default(),
        }
        .open(KeyUse::Write)
        .await
        .unwrap();
        let now = chrono::Utc::now();
        let mut r = BackupRecord::start(
            BackupId::generate(now),
            "shop",
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        r.created_at = now;
        services.catalog.insert(&r).await.unwrap();
        r.transition(BackupStatus::Completed).unwrap();
        services
            .catalog
            .update(&r, BackupStatus::InProgress)
            .await
            .unwrap();
    });

    // (claim, value, allowed?)
    let cases: &[(&str, &str, bool)] = &[
        ("groups", "[not admin]", false),
        ("groups", "Domain admin", false),
        ("groups", "readonly,admin", false),
        ("cognito:groups", "Domain admin", false),
        ("cognito:groups", "readonly,admin", false),
        ("cognito:groups", "[readonly,admin]", false),
        ("groups", "[\"not admin\"]", false),
        ("cognito:groups", "[admin ops]", true),
        ("groups", "[\"admin\"]", true),
        ("cognito:groups", "[\"admin\"]", true),
        ("groups", "[admin]", true),
        ("groups", "admin", true),
    ];
    let template = events::load("status", "get-status");
    let mut requests: Vec<serde_json::Value> = cases
        .iter()
        .map(|(claim, value, _)| {
            let mut e = template.clone();
            e["requestContext"]["authorizer"]["jwt"]["claims"] =
                serde_json::json!({ "sub": "alice", *claim: value });
            e
        })
        .collect();
    // Both claims are read: an ambiguous `cognito:groups` does not hide an exact `groups`.
    let mut both = template.clone();
    both["requestContext"]["authorizer"]["jwt"]["claims"] =
        serde_json::json!({ "sub": "alice", "cognito:groups": "[ops]", "groups": "[\"admin\"]" });
    requests.push(both);

    let api = FakeRuntimeApi::start(requests.clone()).unwrap();
    let mut child = api
        .command(&function_bin("status"))
        .env("PGKEEP_REPO", &repo)
        .env("PGKEEP_KEY_FILE", &key)
        .env(
            "PGKEEP_DATABASES",
            r#"{"shop": {"url": "postgresql://u@127.0.0.1:1/shop"}}"#,
        )
        .spawn()
        .unwrap();
    let (answers, log) = api.answers_and_log(&mut child, requests.len(), Duration::from_secs(60));

    let expected: Vec<(String, bool)> = cases
        .iter()
        .map(|(c, v, ok)| (format!("{c}={v}"), *ok))
        .chain([(
            "cognito:groups=[ops] and groups=[\"admin\"]".to_owned(),
            true,
        )])
        .collect();
    for ((what, allowed), (_, answer)) in expected.iter().zip(&answers) {
        let status = &answer.response()["statusCode"];
        if *allowed {
            assert_eq!(status, 200, "{what}: {}\n{log}", answer.response());
        } else {
            assert_eq!(status, 403, "{what}: {}\n{log}", answer.response());
        }
    }
    // Each refused claim says why in the log.
    let refused: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("JWT groups claim refused"))
        })
        .collect();
    for value in ["[not admin]", "Domain admin", "readonly,admin"] {
        assert!(
            refused
                .iter()
                .any(|l| l["fields"]["value"] == value && l["level"] == "WARN"),
            "no log line refusing {value:?} in:\n{log}"
        );
    }
}
