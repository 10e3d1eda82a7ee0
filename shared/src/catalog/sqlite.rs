//! The embedded catalog: one SQLite file, no server to run.
//!
//! SQLite because it is a single durable file with transactions and real indexes, ships inside
//! the binary (rusqlite's bundled build), and is readable with the `sqlite3` shell in an
//! emergency. Each record is stored whole as JSON beside the columns the queries filter on;
//! labels are filtered inside that JSON (`json_each`), so they need no column of their own
//! and the schema is unchanged (version 1). Listings are newest first by the backup's start
//! (`created_at`, then id), the order every "newest" in pgkeep means; a cursor names the last
//! record returned and the next page continues below its start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    check_update, decode_cursor, encode_cursor, encode_cursor_at, AuditPage, AuditQuery, Catalog,
    CatalogError, ListQuery, Page,
};
use chrono::{DateTime, Utc};

use crate::model::{
    format_time, AuditEntry, BackupId, BackupRecord, BackupStatus, Lease, RestoreRun,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS backups (
    id         TEXT PRIMARY KEY,
    database   TEXT NOT NULL,
    status     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS backups_by_database ON backups (database, id);
CREATE INDEX IF NOT EXISTS backups_by_status ON backups (status, id);
CREATE INDEX IF NOT EXISTS backups_by_start ON backups (database, created_at, id);
CREATE TABLE IF NOT EXISTS leases (
    database   TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id       TEXT PRIMARY KEY,
    database TEXT NOT NULL,
    entry    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_database ON audit (database, id);
CREATE TABLE IF NOT EXISTS restores (
    id    TEXT PRIMARY KEY,
    entry TEXT NOT NULL
);
PRAGMA user_version = 1;
";

/// Switches the file to write-ahead logging. SQLite answers "database is locked" at once,
/// without waiting on the busy timeout, while another connection is doing the same to a fresh
/// file, so this waits itself (up to the same 10 s).
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// How long a statement waits for another process's write to finish.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A catalog in a SQLite database file.
#[derive(Clone)]
pub struct SqliteCatalog {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteCatalog {
    /// Opens (creating when missing) the catalog file and its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref().to_owned();
        let fail = |message: String| CatalogError::Backend {
            location: format!("sqlite://{}", path.display()),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(&path).map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        set_wal(&conn).map_err(|e| fail(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail(e.to_string()))?;
        // Creating and upgrading the schema is one write transaction taken up front, so two
        // processes opening a fresh catalog at once (a backup and a `list`) do not both find a
        // column missing and both add it.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| fail(e.to_string()))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| fail(e.to_string()))?;
        if version > 1 {
            return Err(fail(format!(
                "catalog schema version {version} is newer than this pgkeep understands; upgrade pgkeep"
            )));
        }
        tx.execute_batch(SCHEMA).map_err(|e| fail(e.to_string()))?;
        // The lease's holder process (JSON) came later: a nullable column older versions ignore.
        let has_process: bool = tx
            .query_row(
                "SELECT count(*) FROM pragma_table_info('leases') WHERE name = 'process'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| fail(e.to_string()))?
            > 0;
        if !has_process {
            tx.execute_batch("ALTER TABLE leases ADD COLUMN process TEXT")
                .map_err(|e| fail(e.to_string()))?;
        }
        // Who asked for a backup (a copy of the record's `requested_by`) came later still.
        let has_requested_by: bool = tx
            .query_row(
                "SELECT count(*) FROM pragma_table_info('backups') WHERE name = 'requested_by'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| fail(e.to_string()))?
            > 0;
        if !has_requested_by {
            tx.execute_batch("ALTER TABLE backups ADD COLUMN requested_by TEXT")
                .map_err(|e| fail(e.to_string()))?;
        }
        // The whole-server run id came later too: a nullable column (filled from the record
        // JSON of rows written before it), and an index for `list --run`.
        let has_run_id: bool = tx
            .query_row(
                "SELECT count(*) FROM pragma_table_info('backups') WHERE name = 'run_id'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| fail(e.to_string()))?
            > 0;
        if !has_run_id {
            tx.execute_batch(
                "ALTER TABLE backups ADD COLUMN run_id TEXT;
                 UPDATE backups SET run_id = json_extract(record, '$.run_id');",
            )
            .map_err(|e| fail(e.to_string()))?;
        }
        tx.execute_batch("CREATE INDEX IF NOT EXISTS backups_by_run ON backups (run_id, id)")
            .map_err(|e| fail(e.to_string()))?;
        tx.commit().map_err(|e| fail(e.to_string()))?;
        Ok(SqliteCatalog {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, CatalogError> {
        let conn = self.conn.clone();
        let location = self.location();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| CatalogError::Backend {
            location,
            message: format!("catalog task failed: {e}"),
        })?
    }
}

fn backend(location: &str) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
    move |e| CatalogError::Backend {
        location: location.to_owned(),
        message: e.to_string(),
    }
}

fn to_json(record: &BackupRecord) -> String {
    serde_json::to_string(record).expect("records always serialize")
}

fn from_json(location: &str, json: &str) -> Result<BackupRecord, CatalogError> {
    serde_json::from_str(json).map_err(|e| CatalogError::Backend {
        location: location.to_owned(),
        message: format!("unreadable record: {e}"),
    })
}

fn restore_from_json(location: &str, json: &str) -> Result<RestoreRun, CatalogError> {
    serde_json::from_str(json).map_err(|e| CatalogError::Backend {
        location: location.to_owned(),
        message: format!("unreadable restore record: {e}"),
    })
}

#[async_trait]
impl Catalog for SqliteCatalog {
    fn location(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    async fn insert(&self, record: &BackupRecord) -> Result<(), CatalogError> {
        let record = record.clone();
        let location = self.location();
        self.with(move |conn| {
            let inserted = conn
                .execute(
                    "INSERT INTO backups (id, database, status, kind, created_at, record, requested_by, run_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                    params![
                        record.id.as_str(),
                        record.database,
                        record.status.as_str(),
                        record.kind.as_str(),
                        crate::model::format_time(record.created_at),
                        to_json(&record),
                        record.requested_by,
                        record.run_id,
                    ],
                )
                .map_err(backend(&location))?;
            if inserted == 0 {
                return Err(CatalogError::AlreadyExists(record.id.clone()));
            }
            Ok(())
        })
        .await
    }

    async fn replace(&self, record: &BackupRecord) -> Result<(), CatalogError> {
        let record = record.clone();
        let location = self.location();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO backups (id, database, status, kind, created_at, record, requested_by, run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET database = excluded.database,
                   status = excluded.status, kind = excluded.kind,
                   created_at = excluded.created_at, record = excluded.record,
                   requested_by = excluded.requested_by, run_id = excluded.run_id",
                params![
                    record.id.as_str(),
                    record.database,
                    record.status.as_str(),
                    record.kind.as_str(),
                    crate::model::format_time(record.created_at),
                    to_json(&record),
                    record.requested_by,
                    record.run_id,
                ],
            )
            .map_err(backend(&location))?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &BackupId) -> Result<BackupRecord, CatalogError> {
        let id = id.clone();
        let location = self.location();
        self.with(move |conn| {
            let json: Option<String> = conn
                .query_row(
                    "SELECT record FROM backups WHERE id = ?1",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend(&location))?;
            match json {
                Some(json) => from_json(&location, &json),
                None => Err(CatalogError::NotFound(id)),
            }
        })
        .await
    }

    async fn update(
        &self,
        record: &BackupRecord,
        expected: BackupStatus,
    ) -> Result<(), CatalogError> {
        check_update(record, expected)?;
        let record = record.clone();
        let location = self.location();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(backend(&location))?;
            let changed = tx
                .execute(
                    "UPDATE backups SET status = ?1, record = ?2 WHERE id = ?3 AND status = ?4",
                    params![
                        record.status.as_str(),
                        to_json(&record),
                        record.id.as_str(),
                        expected.as_str()
                    ],
                )
                .map_err(backend(&location))?;
            if changed == 0 {
                let found: Option<String> = tx
                    .query_row(
                        "SELECT status FROM backups WHERE id = ?1",
                        [record.id.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend(&location))?;
                return Err(match found {
                    None => CatalogError::NotFound(record.id.clone()),
                    Some(found) => CatalogError::Conflict {
                        id: record.id.clone(),
                        expected,
                        found: found.parse().map_err(|message| CatalogError::Backend {
                            location: location.clone(),
                            message,
                        })?,
                    },
                });
            }
            tx.commit().map_err(backend(&location))
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, CatalogError> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let query = query.clone();
        let location = self.location();
        self.with(move |conn| {
            let limit = query.limit.map(|l| l as i64 + 1).unwrap_or(-1);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT record FROM backups
                     WHERE (?1 IS NULL OR database = ?1)
                       AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR (created_at, id) < (?3, ?8))
                       AND (?5 IS NULL OR EXISTS (
                             SELECT 1 FROM json_each(record, '$.labels') AS l
                             WHERE l.key = ?5 AND (?6 IS NULL OR l.value = ?6)))
                       AND (?7 IS NULL OR kind = ?7)
                       AND (?9 IS NULL OR run_id = ?9)
                     ORDER BY created_at DESC, id DESC LIMIT ?4",
                )
                .map_err(backend(&location))?;
            let label_key = query.label.as_ref().map(|l| l.key.as_str());
            let label_value = query.label.as_ref().and_then(|l| l.value.as_deref());
            let rows = stmt
                .query_map(
                    params![
                        query.database,
                        query.status.map(|s| s.as_str()),
                        after.as_ref().map(|a| a.start.as_str()),
                        limit,
                        label_key,
                        label_value,
                        query.kind.map(|k| k.as_str()),
                        after.as_ref().map(|a| a.id.as_str()),
                        query.run_id
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(backend(&location))?;
            let mut records = Vec::new();
            for json in rows {
                records.push(from_json(&location, &json.map_err(backend(&location))?)?);
            }
            let mut next_cursor = None;
            if let Some(limit) = query.limit {
                if records.len() > limit {
                    records.truncate(limit);
                    next_cursor = records.last().map(encode_cursor);
                }
            }
            Ok(Page {
                records,
                next_cursor,
            })
        })
        .await
    }

    async fn acquire_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, CatalogError> {
        let lease = lease.clone();
        let location = self.location();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend(&location))?;
            if let Some(current) = Self::read_lease(&tx, &lease.database, &location)? {
                if current.expires_at > now {
                    return Ok(Some(current));
                }
            }
            tx.execute(
                "INSERT INTO leases (database, holder, expires_at, process) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (database) DO UPDATE SET holder = ?2, expires_at = ?3, process = ?4",
                params![
                    lease.database,
                    lease.holder,
                    format_time(lease.expires_at),
                    Self::process_json(&lease)
                ],
            )
            .map_err(backend(&location))?;
            tx.commit().map_err(backend(&location))?;
            Ok(None)
        })
        .await
    }

    async fn release_lease(&self, database: &str, holder: &str) -> Result<(), CatalogError> {
        let (database, holder) = (database.to_owned(), holder.to_owned());
        let location = self.location();
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM leases WHERE database = ?1 AND holder = ?2",
                params![database, holder],
            )
            .map_err(backend(&location))?;
            Ok(())
        })
        .await
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<bool, CatalogError> {
        let lease = lease.clone();
        let location = self.location();
        self.with(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE leases SET expires_at = ?3, process = ?4
                     WHERE database = ?1 AND holder = ?2",
                    params![
                        lease.database,
                        lease.holder,
                        format_time(lease.expires_at),
                        Self::process_json(&lease)
                    ],
                )
                .map_err(backend(&location))?;
            Ok(changed == 1)
        })
        .await
    }

    async fn get_lease(&self, database: &str) -> Result<Option<Lease>, CatalogError> {
        let database = database.to_owned();
        let location = self.location();
        self.with(move |conn| Self::read_lease(conn, &database, &location))
            .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), CatalogError> {
        let entry = entry.clone();
        let location = self.location();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO audit (id, database, entry) VALUES (?1, ?2, ?3)",
                params![
                    entry.id.as_str(),
                    entry.database,
                    serde_json::to_string(&entry).expect("audit entries serialize")
                ],
            )
            .map_err(backend(&location))?;
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        database: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, CatalogError> {
        let database = database.map(str::to_owned);
        let location = self.location();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT entry FROM audit WHERE (?1 IS NULL OR database = ?1)
                     ORDER BY id DESC LIMIT ?2",
                )
                .map_err(backend(&location))?;
            let rows = stmt
                .query_map(params![database, limit as i64], |r| r.get::<_, String>(0))
                .map_err(backend(&location))?;
            let mut out = Vec::new();
            for json in rows {
                let json = json.map_err(backend(&location))?;
                out.push(
                    serde_json::from_str(&json).map_err(|e| CatalogError::Backend {
                        location: location.clone(),
                        message: format!("unreadable audit entry: {e}"),
                    })?,
                );
            }
            Ok(out)
        })
        .await
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, CatalogError> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let query = query.clone();
        let location = self.location();
        self.with(move |conn| {
            let limit = query.limit.map(|l| l as i64 + 1).unwrap_or(-1);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT entry FROM audit WHERE (?1 IS NULL OR database = ?1)
                       AND (?2 IS NULL OR id >= ?2) AND (?3 IS NULL OR id < ?3)
                     ORDER BY id DESC LIMIT ?4",
                )
                .map_err(backend(&location))?;
            let rows = stmt
                .query_map(
                    params![
                        query.database,
                        query.since.map(super::id_floor),
                        after.as_ref().map(|a| a.id.as_str()),
                        limit
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(backend(&location))?;
            let mut entries: Vec<AuditEntry> = Vec::new();
            for json in rows {
                let json = json.map_err(backend(&location))?;
                entries.push(
                    serde_json::from_str(&json).map_err(|e| CatalogError::Backend {
                        location: location.clone(),
                        message: format!("unreadable audit entry: {e}"),
                    })?,
                );
            }
            let mut next_cursor = None;
            if let Some(limit) = query.limit {
                if entries.len() > limit {
                    entries.truncate(limit);
                    next_cursor = entries.last().map(|e| encode_cursor_at(e.at, &e.id));
                }
            }
            Ok(AuditPage {
                entries,
                next_cursor,
            })
        })
        .await
    }

    async fn put_restore(&self, run: &RestoreRun) -> Result<(), CatalogError> {
        let run = run.clone();
        let location = self.location();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO restores (id, entry) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET entry = excluded.entry",
                params![
                    run.id.as_str(),
                    serde_json::to_string(&run).expect("restore records serialize")
                ],
            )
            .map_err(backend(&location))?;
            Ok(())
        })
        .await
    }

    async fn get_restore(&self, id: &BackupId) -> Result<RestoreRun, CatalogError> {
        let id = id.clone();
        let location = self.location();
        self.with(move |conn| {
            let json: Option<String> = conn
                .query_row(
                    "SELECT entry FROM restores WHERE id = ?1",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend(&location))?;
            match json {
                Some(json) => restore_from_json(&location, &json),
                None => Err(CatalogError::RestoreNotFound(id)),
            }
        })
        .await
    }

    async fn list_restores(&self, limit: usize) -> Result<Vec<RestoreRun>, CatalogError> {
        let location = self.location();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT entry FROM restores ORDER BY id DESC LIMIT ?1")
                .map_err(backend(&location))?;
            let rows = stmt
                .query_map([limit as i64], |r| r.get::<_, String>(0))
                .map_err(backend(&location))?;
            let mut out = Vec::new();
            for json in rows {
                out.push(restore_from_json(
                    &location,
                    &json.map_err(backend(&location))?,
                )?);
            }
            Ok(out)
        })
        .await
    }

    async fn remove_record(
        &self,
        id: &BackupId,
        expected: BackupStatus,
    ) -> Result<(), CatalogError> {
        let id = id.clone();
        let location = self.location();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(backend(&location))?;
            let removed = tx
                .execute(
                    "DELETE FROM backups WHERE id = ?1 AND status = ?2",
                    params![id.as_str(), expected.as_str()],
                )
                .map_err(backend(&location))?;
            if removed == 0 {
                let found: Option<String> = tx
                    .query_row(
                        "SELECT status FROM backups WHERE id = ?1",
                        [id.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend(&location))?;
                return Err(match found {
                    None => CatalogError::NotFound(id),
                    Some(found) => CatalogError::Conflict {
                        id,
                        expected,
                        found: found.parse().map_err(|message| CatalogError::Backend {
                            location: location.clone(),
                            message,
                        })?,
                    },
                });
            }
            tx.commit().map_err(backend(&location))
        })
        .await
    }
}

