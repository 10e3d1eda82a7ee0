//! One module per subcommand; each turns its arguments into one library call and prints the
//! result. What they share: how a failure becomes a message and an exit code.

use pgkeep::model::BackupId;
use pgkeep::ops::{self, ErrorKind};

pub mod audit;
pub mod backup;
pub mod cat;
pub mod delete;
pub mod forget;
pub mod init;
pub mod job;
pub mod key;
pub mod list;
pub mod prune;
pub mod repair;
pub mod report;
pub mod restore;
pub mod restores;
pub mod show;
pub mod status;
pub mod verify;

/// Exit code of `pgkeep status` when a database is unhealthy (distinct from every failure).
pub const EXIT_UNHEALTHY: u8 = 11;

/// A failure: the one line to print and the exit code it deserves.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<ops::Error> for Failure {
    /// The library's messages already carry their causes, so only the top is printed.
    fn from(e: ops::Error) -> Self {
        Failure {
            code: e.kind().exit_code() as u8,
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            code: 1,
            message: format!("{error:#}"),
        }
    }
}

/// A usage or configuration mistake (exit 2).
pub fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: ErrorKind::Config.exit_code() as u8,
        message: message.into(),
    }
}

/// A failed operation: `message` and the exit code of `error`'s kind.
pub fn failed(error: &ops::Error, message: String) -> Failure {
    Failure {
        code: error.kind().exit_code() as u8,
        message,
    }
}

/// A backup id from the command line.
/// `--jobs` when given, else the entry in `PGKEEP_JOBS` of the database backup `id` belongs
/// to (the functions' rule), else 1 (also when no backup is named).
pub async fn jobs_for_backup(
    services: &pgkeep::backends::Services,
    flag: Option<u32>,
    id: Option<&BackupId>,
) -> Result<u32, Failure> {
    if let Some(n) = flag {
        return Ok(n);
    }
    let Some(id) = id else { return Ok(1) };
    // An unknown backup is reported by the command itself, with its own message.
    let Ok(record) = services.catalog.get(id).await else {
        return Ok(1);
    };
    Ok(
        pgkeep::config::jobs_or_setting(None, &crate::resolve::env, &record.database)
            .map_err(ops::Error::from)?,
    )
}

pub fn parse_id(id: &str) -> Result<BackupId, Failure> {
    id.parse()
        .map_err(|e: pgkeep::model::InvalidBackupId| usage(e.to_string()))
}
