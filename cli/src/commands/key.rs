//! `pgkeep key id [FILE]`: a key file's id as manifests show it, so that whoever holds several
//! key files can tell which one a backup needs; for a configured KMS key, its ARN.

use pgkeep::backends::KeyUrl;
use pgkeep::keys::file::FileKeyProvider;
use pgkeep::keys::KeyProvider;
use pgkeep::ops;

use super::Failure;
use crate::args::{KeyCommand, KeyIdArgs};
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, command: &KeyCommand) -> Result<u8, Failure> {
    match command {
        KeyCommand::Id(args) => id(resolver, args).await,
    }
}

async fn id(resolver: &Resolver<'_>, args: &KeyIdArgs) -> Result<u8, Failure> {
    let path = match &args.file {
        Some(path) => path.clone(),
        None => {
            let config = resolver.backend_config()?;
            match &config.key {
                KeyUrl::File(path) => path.clone(),
                KeyUrl::Kms(key) => {
                    let aws = config.load_aws().await.map_err(ops::Error::from)?;
                    let key_id = ops::init::kms_key_id(&aws, key).await?;
                    let shown =
                        serde_json::json!({"key": format!("kms://{key}"), "key_id": key_id});
                    output::print(args.json, &shown, || println!("{key_id}"));
                    return Ok(0);
                }
            }
        }
    };
    let key = FileKeyProvider::load(&path).map_err(ops::Error::from)?;
    let key_id = key.key_id();
    let shown = serde_json::json!({"path": path.display().to_string(), "key_id": key_id});
    output::print(args.json, &shown, || println!("{key_id}"));
    Ok(0)
}
