//! pgkeep: streaming, encrypted, verified PostgreSQL backups.
//!
//! Every edge (the `pgkeep` command, the Lambda functions) is a thin shell over this crate:
//! [`backends`] turns configuration into an object store, a catalog and a key provider;
//! [`ops`] holds the operations; [`pipeline`] is the streaming data path; [`model`] the domain;
//! [`retention`] decides what to keep; [`alert`] and [`metrics`] tell people and CloudWatch;
//! [`outfile`] writes a file a user names without exposing or replacing anything.
//! [`aws`] the AWS configuration shared by the S3, DynamoDB and KMS backends. The Lambda
//! functions each make one call into [`ops::jobs`]; [`api`] is the status API; [`invoke`]
//! starts one function from another. [`wiring`] builds an edge's parts once per
//! process, `lambda` (feature `lambda`) is what every Lambda function's `main` shares, and
//! test doubles live in `testing`, behind the `testing` feature.

pub mod alert;
pub mod api;
pub mod aws;
pub mod backends;
pub mod catalog;
pub mod config;
pub mod globals;
pub mod history;
pub mod invoke;
pub mod keys;
pub mod labels;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod outfile;
pub mod pipeline;
pub mod postgres;
pub mod process;
pub mod retention;
pub mod selection;
pub mod signals;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trigger;
pub mod wiring;
