//! The command and the Lambda functions read the same `PGKEEP_*` variables, and read them
//! alike: one table of every shared variable with a representative value, each parsed through
//! clap (as `pgkeep` does) and through `LambdaSettings::from_lookup` (as the functions do),
//! compared as resolved library values. A variable added to one side only fails the test.
//!
//! Why a child process: clap's `env = ...` reads the process environment and takes no other
//! source, and changing the environment of a test binary whose other tests run on other
//! threads is unsound (a concurrent `getenv` may read freed memory). So each case runs this
//! test binary again, filtered to [`env_probe`] alone, with exactly the case's environment;
//! the probe prints what clap and the resolver made of it, and the parent compares.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command as Process;

use clap::{CommandFactory, FromArgMatches};
use pgkeep::config::{LambdaSettings, RetentionSettings};
use pgkeep::model::CompressionChoice;

use super::{Cli, Command};
use crate::resolve::{env, Resolver};

/// Set in the child: run the probe.
const PROBE: &str = "PGKEEP_TEST_ENV_PROBE";
/// Marks the probe's answer in the child's output.
const ANSWER: &str = "env-probe-answer:";

/// Read by the command only, with why the functions do not.
const CLI_ONLY: &[(&str, &str)] = &[
    (
        "PGKEEP_DATABASE_URL",
        "the functions name their databases in PGKEEP_DATABASES",
    ),
    (
        "PGKEEP_DATABASE_SECRET_ARN",
        "the functions name their databases in PGKEEP_DATABASES",
    ),
    (
        "PGKEEP_PG_BIN",
        "the functions' image puts the client binaries where pgkeep looks",
    ),
    (
        "PGKEEP_SCRATCH_URL",
        "verify takes PGKEEP_SCRATCH_SECRET_ARN",
    ),
    (
        "PGKEEP_STAGING_DIR",
        "restores through the status API do not stage",
    ),
    (
        "PGKEEP_TARGET_URL",
        "`restore --run` (a whole server onto another) is a command, not a function",
    ),
    (
        "PGKEEP_ACTOR",
        "the functions name the API caller or the schedule",
    ),
];

/// Read by the functions only (deployment wiring the command has no use for).
const LAMBDA_ONLY: &[&str] = &[
    "PGKEEP_DATABASES",
    "PGKEEP_SELECTIONS",
    "PGKEEP_ADMIN_GROUP",
    "PGKEEP_DUMP_FUNCTION",
    "PGKEEP_VERIFY_FUNCTION",
    "PGKEEP_SCRATCH_SECRET_ARN",
    "PGKEEP_ALERT_TOPIC_ARN",
    "PGKEEP_ALERT_WEBHOOK_URL",
    "PGKEEP_ALERT_SNS_EVENTS",
    "PGKEEP_ALERT_WEBHOOK_EVENTS",
    "PGKEEP_ALERT_WEBHOOK_FORMAT",
    "PGKEEP_DOWNLOAD_URL_TTL",
    // Where the functions run a database's work (`pgkeep backup` runs it here).
    "PGKEEP_RUNNERS",
    "PGKEEP_FARGATE_AUTO_AFTER",
    "PGKEEP_FARGATE_AUTO_SIZE_MIB",
    "PGKEEP_FARGATE_CLUSTER",
    "PGKEEP_FARGATE_TASK_DEFINITIONS",
    "PGKEEP_FARGATE_SUBNETS",
    "PGKEEP_FARGATE_SECURITY_GROUPS",
];

