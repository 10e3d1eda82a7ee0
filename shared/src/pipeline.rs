//! The streaming backup pipeline: pg_dump's archive flows through small adapters to storage.

pub mod archive_scan;
pub mod crypt;
