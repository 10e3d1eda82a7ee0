//! pg_restore as a child process: the archive goes in on stdin (or as a staged file), and the
//! exit status decides.
//!
//! As with pg_dump, the end of its input never means success: [`PgRestore::finish`] waits for
//! the exit status and a non-zero exit fails with the tail of pg_restore's stderr. Connection
//! settings and the password reach it through the environment only.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use super::pg_dump::{collect_stderr, DumpError, StderrSummary};
use crate::postgres::PgTarget;

/// How pg_restore writes into a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Parallel workers (`--jobs`); above 1 needs a file, not stdin.
    pub jobs: u32,
    /// `--no-owner --no-privileges`: objects belong to the restoring role and no GRANTs are
    /// replayed (for scratch databases, or a server without the original roles).
    pub no_owner: bool,
    /// pg_restore 17 and later start every session with `SET transaction_timeout = 0`, which
    /// servers before 17 reject; with no pg_restore of the server's own major at hand, that one
    /// error is tolerated (see [`tolerates_transaction_timeout`]) and every other still fails.
    pub tolerate_transaction_timeout: bool,
    /// Only this section of the archive (`--section=pre-data|data|post-data`): a parallel
    /// backup's parts are restored in three steps. `None`: everything.
    pub section: Option<&'static str>,
}

/// The error pg_restore 17+ meets on every connection to a server before 17.
const TRANSACTION_TIMEOUT_ERROR: &str =
    "unrecognized configuration parameter \"transaction_timeout\"";

/// Whether a pg_restore of major `tool_major` writing into a server of major `server_major`
/// meets [`TRANSACTION_TIMEOUT_ERROR`] on every session.
pub fn tolerates_transaction_timeout(tool_major: u32, server_major: u32) -> bool {
    tool_major >= 17 && server_major < 17
}

/// A running pg_restore; close its stdin (drop it) when the archive is written, then call
/// [`PgRestore::finish`].
pub struct PgRestore {
    program: String,
    child: Child,
    stderr: JoinHandle<StderrSummary>,
    stdout: Option<JoinHandle<std::io::Result<String>>>,
    /// Exit 1 with only [`TRANSACTION_TIMEOUT_ERROR`]s counts as success.
    tolerate_transaction_timeout: bool,
}

impl PgRestore {
    /// Restores an archive into the database `target` names: from stdin when `file` is
    /// `None`, else from `file` (needed for `jobs > 1`). Stops at the first error
    /// (`--exit-on-error`), so a zero exit means every entry was restored; when the one
    /// tolerated error is expected, it runs on and [`PgRestore::finish`] accepts an exit whose
    /// every error was that one.
    pub fn restore(
        program: &Path,
        target: &PgTarget,
        options: RestoreOptions,
        file: Option<&Path>,
    ) -> Result<(PgRestore, Option<ChildStdin>), DumpError> {
        Self::restore_entries(program, target, options, file, None)
    }

    /// [`PgRestore::restore`] of only the entries `list` names (`--use-list`, a file of
    /// `dump_id;` lines), in its order (dependencies first when `jobs > 1`).
    pub fn restore_entries(
        program: &Path,
        target: &PgTarget,
        options: RestoreOptions,
        file: Option<&Path>,
        list: Option<&Path>,
    ) -> Result<(PgRestore, Option<ChildStdin>), DumpError> {
        let mut cmd = Command::new(program);
        target.apply_env(&mut cmd).map_err(|e| DumpError::Spawn {
            program: "pg_restore".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // A connection string, so that no database name is ever taken for one.
        cmd.arg(format!(
            "--dbname=dbname={}",
            conninfo_value(target.database())
        ))
        .arg("--no-password");
        if !options.tolerate_transaction_timeout {
            cmd.arg("--exit-on-error");
        }
        if options.no_owner {
            cmd.args(["--no-owner", "--no-privileges"]);
        }
        if options.jobs > 1 {
            cmd.arg(format!("--jobs={}", options.jobs));
        }
        if let Some(section) = options.section {
            cmd.arg(format!("--section={section}"));
        }
        if let Some(list) = list {
            cmd.arg("--use-list").arg(list);
        }
        match file {
            Some(path) => {
                cmd.arg(path);
                let (mut restore, _) = Self::spawn_command(cmd, false, false)?;
                restore.tolerate_transaction_timeout = options.tolerate_transaction_timeout;
                Ok((restore, None))
            }
            None => {
                let (mut restore, stdin) = Self::spawn_command(cmd, true, false)?;
                restore.tolerate_transaction_timeout = options.tolerate_transaction_timeout;
                Ok((restore, stdin))
            }
        }
    }

    /// `pg_restore --list` of an archive fed on stdin: its table of contents as text, no
    /// database involved. It stops reading once it has the TOC; keep feeding the rest of the
    /// archive elsewhere to check it whole.
    pub fn list(program: &Path) -> Result<(PgRestore, ChildStdin), DumpError> {
        let mut cmd = Command::new(program);
        cmd.arg("--list");
        let (restore, stdin) = Self::spawn_command(cmd, true, true)?;
        Ok((restore, stdin.expect("stdin is piped")))
    }

    /// Starts any command in pg_restore's place (tests use this to simulate failures).
    pub fn spawn_command(
        mut cmd: Command,
        stdin: bool,
        capture_stdout: bool,
    ) -> Result<(PgRestore, Option<ChildStdin>), DumpError> {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let program = Path::new(&program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(program);
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| DumpError::Spawn {
            program: program.clone(),
            source,
        })?;
        let input = child.stdin.take();
        if let Some(input) = &input {
            // pg_restore reads 4 KiB at a time: a wide pipe saves it and the feeder wake-ups.
            super::widen_pipe(input);
        }
        let stderr = collect_stderr(
            &program,
            child.stderr.take().expect("stderr is piped"),
            Some(TRANSACTION_TIMEOUT_ERROR),
        );
        // Read stdout concurrently, so a long listing cannot block the child while it is fed.
        let stdout = child.stdout.take().map(|mut out| {
            tokio::spawn(async move {
                let mut text = String::new();
                out.read_to_string(&mut text).await?;
                Ok(text)
            })
        });
        Ok((
            PgRestore {
                program,
                child,
                stderr,
                stdout,
                tolerate_transaction_timeout: false,
            },
            input,
        ))
    }

    /// The program's name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Stops it now (its input turned out to be bad); [`PgRestore::finish`] then reports the
    /// kill as a failure.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Waits for the exit status; only exit code 0 is success. Returns what it printed on
    /// stdout (the listing of [`PgRestore::list`]; empty otherwise).
    pub async fn finish(mut self) -> Result<String, DumpError> {
        let status = self.child.wait().await.map_err(|source| DumpError::Wait {
            program: self.program.clone(),
            source,
        })?;
        let stderr = self.stderr.await.unwrap_or_default();
        let stdout = match self.stdout.take() {
            Some(task) => task
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|source| DumpError::Wait {
                    program: self.program.clone(),
                    source,
                })?,
            None => String::new(),
        };
        let only_tolerated = self.tolerate_transaction_timeout
            && status.code() == Some(1)
            && stderr.errors > 0
            && stderr.errors == stderr.tolerated;
        if status.success() || only_tolerated {
            Ok(stdout)
        } else {
            Err(DumpError::Failed {
                program: self.program,
                status,
                stderr_tail: stderr.tail.trim().to_owned(),
            })
        }
    }
}

/// A libpq connection-string value, single-quoted with `\` and `'` escaped.
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn a_listing_is_returned_after_its_input_closes() {
        let (restore, stdin) =
            PgRestore::spawn_command(sh("cat; echo; echo listed"), true, true).unwrap();
        let mut stdin = stdin.unwrap();
        stdin.write_all(b"TOC").await.unwrap();
        drop(stdin);
        assert_eq!(restore.finish().await.unwrap(), "TOC\nlisted\n");
    }