impl SqliteCatalog {
    fn read_lease(
        conn: &Connection,
        database: &str,
        location: &str,
    ) -> Result<Option<Lease>, CatalogError> {
        let row: Option<(String, String, String, Option<String>)> = conn
            .query_row(
                "SELECT database, holder, expires_at, process FROM leases WHERE database = ?1",
                [database],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(backend(location))?;
        row.map(|(database, holder, expires, process)| {
            let expires_at = DateTime::parse_from_rfc3339(&expires)
                .map_err(|e| format!("unreadable lease expiry {expires:?}: {e}"))?
                .with_timezone(&Utc);
            let process = process
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(|e| format!("unreadable lease holder process: {e}"))?;
            Ok(Lease {
                database,
                holder,
                expires_at,
                process,
            })
        })
        .transpose()
        .map_err(|message| CatalogError::Backend {
            location: location.to_owned(),
            message,
        })
    }

    fn process_json(lease: &Lease) -> Option<String> {
        lease
            .process
            .as_ref()
            .map(|p| serde_json::to_string(p).expect("process identities serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_catalog_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(dir.path().join("c/catalog.sqlite3")).unwrap();
        crate::catalog::contract::run(&catalog).await;
    }

    /// Processes opening a fresh catalog at the same moment (a backup and a `list`, two
    /// schedules) each get a working catalog: before the schema was set up in one write
    /// transaction, the later ones found a column missing, added it again and failed.
    #[test]
    fn processes_opening_a_fresh_catalog_at_once_all_succeed() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("catalog.sqlite3");
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        SqliteCatalog::open(&path).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap();
            }
        }
    }

