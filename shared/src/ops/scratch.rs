//! Databases pgkeep creates for its own use, and the guarantee that they go away.
//!
//! A verification restores into `pgkeep_verify_<backup id>_<unix seconds>_<random>`, a restore
//! into `pgkeep_restore_<unix seconds>_<random>` before it is renamed to its target. Every such
//! database is held by an [`OwnedDatabase`], which drops it when the run ends, fails, or is
//! abandoned (a dropped future, Ctrl-C: see [`finish_cleanup`]). A crash can still leave one
//! behind; the next run removes those by name: a database of ours with nobody connected and a
//! creation time in its name older than [`STALE_AFTER`].

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::Error;
use crate::model::{sql_ident, BackupId};
use crate::postgres::{describe, server_version, PgError, PgTarget, ServerVersion};

/// Name prefix of verification scratch databases.
pub const VERIFY_PREFIX: &str = "pgkeep_verify_";
/// Name prefix of databases a restore fills before renaming them to their target.
pub const RESTORE_PREFIX: &str = "pgkeep_restore_";
/// How old an unconnected database of ours must be before another run drops it as left over
/// from a crash (younger ones may belong to a run that has not connected yet).
pub const STALE_AFTER: Duration = Duration::from_secs(5 * 60);

/// Which server a connection is to, so that failures say which one is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerRole {
    /// The scratch server verifications restore into.
    Scratch,
    /// The server a restore writes its target database on.
    Target,
}

/// A connection to a server's maintenance database, for creating, dropping and renaming
/// databases.
pub(crate) struct AdminConnection {
    target: PgTarget,
    role: ServerRole,
    client: Client,
    /// The server's version.
    pub version: ServerVersion,
}

impl AdminConnection {
    /// Connects to `target` (any database on the server that is not going to be dropped).
    pub async fn connect(target: &PgTarget, role: ServerRole) -> Result<Self, Error> {
        let wrap = |e: PgError| match role {
            ServerRole::Scratch => Error::Scratch(e),
            ServerRole::Target => Error::Postgres(e),
        };
        let client = target.connect().await.map_err(wrap)?;
        let version = server_version(target, &client).await.map_err(wrap)?;
        Ok(AdminConnection {
            target: target.clone(),
            role,
            client,
            version,
        })
    }

    /// The connection itself, for checks of the caller's own.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The server, without password, for messages.
    pub fn server(&self) -> String {
        self.target.redacted()
    }

    /// The target connecting to `database` on the same server with the same credentials.
    pub fn target_for(&self, database: &str) -> PgTarget {
        self.target.with_database(database)
    }

    fn error(&self, e: &tokio_postgres::Error) -> Error {
        let e = self.target.query_error(e);
        match self.role {
            ServerRole::Scratch => Error::Scratch(e),
            ServerRole::Target => Error::Postgres(e),
        }
    }

    /// Fails with a [`Error::Permission`] unless the connected role may create databases.
    pub async fn require_createdb(&self) -> Result<(), Error> {
        let row = self
            .client
            .query_one(
                "SELECT current_user::text, r.rolcreatedb OR r.rolsuper \
                 FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| self.error(&e))?;
        let (user, allowed): (String, bool) = (row.get(0), row.get(1));
        if allowed {
            return Ok(());
        }
        let what = match self.role {
            ServerRole::Scratch => "restore a backup into a scratch database to verify it",
            ServerRole::Target => "restore into a new database",
        };
        let hint = match self.role {
            ServerRole::Scratch => format!("grant it (ALTER ROLE {} CREATEDB) or point PGKEEP_SCRATCH_URL at a role that has it", sql_ident(&user)),
            ServerRole::Target => format!("grant it (ALTER ROLE {} CREATEDB) or connect as a role that has it", sql_ident(&user)),
        };
        Err(Error::Permission(format!(
            "role {user:?} on {} lacks CREATEDB, which pgkeep needs to {what}: {hint}",
            self.server()
        )))
    }

    /// Whether `database` exists, and if so who owns it and whether the connected role may
    /// drop it (owns it, or is a superuser).
    pub async fn database(&self, database: &str) -> Result<Option<DatabaseInfo>, Error> {
        let row = self
            .client
            .query_opt(
                "SELECT pg_catalog.pg_get_userbyid(d.datdba)::text, \
                        pg_catalog.pg_has_role(current_user, d.datdba, 'MEMBER') \
                        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) \
                 FROM pg_catalog.pg_database d WHERE d.datname = $1",
                &[&database],
            )
            .await
            .map_err(|e| self.error(&e))?;
        Ok(row.map(|r| DatabaseInfo {
            owner: r.get(0),
            can_drop: r.get(1),
        }))
    }

    /// Creates an empty database (from `template0`, so nothing from `template1` gets in the way
    /// of the restore) named `<prefix>[<backup id>_]<unix seconds>_<random>`.
    pub async fn create(
        &self,
        prefix: &'static str,
        backup: Option<&BackupId>,
    ) -> Result<OwnedDatabase, Error> {
        let name = own_name(prefix, backup, Utc::now());
        let sql = format!("CREATE DATABASE {} TEMPLATE template0", sql_ident(&name));
        if let Err(e) = self.client.batch_execute(&sql).await {
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                return Err(Error::Permission(format!(
                    "cannot create a database on {}: {} (the role needs CREATEDB)",
                    self.server(),
                    describe(&e)
                )));
            }
            return Err(self.error(&e));
        }
        tracing::info!(database = %name, server = %self.server(), "created a working database");
        Ok(OwnedDatabase {
            admin: self.target.clone(),
            name,
            armed: true,
        })
    }

