//! `pgkeep delete`: one backup, by hand, audited.

use pgkeep::backends::KeyUse;
use pgkeep::ops;

use super::{parse_id, Failure};
use crate::args::DeleteArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &DeleteArgs) -> Result<u8, Failure> {
    let id = parse_id(&args.id)?;
    let services = resolver.open(KeyUse::None).await?;
    let actor = resolver.actor(&args.actor);
    match ops::delete::delete(&services, &id, &actor).await {
        Ok(record) => {
            output::print(args.json, &record, || {
                println!(
                    "deleted backup {} of {:?}: object and manifest removed, the record stays as history",
                    record.id, record.database
                )
            });
            Ok(0)
        }
        Err(e) => {
            if let (true, ops::Error::DeleteRefused { reason, .. }) = (args.json, &e) {
                output::print_json(&serde_json::json!({
                    "id": id,
                    "deleted": false,
                    "reason": reason,
                    "error": e.to_string(),
                }));
            }
            Err(e.into())
        }
    }
}