    /// A catalog written before runs existed gains the `run_id` column on opening, filled from
    /// the records, so `list --run` finds them.
    #[tokio::test]
    async fn an_older_catalog_gains_the_run_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite3");
        let mut r = BackupRecord::start(
            BackupId::generate(chrono::Utc::now()),
            "shop",
            crate::model::BackupKind::Manual,
            crate::model::Compression::Zstd,
        );
        r.run_id = Some("20261124T020000000Z-00000001".into());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE backups (id TEXT PRIMARY KEY, database TEXT NOT NULL,
                   status TEXT NOT NULL, kind TEXT NOT NULL, created_at TEXT NOT NULL,
                   record TEXT NOT NULL);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO backups VALUES (?1, 'shop', 'in_progress', 'manual', ?2, ?3)",
                params![r.id.as_str(), format_time(r.created_at), to_json(&r)],
            )
            .unwrap();
        }
        let catalog = SqliteCatalog::open(&path).unwrap();
        let listed = catalog
            .list(&ListQuery {
                run_id: r.run_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.records, vec![r]);
    }

    /// A backup asked for earlier but started later (a retried event keeps its event's time in
    /// its id) lists as the newer one, and pages continue by start.
    #[tokio::test]
    async fn listings_follow_the_start_not_the_id() {
        use chrono::TimeZone;
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(dir.path().join("catalog.sqlite3")).unwrap();
        let at = |minute| {
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 24, 2, minute, 0)
                .unwrap()
        };
        let mut ids = Vec::new();
        // (id time, start): the retry of the 02:00 event started at 02:30, after the 02:10 one.
        for (asked, started) in [(0, 30), (10, 10), (20, 40)] {
            let mut r = BackupRecord::start(
                BackupId::generate(at(asked)),
                "shop",
                crate::model::BackupKind::Scheduled,
                crate::model::Compression::Zstd,
            );
            r.created_at = at(started);
            catalog.insert(&r).await.unwrap();
            ids.push(r.id);
        }
        let expected = vec![ids[2].clone(), ids[0].clone(), ids[1].clone()];
        let all = catalog.list(&ListQuery::default()).await.unwrap();
        let listed: Vec<_> = all.records.iter().map(|r| r.id.clone()).collect();
        assert_eq!(listed, expected);
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = catalog
                .list(&ListQuery {
                    database: Some("shop".into()),
                    limit: Some(1),
                    cursor: cursor.take(),
                    ..Default::default()
                })
                .await
                .unwrap();
            paged.extend(page.records.into_iter().map(|r| r.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(paged, expected);
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite3");
        let record = BackupRecord::start(
            BackupId::generate(chrono::Utc::now()),
            "shop",
            crate::model::BackupKind::Manual,
            crate::model::Compression::Gzip,
        );
        SqliteCatalog::open(&path)
            .unwrap()
            .insert(&record)
            .await
            .unwrap();
        let again = SqliteCatalog::open(&path).unwrap();
        assert_eq!(again.get(&record.id).await.unwrap(), record);
    }
}
