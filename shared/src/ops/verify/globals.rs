//! Proving a globals backup (a whole-server run's roles, tablespaces and database settings):
//! it is a script, not an archive, so it is read whole (checksum, every chunk), split into
//! statements, and compared with the manifest: every role the manifest lists has its `CREATE
//! ROLE` and its attributes in `ALTER ROLE … WITH`, every membership its `GRANT`, every
//! database its owner, and there is no role the manifest does not list. When the scratch
//! server's role is a superuser, the role statements also run there inside a transaction that
//! is rolled back (roles that exist there are left out), so the server itself has accepted
//! them; nothing of the scratch server changes.

use std::collections::BTreeSet;
use std::time::Instant;

use tokio::io::AsyncReadExt;

use super::{Findings, Outcome};
use crate::backends::Services;
use crate::globals::{self, Statement};
use crate::model::{BackupRecord, GlobalsInfo, VerificationResult};
use crate::ops::replay;
use crate::ops::scratch::AdminConnection;
use crate::ops::{Error, ErrorKind};

pub(super) async fn attempt(
    services: &Services,
    server: &AdminConnection,
    record: &BackupRecord,
    info: &GlobalsInfo,
    findings: &mut Findings,
) -> Outcome {
    let manifest = match replay::read_manifest(services, record).await {
        Ok(m) => m,
        Err(failure) => return Outcome::from_read(failure),
    };
    let mut stream = match replay::open_with_header(services, record).await {
        Ok((header, stream)) => {
            let differences = super::manifest::against_record(&manifest, record, &header);
            if !differences.is_empty() {
                return Outcome::manifest_differs(&differences);
            }
            stream
        }
        Err(failure) => return Outcome::from_read(failure),
    };
    let started = Instant::now();
    let mut bytes = Vec::new();
    if let Err(e) = stream.read_to_end(&mut bytes).await {
        let e = Error::from_read("reading the globals backup", e);
        return Outcome::failed(VerificationResult::Unreadable, &e);
    }
    let Ok(script) = String::from_utf8(bytes) else {
        return Outcome::Failed {
            result: VerificationResult::Unreadable,
            reason: "the globals script is not UTF-8 text".into(),
            kind: ErrorKind::Verification,
        };
    };
    let statements = globals::split(&script);
    findings.objects_checked = statements.len() as u64;
    let (missing, extra) = compare(&statements, info);
    findings.missing_objects = missing;
    findings.extra_objects = extra;
    if statements.len() as u64 != info.statements {
        findings.missing_objects.push(format!(
            "{} statements, the manifest says {}",
            statements.len(),
            info.statements
        ));
    }
    if let Err(reason) = rehearse(server, &statements).await {
        return Outcome::Failed {
            result: VerificationResult::RestoreFailed,
            reason,
            kind: ErrorKind::Verification,
        };
    }
    findings.restore_duration_ms = Some(started.elapsed().as_millis() as u64);
    if findings.missing_objects.is_empty() && findings.extra_objects.is_empty() {
        Outcome::Verified
    } else {
        Outcome::Failed {
            result: VerificationResult::Differences,
            reason: format!(
                "the globals script differs from the manifest: missing {}; not in the manifest {}",
                super::summarise(&findings.missing_objects, 5),
                super::summarise(&findings.extra_objects, 5)
            ),
            kind: ErrorKind::Verification,
        }
    }
}