    #[tokio::test]
    async fn a_nonzero_exit_fails_with_the_stderr_tail_even_after_reading_everything() {
        let (restore, stdin) = PgRestore::spawn_command(
            sh("cat >/dev/null; echo 'pg_restore: error: could not execute query' >&2; exit 1"),
            true,
            false,
        )
        .unwrap();
        let mut stdin = stdin.unwrap();
        stdin.write_all(b"archive").await.unwrap();
        drop(stdin);
        let err = restore.finish().await.unwrap_err();
        assert!(matches!(err, DumpError::Failed { .. }));
        assert!(err.to_string().contains("could not execute query"), "{err}");
    }

    /// What pg_restore 18 prints for each session against a PostgreSQL 16 server.
    const TIMEOUT_ERROR: &str = "echo 'pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter \"transaction_timeout\"' >&2; echo 'Command was: SET transaction_timeout = 0;' >&2";

    async fn finish_script(script: &str, tolerate: bool) -> Result<String, DumpError> {
        let (mut restore, _) = PgRestore::spawn_command(sh(script), false, false).unwrap();
        restore.tolerate_transaction_timeout = tolerate;
        restore.finish().await
    }

    #[tokio::test]
    async fn only_transaction_timeout_errors_pass_when_tolerated() {
        let two_sessions = format!(
            "{TIMEOUT_ERROR}; {TIMEOUT_ERROR}; echo 'pg_restore: warning: errors ignored on restore: 2' >&2; exit 1"
        );
        assert!(finish_script(&two_sessions, true).await.is_ok());
        let err = finish_script(&two_sessions, false).await.unwrap_err();
        assert!(err.to_string().contains("transaction_timeout"), "{err}");

        let another = format!(
            "{TIMEOUT_ERROR}; echo 'pg_restore: error: could not execute query: ERROR:  relation \"x\" already exists' >&2; exit 1"
        );
        let err = finish_script(&another, true).await.unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        // A crash is never tolerated, whatever it printed.
        let killed = format!("{TIMEOUT_ERROR}; kill -9 $$");
        assert!(finish_script(&killed, true).await.is_err());
        assert!(finish_script("exit 1", true).await.is_err());
    }

    #[test]
    fn the_error_is_tolerated_only_for_newer_tools_on_older_servers() {
        assert!(tolerates_transaction_timeout(18, 16));
        assert!(tolerates_transaction_timeout(17, 13));
        assert!(!tolerates_transaction_timeout(18, 17));
        assert!(!tolerates_transaction_timeout(16, 16));
        assert!(!tolerates_transaction_timeout(15, 13));
    }

    #[tokio::test]
    async fn a_killed_restore_is_a_failure() {
        let (mut restore, _stdin) =
            PgRestore::spawn_command(sh("exec sleep 60"), true, false).unwrap();
        restore.kill();
        assert!(restore.finish().await.is_err());
    }

    #[test]
    fn database_names_are_passed_as_quoted_connection_strings() {
        assert_eq!(conninfo_value(r"a'b\c d=e"), r"'a\'b\\c d=e'");
    }
}
