//! Forgetting a database that never had a good backup (`pgkeep forget DATABASE`).
//!
//! A typo in `--database-url` leaves a database in the catalog whose every run failed; `status`
//! reports it unhealthy for ever, and prune keeps failed runs as history. Forgetting removes
//! its records and its lapsed lease from the catalog, and nothing else: it is refused while any
//! record of the database is, or was, a real backup (completed, verified, deleted after it
//! completed...), so the history of real backups is never lost this way, and while a live run
//! holds the database's lease. The audit trail keeps a `forget` entry naming who did it and
//! which records went.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Error;
use crate::backends::Services;
use crate::catalog::{CatalogError, ListQuery};
use crate::model::{AuditEntry, BackupId, BackupRecord, BackupStatus};
use crate::retention::Span;

/// What to forget, and who asks.
#[derive(Debug, Clone)]
pub struct ForgetRequest {
    /// The database, exactly as `status` and `list` print it.
    pub database: String,
    /// Who asks, for the audit trail.
    pub actor: String,
    /// Say what would be removed; change nothing.
    pub dry_run: bool,
    /// The time runs are judged at (a dead run's record is first settled by the reaper).
    pub now: DateTime<Utc>,
    /// The reaper's `--abandon-after`.
    pub abandon_after: Span,
}

/// What was (or, in a dry run, would be) removed.
#[derive(Debug, Clone, Serialize)]
pub struct Forgotten {
    /// The database.
    pub database: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The records removed, newest first.
    pub records: Vec<BackupId>,
    /// The holder of the lapsed lease that was removed with them, if there was one.
    pub lease: Option<String>,
}

