//! Listing backups: one page of the catalog, or every record a query matches.

use super::Error;
use crate::backends::Services;
use crate::catalog::{ListQuery, Page};
use crate::model::BackupRecord;

/// One page of records, newest first: by start (`created_at`) in the embedded catalog; by id
/// (the time the backup was asked for) in DynamoDB, whose indexes sort by id (docs/DYNAMODB.md).
pub async fn list(services: &Services, query: &ListQuery) -> Result<Page, Error> {
    Ok(services.catalog.list(query).await?)
}

/// Every record matching `query`, following cursors to the end, newest first by start
/// ([`BackupRecord::start_order`]) whatever the catalog's page order.
pub async fn list_all(services: &Services, query: &ListQuery) -> Result<Vec<BackupRecord>, Error> {
    let mut query = query.clone();
    query.limit = Some(500);
    let mut out = Vec::new();
    loop {
        let page = services.catalog.list(&query).await?;
        out.extend(page.records);
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => {
                out.sort_by(|a, b| b.start_order().cmp(&a.start_order()));
                return Ok(out);
            }
        }
    }
}

/// The expiry of every stored backup of the given databases (every database when `None`) under
/// `policy` at `now`: a decision needs all of a database's records (the newest verified, the
/// restic slots), whatever page is shown. Empty without a usable policy.
pub async fn expiries(
    services: &Services,
    policy: &crate::retention::RetentionPolicy,
    databases: Option<&[&str]>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<std::collections::BTreeMap<crate::model::BackupId, crate::retention::Expiry>, Error> {
    if policy.validate().is_err() {
        return Ok(Default::default());
    }
    let records = match databases {
        None => list_all(services, &ListQuery::default()).await?,
        Some(names) => {
            let mut names = names.to_vec();
            names.sort_unstable();
            names.dedup();
            let mut out = Vec::new();
            for name in names {
                let query = ListQuery {
                    database: Some(name.to_owned()),
                    ..ListQuery::default()
                };
                out.extend(list_all(services, &query).await?);
            }
            out
        }
    };
    Ok(crate::retention::expiries(policy, &records, now))
}