    /// `DROP DATABASE … WITH (FORCE)`: ends sessions still connected (ours, autovacuum).
    pub async fn drop_database(&self, database: &str) -> Result<(), Error> {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            sql_ident(database)
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.error(&e))
    }

    /// Renames `from` to `to`. A freshly restored database may still have an autovacuum worker
    /// connected, which blocks a rename; those sessions are ended and the rename retried for up
    /// to half a minute.
    pub async fn rename_database(&self, from: &str, to: &str) -> Result<(), Error> {
        let sql = format!(
            "ALTER DATABASE {} RENAME TO {}",
            sql_ident(from),
            sql_ident(to)
        );
        let mut delay = Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.client.batch_execute(&sql).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.code() == Some(&SqlState::OBJECT_IN_USE)
                        && tokio::time::Instant::now() < deadline =>
                {
                    let _ = self
                        .client
                        .execute(
                            "SELECT pg_catalog.pg_terminate_backend(pid) \
                             FROM pg_catalog.pg_stat_activity \
                             WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
                            &[&from],
                        )
                        .await;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(self.error(&e)),
            }
        }
    }

    /// Gives `database` to `owner` (after a restore replaced a database owned by someone else).
    pub async fn set_owner(&self, database: &str, owner: &str) -> Result<(), Error> {
        let sql = format!(
            "ALTER DATABASE {} OWNER TO {}",
            sql_ident(database),
            sql_ident(owner)
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.error(&e))
    }

    /// Drops the databases named with `prefix` that a crashed run left: nobody connected and
    /// created more than `older_than` before `now`. Returns the names dropped; a database
    /// that cannot be dropped (another role's) is logged and left.
    pub async fn drop_stale(
        &self,
        prefix: &str,
        now: DateTime<Utc>,
        older_than: Duration,
    ) -> Result<Vec<String>, Error> {
        let rows = self
            .client
            .query(
                "SELECT d.datname::text FROM pg_catalog.pg_database d \
                 WHERE pg_catalog.starts_with(d.datname::text, $1) \
                   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.datid = d.oid)",
                &[&prefix],
            )
            .await
            .map_err(|e| self.error(&e))?;
        let older_than = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut dropped = Vec::new();
        for row in rows {
            let name: String = row.get(0);
            let Some(created) = created_at(prefix, &name) else {
                continue;
            };
            if now - created < older_than {
                continue;
            }
            match self.drop_database(&name).await {
                Ok(()) => {
                    tracing::warn!(database = %name, server = %self.server(), "dropped a working database left by an earlier run");
                    dropped.push(name);
                }
                Err(e) => {
                    tracing::warn!(database = %name, error = %e, "could not drop a working database left by an earlier run")
                }
            }
        }
        Ok(dropped)
    }
}

/// What pgkeep needs to know about an existing database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseInfo {
    /// Its owner.
    pub owner: String,
    /// Whether the connected role may drop it.
    pub can_drop: bool,
}

