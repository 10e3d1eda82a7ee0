//! `pgkeep key id [FILE]`: a key file's id as manifests show it, so that whoever holds several
//! key files can tell which one a backup needs.

use pgkeep::backends::KeyUrl;
use pgkeep::keys::file::FileKeyProvider;
use pgkeep::keys::KeyProvider;
use pgkeep::ops;

use super::{usage, Failure};
use crate::args::{KeyCommand, KeyIdArgs};
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, command: &KeyCommand) -> Result<u8, Failure> {
    match command {
        KeyCommand::Id(args) => id(resolver, args),
    }
}

fn id(resolver: &Resolver<'_>, args: &KeyIdArgs) -> Result<u8, Failure> {
    let path = match &args.file {
        Some(path) => path.clone(),
        None => match resolver.backend_config()?.key {
            KeyUrl::File(path) => path,
            KeyUrl::Kms(key) => {
                return Err(usage(format!(
                    "the configured key is the KMS key {key}; manifests name a KMS key by its ARN \
                     (`aws kms describe-key --key-id {key} --query KeyMetadata.Arn`); give a key FILE to print its id"
                )))
            }
        },
    };
    let key = FileKeyProvider::load(&path).map_err(ops::Error::from)?;
    let key_id = key.key_id();
    let shown = serde_json::json!({"path": path.display().to_string(), "key_id": key_id});
    output::print(args.json, &shown, || println!("{key_id}"));
    Ok(0)
}
