//! Deleting one backup on request (`pgkeep delete ID`, `DELETE /backups/{id}`).
//!
//! The deletion itself is prune's ([`delete_backup`]): the same refusals, the same
//! crash-safe order (record, manifest, object, audit), written once. This module only says
//! who asked.

use super::prune::{delete_backup, DeleteRequest};
use super::Error;
use crate::backends::Services;
use crate::model::{BackupId, BackupRecord};

/// Deletes backup `id` for `actor` (a user name or an API caller's identity) and returns the
/// `deleted` record; the audit trail gets a `delete` entry naming the actor.
///
/// Refused, with nothing changed, for the newest verified backup of a database, a backup in
/// progress, and one whose object is under S3 Object Lock ([`Error::DeleteRefused`]).
/// Deleting an already deleted backup succeeds (and removes any key a crash left behind).
pub async fn delete(
    services: &Services,
    id: &BackupId,
    actor: &str,
) -> Result<BackupRecord, Error> {
    let request = DeleteRequest {
        actor: actor.to_owned(),
        action: "delete".into(),
        reason: format!("deleted on request of {actor}"),
        expected_status: None,
    };
    delete_backup(services, id, &request).await
}