/// A database pgkeep created and drops again: explicitly with [`OwnedDatabase::drop_now`], or,
/// when abandoned, from its `Drop` in the background (await [`finish_cleanup`] before exiting).
pub(crate) struct OwnedDatabase {
    admin: PgTarget,
    name: String,
    armed: bool,
}

impl OwnedDatabase {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A target connecting to it.
    pub fn target(&self) -> PgTarget {
        self.admin.with_database(&self.name)
    }

    /// Drops it now; an error is logged (the next run's stale cleanup gets another chance) and
    /// returned.
    pub async fn drop_now(mut self) -> Result<(), Error> {
        self.armed = false;
        let result = drop_with(&self.admin, &self.name).await;
        if let Err(e) = &result {
            tracing::error!(database = %self.name, error = %e, "could not drop a working database; a later run will");
        }
        result
    }

    /// Keeps it: it has become something else (renamed to a restore's target) or must be
    /// left for a person to rescue.
    pub fn keep(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.name)
    }
}

async fn drop_with(admin: &PgTarget, name: &str) -> Result<(), Error> {
    let conn = AdminConnection::connect(admin, ServerRole::Target).await?;
    conn.drop_database(name).await
}

/// Drops abandoned [`OwnedDatabase`]s still being dropped in the background.
static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

impl Drop for OwnedDatabase {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (admin, name) = (self.admin.clone(), std::mem::take(&mut self.name));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(async move {
                    if let Err(e) = drop_with(&admin, &name).await {
                        tracing::error!(database = %name, error = %e, "could not drop an abandoned working database; a later run will");
                    }
                });
                PENDING.lock().unwrap_or_else(|p| p.into_inner()).push(task);
            }
            Err(_) => {
                tracing::error!(database = %name, "abandoned a working database outside a runtime; a later run will drop it")
            }
        }
    }
}

/// Waits until every working database abandoned by a dropped operation (an interrupted verify
/// or restore) has been dropped. Edges call this before exiting after an interruption.
pub async fn finish_cleanup() {
    let tasks = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|p| p.into_inner()));
    for task in tasks {
        let _ = task.await;
    }
}

/// `<prefix>[<backup id, lowercase, '-' → '_'>_]<unix seconds>_<8 hex digits>`; at most 62
/// bytes, inside PostgreSQL's 63.
fn own_name(prefix: &str, backup: Option<&BackupId>, now: DateTime<Utc>) -> String {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let backup = backup
        .map(|id| format!("{}_", id.as_str().to_ascii_lowercase().replace('-', "_")))
        .unwrap_or_default();
    format!(
        "{prefix}{backup}{}_{}",
        now.timestamp(),
        hex::encode(random)
    )
}

/// The creation time in a name made by [`own_name`]; `None` for any other name.
fn created_at(prefix: &str, name: &str) -> Option<DateTime<Utc>> {
    let rest = name.strip_prefix(prefix)?;
    let mut parts = rest.rsplit('_');
    let random = parts.next()?;
    let seconds = parts.next()?;
    if random.len() != 8 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    DateTime::from_timestamp(seconds.parse().ok()?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn names_fit_postgres_and_carry_their_creation_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 15, 35, 12).unwrap();
        let id: BackupId = "20261124T153512123Z-9f3a1c2b".parse().unwrap();
        let verify = own_name(VERIFY_PREFIX, Some(&id), now);
        assert!(verify.len() <= 63, "{verify}");
        assert!(
            verify.starts_with("pgkeep_verify_20261124t153512123z_9f3a1c2b_"),
            "{verify}"
        );
        assert_eq!(created_at(VERIFY_PREFIX, &verify), Some(now));
        let restore = own_name(RESTORE_PREFIX, None, now);
        assert_eq!(created_at(RESTORE_PREFIX, &restore), Some(now));
        assert_ne!(own_name(RESTORE_PREFIX, None, now), restore);
        assert_eq!(created_at(VERIFY_PREFIX, &restore), None);
    }

    #[test]
    fn other_names_are_never_taken_for_ours() {
        for name in [
            "pgkeep_verify_",
            "pgkeep_verify_shop",
            "pgkeep_verify_1700000000_xyz",
            "pgkeep_verify_1700000000_9F3A1C2B0",
            "pgkeep_verify__9f3a1c2b",
            "shop_1700000000_9f3a1c2b",
        ] {
            assert_eq!(created_at(VERIFY_PREFIX, name), None, "{name}");
        }
    }
}