/// Every variable both read, with a value that is not its default.
const SHARED: &[(&str, &str)] = &[
    ("PGKEEP_REPO", "s3://other-bucket/pgkeep"),
    ("PGKEEP_CATALOG", "dynamodb://pgkeep-catalog"),
    ("PGKEEP_KEY", "kms://alias/other"),
    ("PGKEEP_KEY_FILE", "/etc/pgkeep/pgkeep.key"),
    (
        "PGKEEP_OLD_KEY_FILES",
        "/etc/pgkeep/2024.key, file:///etc/pgkeep/2025.key",
    ),
    ("PGKEEP_AWS_ENDPOINT", "http://127.0.0.1:5000"),
    ("PGKEEP_S3_PART_SIZE_MIB", "32"),
    ("PGKEEP_S3_SSE_KMS_KEY_ID", "alias/s3"),
    ("PGKEEP_DATABASE_IAM_AUTH", "true"),
    (
        "PGKEEP_DATABASE_SSL_ROOT_CERT",
        "/opt/rds/global-bundle.pem",
    ),
    ("PGKEEP_MAX_AGE", "2d"),
    ("PGKEEP_ABANDON_AFTER", "45m"),
    ("PGKEEP_KEEP_LAST", "3"),
    ("PGKEEP_KEEP_HOURLY", "24"),
    ("PGKEEP_KEEP_DAILY", " 7 "),
    ("PGKEEP_KEEP_WEEKLY", "4"),
    ("PGKEEP_KEEP_MONTHLY", "12"),
    ("PGKEEP_KEEP_YEARLY", "2"),
    ("PGKEEP_KEEP_WITHIN", "30d"),
    ("PGKEEP_PRE_RESTORE_KEEP_WITHIN", "3d"),
    ("PGKEEP_KEEP_LABELS", "pinned, release=v2"),
    ("PGKEEP_KEEP_WITHIN_KIND", "scheduled=7d, manual=30d"),
    ("PGKEEP_HEARTBEAT_URL", "https://hc-ping.com/abc-123"),
    ("PGKEEP_JOBS", r#"{"shop": 4}"#),
    ("PGKEEP_COMPRESSION", "zstd:1"),
];

/// What every case starts from: what the functions require.
fn base() -> BTreeMap<String, String> {
    [
        ("PGKEEP_REPO", "/var/pgkeep/repo"),
        ("PGKEEP_KEY", "kms://alias/pgkeep"),
        (
            "PGKEEP_DATABASES",
            r#"{"shop": {"url": "postgresql://backup@shop.internal:5432/shop"}}"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The resolved values both edges produce, or the error, as text.
fn view(
    backends: impl std::fmt::Debug,
    auth: impl std::fmt::Debug,
    retention: impl std::fmt::Debug,
    max_age: impl std::fmt::Debug,
    abandon_after: impl std::fmt::Debug,
    heartbeat: impl std::fmt::Debug,
    (shop_jobs, compression): (u32, CompressionChoice),
) -> String {
    format!("{backends:?} | {auth:?} | {retention:?} | {max_age:?} | {abandon_after:?} | {heartbeat:?} | {shop_jobs} | {compression}")
}

fn lambda_view(vars: &BTreeMap<String, String>) -> String {
    match LambdaSettings::from_lookup(|k| vars.get(k).cloned()) {
        Ok(s) => view(
            s.backends,
            s.database_auth,
            s.retention,
            s.health.max_age,
            s.abandon_after,
            s.alerts.heartbeat_url,
            (s.jobs.get("shop").copied().unwrap_or(1), s.compression),
        ),
        Err(e) => format!("error: {e}"),
    }
}

/// The clap path, in this process's environment (the child's).
fn cli_view() -> Result<String, String> {
    let parse = |sub: &str| {
        let matches = Cli::command()
            .try_get_matches_from(["pgkeep", sub])
            .map_err(|e| e.to_string())?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        Ok::<_, String>((cli, matches))
    };
    let (prune, prune_matches) = parse("prune")?;
    let (status, _) = parse("status")?;
    let (backup, _) = parse("backup")?;
    let Command::Backup(backup_args) = &backup.command else {
        unreachable!()
    };
    let resolver = Resolver::new(&prune, &prune_matches).map_err(|f| f.message)?;
    let backends = resolver.backend_config().map_err(|f| f.message)?;
    let auth = resolver.database().map_err(|f| f.message)?.auth;
    let Command::Prune(prune_args) = &prune.command else {
        unreachable!()
    };
    let retention = prune_args
        .retention
        .resolve(env)
        .map_err(|e| e.to_string())?;
    let Command::Status(status_args) = &status.command else {
        unreachable!()
    };
    let health = status_args.health.resolve().map_err(|e| e.to_string())?;
    let heartbeat = pgkeep::config::heartbeat_url(&env).map_err(|e| e.to_string())?;
    Ok(view(
        backends,
        auth,
        retention,
        health.max_age,
        resolver.abandon_after,
        heartbeat,
        (
            pgkeep::config::jobs_or_setting(None, &env, "shop").map_err(|e| e.to_string())?,
            backup_args.compression,
        ),
    ))
}

/// The child's side: only when the parent asks.
#[test]
fn env_probe() {
    if std::env::var_os(PROBE).is_none() {
        return;
    }
    let answer = cli_view().unwrap_or_else(|e| format!("error: {e}"));
    println!("{ANSWER}{answer}");
}

/// `cli_view` in a child process with exactly `vars` as its environment.
fn cli_view_in(vars: &BTreeMap<String, String>) -> String {
    let out = Process::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "args::tests::env_probe",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .envs(vars)
        .env(PROBE, "1")
        .output()
        .expect("running the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once(ANSWER).map(|(_, answer)| answer))
        .unwrap_or_else(|| {
            panic!(
                "the probe gave no answer: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

/// Every `env = ...` the command declares, in every subcommand, plus what a resolve step
/// reads itself.
fn cli_names() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(name) = arg.get_env() {
                out.insert(name.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut names = BTreeSet::new();
    walk(&Cli::command(), &mut names);
    names.extend(RetentionSettings::LOOKED_UP.iter().map(|s| s.to_string()));
    // Read from the environment only (a credential): see `Resolver::notifier`.
    names.insert(pgkeep::config::HEARTBEAT_URL.to_owned());
    // A JSON object by database: read by `backup` for its database (`jobs_or_setting`).
    names.insert(pgkeep::config::JOBS.to_owned());
    names
}

/// Every variable `from_lookup` asks for while reading a complete configuration.
fn lambda_names() -> BTreeSet<String> {
    let asked = std::cell::RefCell::new(BTreeSet::new());
    let vars = base();
    LambdaSettings::from_lookup(|k| {
        asked.borrow_mut().insert(k.to_owned());
        vars.get(k).cloned()
    })
    .expect("the base configuration is complete");
    asked.into_inner()
}

#[test]
fn the_command_and_the_functions_read_the_same_variables() {
    let cli = cli_names();
    let lambda = lambda_names();
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let cli_only: Vec<&str> = CLI_ONLY.iter().map(|(n, _)| *n).collect();
    let shared: Vec<&str> = SHARED.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        cli.difference(&lambda).cloned().collect::<BTreeSet<_>>(),
        names(&cli_only),
        "read by the command only: add the variable to the functions' settings, or to CLI_ONLY with why"
    );
    assert_eq!(
        lambda.difference(&cli).cloned().collect::<BTreeSet<_>>(),
        names(LAMBDA_ONLY),
        "read by the functions only: add the variable to the command's settings, or to LAMBDA_ONLY"
    );
    assert_eq!(
        cli.intersection(&lambda).cloned().collect::<BTreeSet<_>>(),
        names(&shared),
        "every variable both read has a case in SHARED"
    );
}

#[test]
fn the_command_and_the_functions_read_every_shared_variable_alike() {
    let mut cases: Vec<BTreeMap<String, String>> = vec![base()];
    for (name, value) in SHARED {
        let mut vars = base();
        if *name == "PGKEEP_KEY_FILE" {
            vars.remove("PGKEEP_KEY");
        }
        if *name == "PGKEEP_DATABASE_SSL_ROOT_CERT" {
            vars.insert("PGKEEP_DATABASE_IAM_AUTH".into(), "true".into());
        }
        vars.insert((*name).to_owned(), (*value).to_owned());
        cases.push(vars.clone());
        // Empty counts as unset on both edges (where unset means the same on both: the
        // command has defaults for the repository and the key, the functions do not).
        if !["PGKEEP_REPO", "PGKEEP_KEY", "PGKEEP_KEY_FILE"].contains(name) {
            vars.insert((*name).to_owned(), String::new());
            cases.push(vars);
        }
    }
    // Both a key and a key file from the environment: both refuse.
    let mut both = base();
    both.insert("PGKEEP_KEY_FILE".into(), "/etc/pgkeep/pgkeep.key".into());
    cases.push(both);
    for vars in cases {
        let lambda = lambda_view(&vars);
        let cli = cli_view_in(&vars);
        assert_eq!(cli, lambda, "with {vars:?}");
    }
}
