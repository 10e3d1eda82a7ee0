//! Writing a record's state back to the repository, so the repository alone says where every
//! backup stands (verified and when, its recovery time, deleted, failed) and `pgkeep repair`
//! can rebuild the catalog from it.
//!
//! Every change of a record after its backup completed goes through [`update`]: the catalog's
//! compare-and-set decides (two writers cannot both win), then the record is written whole to
//! `<id>.state.json` beside the object with the store's atomic `put`. A backup that failed
//! writes its state with [`publish_failure`], on a best-effort basis: when the store itself is
//! what failed, the state cannot be written either, and only the catalog knows.

use super::Error;
use crate::backends::Services;
use crate::model::{BackupRecord, BackupState, BackupStatus};
use crate::store::ObjectStore;

/// Writes `record` (as the catalog now holds it) to its state object, replacing any earlier one.
pub async fn publish(store: &dyn ObjectStore, record: &BackupRecord) -> Result<(), Error> {
    let json =
        serde_json::to_vec_pretty(&BackupState::new(record.clone())).expect("states serialize");
    store.put(&record.state_key(), json).await?;
    Ok(())
}

/// Stores `record` in the catalog if its status is still `expected` (compare-and-set), then
/// in the repository. A failure of the second write is returned: the catalog holds the change,
/// and repeating the operation writes the state again.
pub async fn update(
    services: &Services,
    record: &BackupRecord,
    expected: BackupStatus,
) -> Result<(), Error> {
    services.catalog.update(record, expected).await?;
    publish(services.store.as_ref(), record)
        .await
        .map_err(|e| Error::StateNotWritten {
            id: record.id.clone(),
            source: Box::new(e),
        })
}

/// Writes the state of a `failed` record already stored in the catalog; a failure is logged
/// (the run has failed already, most likely for the same reason).
pub async fn publish_failure(services: &Services, record: &BackupRecord) {
    if let Err(e) = publish(services.store.as_ref(), record).await {
        tracing::warn!(backup = %record.id, error = %e, "could not write the failed backup's state to the repository; only the catalog records it");
    }
}
