//! The streaming backup pipeline: pg_dump's archive flows through small adapters to storage.

pub mod archive_scan;
pub mod compress;
pub mod crypt;
pub mod digest;
pub mod pg_dump;
