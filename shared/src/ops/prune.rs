//! Pruning: plan what the retention policy removes, then do it, safely against crashes.
//!
//! [`plan`] only reads: the catalog, and one listing of each database's keys in the store. It
//! returns every decision with its reason, the abandoned runs the reaper will fail, the
//! half-done deletions to repair and anything odd it saw. `--dry-run` prints the plan;
//! [`execute`] carries it out.
//!
//! # Crash safety
//!
//! One backup is deleted by [`delete_backup`], in this order:
//!
//! 1. compare-and-set the record to `deleted` (from the status the plan saw): from here on
//!    nothing reads it, lists it as good or restores it;
//! 2. delete the manifest (so a catalog rebuilt from manifests cannot resurrect the backup);
//! 3. delete the object;
//! 4. append an audit entry.
//!
//! A crash after step 1 leaves a `deleted` (or `failed`) record whose keys still exist; the
//! next prune's listing finds them and removes them (a *repair*, audited too). At no step is
//! there a `completed` or `verified` record whose object is missing. Store deletes of missing
//! keys succeed, so every step can simply be repeated.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sweep::{self, Orphan, Swept};
use super::{list::list_all, reaper, DeleteRefusal, Error};
use crate::backends::Services;
use crate::catalog::{CatalogError, ListQuery};
use crate::model::{format_time, path_segment, AuditEntry, BackupId, BackupRecord, BackupStatus};
use crate::retention::{self, Decision, RetentionPolicy, Span};
use crate::store::ObjectLock;

/// What to prune.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    /// What to keep.
    pub policy: RetentionPolicy,
    /// Only this database (all databases in the catalog when `None`).
    pub database: Option<String>,
    /// The time the policy's windows and the reaper's limit are measured at.
    pub now: DateTime<Utc>,
    /// In-progress records older than this are abandoned.
    pub abandon_after: Span,
    /// Where `restore --jobs` stages archives, swept for those of killed restores; `None`
    /// sweeps no staging directory.
    pub staging_dir: Option<std::path::PathBuf>,
}

/// An in-progress backup the reaper will mark failed.
#[derive(Debug, Clone, Serialize)]
pub struct Abandoned {
    /// The backup.
    pub id: BackupId,
    /// Its database.
    pub database: String,
    /// When it started.
    pub created_at: DateTime<Utc>,
}

/// A key left behind by a half-done deletion or a failed run, to be removed.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    /// The backup it belongs to.
    pub id: BackupId,
    /// Its database.
    pub database: String,
    /// The record's status (`deleted` or `failed`: it should have no keys).
    pub status: BackupStatus,
    /// The leftover key.
    pub key: String,
}

/// A record that says it has an object or manifest the store does not have: damage prune
/// cannot repair, reported so someone looks (`verify` would fail on it).
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// The backup.
    pub id: BackupId,
    /// Its database.
    pub database: String,
    /// Its status.
    pub status: BackupStatus,
    /// The key that is not there.
    pub key: String,
}

/// Everything a prune would do, and why.
#[derive(Debug, Clone, Serialize)]
pub struct PrunePlan {
    /// The time decisions were made at.
    pub now: DateTime<Utc>,
    /// The policy applied.
    pub policy: RetentionPolicy,
    /// The database pruned, or all.
    pub database: Option<String>,
    /// The reaper's limit.
    pub abandon_after: Span,
    /// In-progress runs to mark failed first.
    pub abandoned: Vec<Abandoned>,
    /// A decision for every record that is not deleted.
    pub decisions: Vec<Decision>,
    /// Leftover keys of deleted or failed backups, to remove.
    pub repairs: Vec<Repair>,
    /// Keys a record needs but the store lacks (reported only).
    pub missing: Vec<Missing>,
    /// Keys under a database's prefix that no record mentions (left alone: they may belong to
    /// a run that started after the catalog was read, or to someone else).
    pub unknown_keys: Vec<String>,
    /// What no live run owns and will be removed: unfinished uploads in the store, staged
    /// restore files (see [`sweep`]).
    pub orphans: Vec<Orphan>,
}