/// What the manifest lists that the script lacks, and what the script holds that the manifest
/// does not list.
fn compare(statements: &[String], info: &GlobalsInfo) -> (Vec<String>, Vec<String>) {
    let mut created = BTreeSet::new();
    let mut attributes = Vec::new();
    let mut memberships = BTreeSet::new();
    let mut owned = BTreeSet::new();
    for s in statements {
        match globals::classify(s) {
            Statement::CreateRole(r) => {
                created.insert(r);
            }
            Statement::Membership { roles, members } => {
                for role in &roles {
                    for member in &members {
                        memberships.insert((member.clone(), role.clone()));
                    }
                }
            }
            Statement::Database(db) if s.contains(" OWNER TO ") => {
                owned.insert(db);
            }
            _ => {}
        }
        if let Some(a) = globals::role_attributes(s) {
            attributes.push(a);
        }
    }
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    for role in &info.roles {
        if !created.contains(&role.name) {
            missing.push(format!("role {}", role.name));
            continue;
        }
        match attributes.iter().rev().find(|a| a.name == role.name) {
            Some(a) => {
                let mut expected = role.clone();
                expected.member_of.clear();
                if *a != expected {
                    missing.push(format!("the attributes of role {}", role.name));
                }
            }
            None => missing.push(format!("the attributes of role {}", role.name)),
        }
        for group in &role.member_of {
            if !memberships.contains(&(role.name.clone(), group.clone())) {
                missing.push(format!("membership of {} in {group}", role.name));
            }
        }
    }
    let listed: BTreeSet<&String> = info.roles.iter().map(|r| &r.name).collect();
    for r in &created {
        if !listed.contains(r) {
            extra.push(format!("role {r}"));
        }
    }
    for db in &info.databases {
        if !owned.contains(db) {
            missing.push(format!("the owner of database {db}"));
        }
    }
    (missing, extra)
}

/// Runs the role statements on the scratch server inside a transaction that is rolled back
/// (when its role is a superuser; else this check is left out): the server accepted them,
/// nothing remains. Roles that exist there are left out.
async fn rehearse(server: &AdminConnection, statements: &[String]) -> Result<(), String> {
    let client = server.client();
    let superuser = client
        .query_one(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    if !superuser {
        tracing::info!("the scratch role is not a superuser: the globals' role statements are compared, not rehearsed");
        return Ok(());
    }
    let existing: BTreeSet<String> = match client
        .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => return Err(format!("listing the scratch server's roles: {e}")),
    };
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| e.to_string())?;
    let mut result = Ok(());
    for s in statements {
        let run = match globals::classify(s) {
            Statement::CreateRole(r) | Statement::AlterRole(r) => !existing.contains(&r),
            Statement::Membership { roles, members } => {
                roles.iter().chain(&members).all(|r| !existing.contains(r))
            }
            _ => false,
        };
        if !run {
            continue;
        }
        if let Err(e) = client.batch_execute(s).await {
            result = Err(format!(
                "the scratch server refused a statement of the globals script: {}",
                crate::postgres::describe(&e)
            ));
            break;
        }
    }
    let _ = client.batch_execute("ROLLBACK").await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RoleInfo;

    fn role(name: &str, login: bool, member_of: &[&str]) -> RoleInfo {
        RoleInfo {
            name: name.into(),
            superuser: false,
            inherit: true,
            createrole: false,
            createdb: false,
            login,
            replication: false,
            bypassrls: false,
            connection_limit: -1,
            member_of: member_of.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_script_is_compared_with_the_manifests_roles_and_databases() {
        let script = globals::split(
            "CREATE ROLE app;\nALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;\n\
             CREATE ROLE readers;\nALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;\n\
             GRANT readers TO app GRANTED BY postgres;\nALTER DATABASE \"shop\" OWNER TO \"app\";",
        );
        let info = GlobalsInfo {
            role_passwords: true,
            roles: vec![role("app", true, &["readers"]), role("readers", false, &[])],
            databases: vec!["shop".into()],
            statements: script.len() as u64,
            connection: None,
        };
        assert_eq!(compare(&script, &info), (vec![], vec![]));

        let mut other = info.clone();
        other.roles[0].login = false;
        other.roles[1].member_of = vec!["app".into()];
        other.roles.push(role("gone", false, &[]));
        other.databases.push("misc".into());
        let (missing, extra) = compare(&script, &other);
        assert_eq!(
            missing,
            [
                "the attributes of role app",
                "membership of readers in app",
                "role gone",
                "the owner of database misc"
            ]
        );
        assert!(extra.is_empty());
        other.roles.retain(|r| r.name != "readers");
        assert_eq!(compare(&script, &other).1, ["role readers"]);
    }
}