/// Removes every record of `request.database` and its lapsed lease, if none of its records is
/// or was a real backup; audits it. Refused, with nothing changed, when one is
/// ([`Error::ForgetRefused`], naming them), while a live run holds the database's lease
/// ([`Error::LeaseHeld`]), and for a database the catalog does not know
/// ([`Error::UnknownDatabase`]). Runs that died are settled by the reaper first (not in a dry
/// run, which counts them as failed).
pub async fn forget(services: &Services, request: &ForgetRequest) -> Result<Forgotten, Error> {
    let database = request.database.as_str();
    if !request.dry_run {
        super::reaper::reap(services, Some(database), request.now, request.abandon_after).await?;
    }
    let records = super::list::list_all(
        services,
        &ListQuery {
            database: Some(database.to_owned()),
            ..Default::default()
        },
    )
    .await?;
    if records.is_empty() {
        return Err(Error::UnknownDatabase(database.to_owned()));
    }
    // A live run first: its record is in progress and its lease held.
    let lease = services.catalog.get_lease(database).await?;
    if let Some(lease) = &lease {
        if super::backup::holder_is_dead(services, lease, request.now)
            .await
            .is_none()
        {
            return Err(Error::LeaseHeld {
                database: lease.database.clone(),
                holder: lease.holder.clone(),
                expires_at: lease.expires_at,
            });
        }
    }
    let dead: Vec<&BackupId> = super::reaper::abandoned_among(services, &records, request.now)
        .await?
        .into_iter()
        .map(|(r, _)| &r.id)
        .collect();
    let good: Vec<&BackupRecord> = records
        .iter()
        .filter(|r| !(r.never_held_a_backup() || request.dry_run && dead.contains(&&r.id)))
        .collect();
    if !good.is_empty() {
        const SHOWN: usize = 10;
        let mut named: Vec<String> = good
            .iter()
            .take(SHOWN)
            .map(|r| format!("{} ({})", r.id, r.status))
            .collect();
        if good.len() > SHOWN {
            named.push(format!("and {} more", good.len() - SHOWN));
        }
        return Err(Error::ForgetRefused {
            database: database.to_owned(),
            why: format!(
                "has {} record(s) of real or running backups: {}; only a database whose every backup failed can be forgotten (`pgkeep delete` removes backups, their records stay as history)",
                good.len(),
                named.join(", ")
            ),
        });
    }
    let forgotten = Forgotten {
        database: database.to_owned(),
        dry_run: request.dry_run,
        records: records.iter().map(|r| r.id.clone()).collect(),
        lease: lease.as_ref().map(|l| l.holder.clone()),
    };
    if request.dry_run {
        return Ok(forgotten);
    }
    if let Some(lease) = &lease {
        services
            .catalog
            .release_lease(database, &lease.holder)
            .await?;
    }
    for record in &records {
        // The repository's copy of its state first: `pgkeep repair` would bring the record
        // back from it. A crash in between leaves the record, and `forget` can run again.
        services.store.delete(&record.state_key()).await?;
        match services
            .catalog
            .remove_record(&record.id, record.status)
            .await
        {
            // Removed meanwhile by another `forget`: the same outcome.
            Ok(()) | Err(CatalogError::NotFound(_)) => {}
            // A failed run deleted meanwhile (prune): still never a backup, remove it.
            Err(CatalogError::Conflict {
                found: BackupStatus::Deleted,
                ..
            }) if record.status == BackupStatus::Failed => {
                match services
                    .catalog
                    .remove_record(&record.id, BackupStatus::Deleted)
                    .await
                {
                    Ok(()) | Err(CatalogError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let at = Utc::now();
    services
        .catalog
        .append_audit(&AuditEntry {
            id: BackupId::generate(at),
            at,
            actor: request.actor.clone(),
            action: "forget".into(),
            backup_id: None,
            database: database.to_owned(),
            outcome: "ok".into(),
            details: serde_json::json!({
                "records": forgotten.records,
                "lease": forgotten.lease,
            }),
        })
        .await?;
    tracing::info!(database, records = forgotten.records.len(), actor = %request.actor, "database forgotten");
    Ok(forgotten)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration;

    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;
    use crate::keys::NoKey;
    use crate::model::{BackupKind, Compression, Lease};
    use crate::store::fs::FsStore;

    fn services(dir: &std::path::Path) -> Services {
        Services {
            store: Arc::new(FsStore::new(dir.join("repo"))),
            catalog: Arc::new(SqliteCatalog::open(dir.join("catalog.sqlite3")).unwrap()),
            keys: Arc::new(NoKey),
        }
    }

    async fn add(
        services: &Services,
        db: &str,
        minutes_ago: i64,
        status: BackupStatus,
    ) -> BackupId {
        let at = Utc::now() - Duration::minutes(minutes_ago);
        let mut r = BackupRecord::start(
            BackupId::generate(at),
            db,
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        r.created_at = at;
        services.catalog.insert(&r).await.unwrap();
        match status {
            BackupStatus::InProgress => {}
            BackupStatus::Failed => {
                r.status = BackupStatus::Failed;
                r.error = Some("connection refused".into());
                services
                    .catalog
                    .update(&r, BackupStatus::InProgress)
                    .await
                    .unwrap();
            }
            BackupStatus::Deleted => {
                r.status = BackupStatus::Completed;
                services
                    .catalog
                    .update(&r, BackupStatus::InProgress)
                    .await
                    .unwrap();
                r.status = BackupStatus::Deleted;
                services
                    .catalog
                    .update(&r, BackupStatus::Completed)
                    .await
                    .unwrap();
            }
            other => {
                r.status = other;
                services
                    .catalog
                    .update(&r, BackupStatus::InProgress)
                    .await
                    .unwrap();
            }
        }
        r.id
    }

    fn request(db: &str, dry_run: bool) -> ForgetRequest {
        ForgetRequest {
            database: db.into(),
            actor: "dora".into(),
            dry_run,
            now: Utc::now(),
            abandon_after: Span::minutes(20),
        }
    }

    /// A failed run deleted since still never held a backup; a completed one deleted since did.
    #[tokio::test]
    async fn only_databases_whose_every_run_failed_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let services = services(dir.path());
        let typo_a = add(&services, "typo", 30, BackupStatus::Failed).await;
        let typo_b = add(&services, "typo", 20, BackupStatus::Failed).await;
        let mut deleted_failure = services.catalog.get(&typo_a).await.unwrap();
        deleted_failure.status = BackupStatus::Deleted;
        services
            .catalog
            .update(&deleted_failure, BackupStatus::Failed)
            .await
            .unwrap();
        add(&services, "shop", 30, BackupStatus::Failed).await;
        let deleted_good = add(&services, "shop", 20, BackupStatus::Deleted).await;
        let good = add(&services, "shop", 10, BackupStatus::Completed).await;

        let err = forget(&services, &request("shop", false))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::ForgetRefused { .. }), "{text}");
        assert!(text.contains(&good.to_string()), "{text}");
        assert!(text.contains(&deleted_good.to_string()), "{text}");
        assert_eq!(err.kind(), super::super::ErrorKind::Conflict);
        assert!(matches!(
            forget(&services, &request("nope", false)).await,
            Err(Error::UnknownDatabase(_))
        ));

        let dry = forget(&services, &request("typo", true)).await.unwrap();
        assert_eq!(dry.records, vec![typo_b.clone(), typo_a.clone()]);
        assert!(services.catalog.get(&typo_a).await.is_ok());

        let done = forget(&services, &request("typo", false)).await.unwrap();
        assert_eq!(done.records, vec![typo_b.clone(), typo_a.clone()]);
        for id in [&typo_a, &typo_b] {
            assert!(matches!(
                services.catalog.get(id).await,
                Err(CatalogError::NotFound(_))
            ));
        }
        assert_eq!(
            services.catalog.get(&good).await.unwrap().status,
            BackupStatus::Completed
        );
        let audit = services.catalog.list_audit(Some("typo"), 10).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action, "forget");
        assert_eq!(audit[0].actor, "dora");
    }

    /// A live run (its lease held and renewed) refuses; a dead one is settled and forgotten.
    #[tokio::test]
    async fn a_live_run_refuses_and_a_dead_one_is_reaped_first() {
        let dir = tempfile::tempdir().unwrap();
        let services = services(dir.path());
        add(&services, "typo", 30, BackupStatus::Failed).await;
        let running = add(&services, "typo", 1, BackupStatus::InProgress).await;
        let now = Utc::now();
        let lease = Lease {
            database: "typo".into(),
            holder: running.to_string(),
            expires_at: now + Duration::minutes(2),
            process: None,
        };
        assert_eq!(
            services.catalog.acquire_lease(&lease, now).await.unwrap(),
            None
        );
        let err = forget(&services, &request("typo", false))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
        assert_eq!(
            services.catalog.get(&running).await.unwrap().status,
            BackupStatus::InProgress
        );

        // Its heartbeat stops: the lease lapses.
        let later = now + Duration::minutes(3);
        let dry = forget(
            &services,
            &ForgetRequest {
                now: later,
                ..request("typo", true)
            },
        )
        .await
        .unwrap();
        assert_eq!(dry.records.len(), 2);
        assert_eq!(dry.lease.as_deref(), Some(running.as_str()));
        let done = forget(
            &services,
            &ForgetRequest {
                now: later,
                ..request("typo", false)
            },
        )
        .await
        .unwrap();
        assert_eq!(done.records.len(), 2);
        assert_eq!(services.catalog.get_lease("typo").await.unwrap(), None);
    }
}
