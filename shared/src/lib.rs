//! pgkeep: streaming, encrypted, verified PostgreSQL backups.
//!
//! Every edge (the `pgkeep` command, the Lambda functions) is a thin shell over this crate.

pub mod catalog;
pub mod keys;
pub mod model;
pub mod pipeline;
pub mod postgres;
pub mod store;