impl PrunePlan {
    /// The backups this plan removes.
    pub fn removals(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keeps())
    }

    /// Whether executing the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.abandoned.is_empty()
            && self.repairs.is_empty()
            && self.orphans.is_empty()
            && self.removals().next().is_none()
    }
}

/// What [`execute`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Abandoned runs marked failed.
    pub reaped: Vec<BackupId>,
    /// Dead runs that had published their backup, settled as completed (not failures).
    pub settled: Vec<BackupId>,
    /// Restores left `running` by a dead run, marked failed as abandoned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reaped_restores: Vec<BackupId>,
    /// Backups deleted.
    pub deleted: Vec<BackupId>,
    /// Leftover keys removed.
    pub repaired: Vec<String>,
    /// Planned deletions not done because the backup changed since the plan.
    pub skipped: Vec<Skipped>,
    /// Orphans removed: how many, how large.
    pub swept: Swept,
}

/// A planned deletion that was not carried out.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The backup.
    pub id: BackupId,
    /// Why not.
    pub why: String,
}

/// Reads the catalog and the store and decides; changes nothing.
pub async fn plan(services: &Services, request: &PruneRequest) -> Result<PrunePlan, Error> {
    request.policy.validate()?;
    let records = list_all(
        services,
        &ListQuery {
            database: request.database.clone(),
            ..Default::default()
        },
    )
    .await?;
    let abandoned: Vec<Abandoned> = reaper::abandoned_among(services, &records, request.now)
        .await?
        .into_iter()
        .map(|(r, _)| Abandoned {
            id: r.id.clone(),
            database: r.database.clone(),
            created_at: r.created_at,
        })
        .collect();
    let abandoned_ids: BTreeSet<&BackupId> = abandoned.iter().map(|a| &a.id).collect();
    // Decide on the records as they will be once the reaper has run.
    let after_reaping: Vec<BackupRecord> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if abandoned_ids.contains(&r.id) {
                r.status = BackupStatus::Failed;
            }
            r
        })
        .collect();
    let decisions = retention::apply(&request.policy, &after_reaping, request.now)?;

    let mut repairs = Vec::new();
    let mut missing = Vec::new();
    let mut unknown_keys = Vec::new();
    let mut by_db: BTreeMap<&str, Vec<&BackupRecord>> = BTreeMap::new();
    for r in &records {
        by_db.entry(&r.database).or_default().push(r);
    }
    for (database, rs) in by_db {
        let prefix = format!("{}/", path_segment(database));
        let stored: BTreeSet<String> = services
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect();
        let mut known = BTreeSet::new();
        for r in rs {
            let mut keys = vec![r.manifest_key()];
            keys.extend(r.object_keys());
            for key in keys {
                let present = stored.contains(&key);
                if present
                    && matches!(r.status, BackupStatus::Deleted | BackupStatus::Failed)
                    && !abandoned_ids.contains(&r.id)
                {
                    repairs.push(Repair {
                        id: r.id.clone(),
                        database: r.database.clone(),
                        status: r.status,
                        key: key.clone(),
                    });
                }
                if !present && r.status.has_object() {
                    missing.push(Missing {
                        id: r.id.clone(),
                        database: r.database.clone(),
                        status: r.status,
                        key: key.clone(),
                    });
                }
                known.insert(key);
            }
            // The state object stays for every status: it is the record's copy in the
            // repository (see ops/state.rs).
            known.insert(r.state_key());
        }
        unknown_keys.extend(stored.into_iter().filter(|k| !known.contains(k)));
    }

    let older_than = request.now - request.abandon_after.as_delta();
    let prefix = request
        .database
        .as_deref()
        .map_or_else(String::new, |db| format!("{}/", path_segment(db)));
    let mut orphans =
        sweep::find_uploads(services, &prefix, &records, &abandoned_ids, older_than).await?;
    if let Some(dir) = &request.staging_dir {
        let dir = dir.clone();
        let staged = tokio::task::spawn_blocking(move || sweep::find_staged(&dir, older_than))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| Error::Io {
                context: "listing the staging directory",
                source,
            })?;
        orphans.extend(staged);
    }

    Ok(PrunePlan {
        now: request.now,
        policy: request.policy.clone(),
        database: request.database.clone(),
        abandon_after: request.abandon_after,
        abandoned,
        decisions,
        repairs,
        missing,
        unknown_keys,
        orphans,
    })
}

/// Carries out `plan`: reaps, repairs, sweeps orphans, then deletes. Stops at the first storage or catalog
/// failure and returns it; whatever was half done is repaired by the next prune. Deletions
/// refused because the backup changed since the plan are skipped and reported.
pub async fn execute(
    services: &Services,
    plan: &PrunePlan,
    actor: &str,
) -> Result<PruneReport, Error> {
    let mut report = PruneReport::default();
    for a in &plan.abandoned {
        match reaper::reap_one(services, &a.id, plan.now, plan.abandon_after).await? {
            Some(r) if r.status == BackupStatus::Completed => report.settled.push(r.id),
            Some(r) => report.reaped.push(r.id),
            None => {}
        }
    }
    report.reaped_restores = reaper::reap_restores(
        services,
        plan.database.as_deref(),
        plan.now,
        plan.abandon_after,
    )
    .await?
    .into_iter()
    .map(|r| r.id)
    .collect();

    let mut repairs_by_id: BTreeMap<&BackupId, Vec<&Repair>> = BTreeMap::new();
    for r in &plan.repairs {
        repairs_by_id.entry(&r.id).or_default().push(r);
    }
    for (id, repairs) in repairs_by_id {
        let record = services.catalog.get(id).await?;
        if !matches!(record.status, BackupStatus::Deleted | BackupStatus::Failed) {
            continue;
        }
        // A crash may have come between the catalog and the state object.
        super::state::publish(services.store.as_ref(), &record).await?;
        let mut keys = Vec::new();
        for r in repairs {
            services.store.delete(&r.key).await?;
            keys.push(r.key.clone());
        }
        audit(
            services,
            &record,
            actor,
            "prune",
            serde_json::json!({
                "repair": format!("removed keys left behind by a {} backup", record.status),
                "keys": keys,
            }),
        )
        .await?;
        report.repaired.extend(keys);
    }

    report.swept = sweep::remove(services, &plan.orphans).await?;

    for d in plan.removals() {
        let request = DeleteRequest {
            actor: actor.to_owned(),
            action: "prune".into(),
            reason: d.to_string(),
            expected_status: Some(d.status),
        };
        match delete_backup(services, &d.id, &request).await {
            Ok(_) => report.deleted.push(d.id.clone()),
            Err(Error::Unusable { why, .. }) => report.skipped.push(Skipped {
                id: d.id.clone(),
                why,
            }),
            Err(e @ Error::DeleteRefused { .. }) => report.skipped.push(Skipped {
                id: d.id.clone(),
                why: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Who deletes a backup, and why (for the audit trail).
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    /// A user name, an IAM principal, `schedule`.
    pub actor: String,
    /// The audit action: `prune`, or `delete` for a deletion asked for by hand.
    pub action: String,
    /// Why, in words (`removed: outside policy`).
    pub reason: String,
    /// Refuse unless the record still has this status (a plan's view); `None` for any.
    pub expected_status: Option<BackupStatus>,
}

/// Deletes one backup crash-safely (see the module documentation) and audits it; returns the
/// `deleted` record.
///
/// Refuses ([`Error::DeleteRefused`]) a backup that is in progress, the newest verified backup
/// of its database, and one whose object or manifest is under S3 Object Lock (checked before
/// anything changes); refuses ([`Error::Unusable`]) one whose status is not
/// `request.expected_status`. Deleting an already deleted backup finishes removing its keys
/// and succeeds.
pub async fn delete_backup(
    services: &Services,
    id: &BackupId,
    request: &DeleteRequest,
) -> Result<BackupRecord, Error> {
    let mut record = services.catalog.get(id).await?;
    let refuse = |record: &BackupRecord, why: String| Error::Unusable {
        id: record.id.clone(),
        status: record.status,
        why,
    };
    let refused = |record: &BackupRecord, reason, why: String| Error::DeleteRefused {
        id: record.id.clone(),
        reason,
        why,
    };
    if let Some(expected) = request.expected_status {
        if record.status != expected {
            return Err(refuse(
                &record,
                format!("it changed since it was planned for deletion (it was {expected})"),
            ));
        }
    }
    match record.status {
        BackupStatus::InProgress => {
            return Err(refused(
                &record,
                DeleteRefusal::InProgress,
                "is still being written; wait for it to finish (or to be reaped as abandoned)"
                    .into(),
            ))
        }
        BackupStatus::Deleted => {
            // A crash may have come between the catalog and the state object.
            super::state::publish(services.store.as_ref(), &record).await?;
            remove_keys(services, &record).await?;
            return Ok(record);
        }
        BackupStatus::Verified => {
            let verified = super::list::list_all(
                services,
                &ListQuery {
                    database: Some(record.database.clone()),
                    status: Some(BackupStatus::Verified),
                    ..ListQuery::default()
                },
            )
            .await?;
            if crate::model::newest_verified(&verified).map(|r| &r.id) == Some(&record.id) {
                return Err(refused(
                    &record,
                    DeleteRefusal::NewestVerified,
                    format!(
                        "is the newest verified backup of {:?}, which pgkeep never deletes; verify a newer backup first",
                        record.database
                    ),
                ));
            }
        }
        _ => {}
    }
    let now = Utc::now();
    for key in &[record.object_keys(), vec![record.manifest_key()]].concat() {
        if let Some(lock) = services.store.object_lock(key).await? {
            if lock.blocks_deletion_at(now) {
                return Err(refused(
                    &record,
                    DeleteRefusal::ObjectLocked,
                    locked_why(key, &lock),
                ));
            }
        }
    }
    let before = record.status;
    record
        .transition(BackupStatus::Deleted)
        .map_err(CatalogError::from)?;
    super::state::update(services, &record, before).await?;
    remove_keys(services, &record).await?;
    audit(
        services,
        &record,
        &request.actor,
        &request.action,
        serde_json::json!({
            "reason": request.reason,
            "status_before": before,
            "object_key": record.object_key,
        }),
    )
    .await?;
    tracing::info!(backup = %record.id, database = %record.database, reason = %request.reason, "backup deleted");
    Ok(record)
}

/// What an Object Lock that forbids deletion says, for the refusal.
fn locked_why(key: &str, lock: &ObjectLock) -> String {
    let mut held = Vec::new();
    if let Some(until) = lock.retain_until {
        held.push(format!(
            "{} retention until {}",
            lock.mode.as_deref().unwrap_or("Object Lock"),
            format_time(until)
        ));
    }
    if lock.legal_hold {
        held.push("a legal hold".to_owned());
    }
    format!(
        "has {key} under S3 Object Lock ({}); it can be deleted once the lock ends",
        held.join(" and ")
    )
}

/// Manifest first, then the object (see the module documentation).
async fn remove_keys(services: &Services, record: &BackupRecord) -> Result<(), Error> {
    services.store.delete(&record.manifest_key()).await?;
    for key in record.object_keys() {
        services.store.delete(&key).await?;
    }
    Ok(())
}

async fn audit(
    services: &Services,
    record: &BackupRecord,
    actor: &str,
    action: &str,
    details: serde_json::Value,
) -> Result<(), Error> {
    let at = Utc::now();
    services
        .catalog
        .append_audit(&AuditEntry {
            id: BackupId::generate(at),
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            backup_id: Some(record.id.clone()),
            database: record.database.clone(),
            outcome: "ok".into(),
            details,
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
