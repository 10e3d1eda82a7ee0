//! pg_dump as a child process whose stdout is the start of the pipeline.
//!
//! End of stdout never means success: [`PgDump::finish`] waits for the exit status, and a
//! non-zero exit fails the backup with the tail of pg_dump's stderr, even when bytes came out.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::postgres::PgTarget;

/// How much of pg_dump's stderr is kept for the error message.
const STDERR_TAIL: usize = 2000;

/// pg_dump (or any archive-producing command) failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// It could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("{program} failed ({status}){}", tail_text(.stderr_tail))]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// Waiting for it failed.
    #[error("waiting for {program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn tail_text(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// What a child printed on stderr, for its exit's verdict.
#[derive(Debug, Default)]
pub(crate) struct StderrSummary {
    /// The last [`STDERR_TAIL`] bytes, for error messages.
    pub tail: String,
    /// Lines reporting an error (`pg_restore: error: …`).
    pub errors: usize,
    /// Error lines that contained the tolerated text.
    pub tolerated: usize,
}

/// Logs a child's stderr line by line and keeps its last [`STDERR_TAIL`] bytes for the error
/// message (pg_dump and pg_restore alike); counts its error lines and those containing
/// `tolerated`.
pub(crate) fn collect_stderr(
    program: &str,
    stderr: tokio::process::ChildStderr,
    tolerated: Option<&'static str>,
) -> JoinHandle<StderrSummary> {
    let name = program.to_owned();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut summary = StderrSummary::default();
        let tail = &mut summary.tail;
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(program = %name, "{line}");
            // `pg_restore: error: …` (the name it calls itself, whatever its path).
            let is_error = line
                .split_once(": error:")
                .is_some_and(|(name, _)| !name.is_empty() && !name.contains(char::is_whitespace));
            if is_error {
                summary.errors += 1;
                if tolerated.is_some_and(|t| line.contains(t)) {
                    summary.tolerated += 1;
                }
            }
            if !tail.is_empty() {
                tail.push('\n');
            }
            tail.push_str(&line);
            if tail.len() > STDERR_TAIL {
                let cut = tail.len() - STDERR_TAIL;
                let cut = (cut..tail.len())
                    .find(|i| tail.is_char_boundary(*i))
                    .unwrap_or(0);
                tail.drain(..cut);
            }
        }
        summary
    })
}

/// A running archive producer; read its stdout to the end, then call [`PgDump::finish`].
pub struct PgDump {
    program: String,
    child: Child,
    stderr: JoinHandle<StderrSummary>,
}

impl PgDump {
    /// Starts `pg_dump --format=custom --compress=0` against `target`, connection settings and
    /// password in the environment only. `--compress=0` because pgkeep compresses once itself
    /// and reads the uncompressed COPY data to count rows.
    pub fn spawn(
        program: &Path,
        target: &PgTarget,
        extra_args: &[String],
    ) -> Result<(PgDump, ChildStdout), DumpError> {
        let mut cmd = Command::new(program);
        cmd.args([
            "--format=custom",
            "--compress=0",
            "--no-password",
            "--lock-wait-timeout=600s",
        ])
        .args(extra_args);
        target.apply_env(&mut cmd).map_err(|e| DumpError::Spawn {
            program: "pg_dump".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Self::spawn_command(cmd)
    }

    /// Starts any command as the archive producer (tests use this to simulate failures).
    pub fn spawn_command(mut cmd: Command) -> Result<(PgDump, ChildStdout), DumpError> {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let program = Path::new(&program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(program);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| DumpError::Spawn {
            program: program.clone(),
            source,
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        super::widen_pipe(&stdout);
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr = collect_stderr(&program, stderr, None);
        Ok((
            PgDump {
                program,
                child,
                stderr,
            },
            stdout,
        ))
    }

    /// Waits for the exit status; only exit code 0 is success.
    pub async fn finish(mut self) -> Result<(), DumpError> {
        let status = self.child.wait().await.map_err(|source| DumpError::Wait {
            program: self.program.clone(),
            source,
        })?;
        let stderr_tail = self.stderr.await.unwrap_or_default().tail;
        if status.success() {
            Ok(())
        } else {
            Err(DumpError::Failed {
                program: self.program,
                status,
                stderr_tail: stderr_tail.trim().to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn nonzero_exit_fails_even_after_output() {
        let (dump, mut out) = PgDump::spawn_command(sh(
            "printf archive; echo 'pg_dump: error: boom' >&2; exit 3",
        ))
        .unwrap();
        let mut bytes = Vec::new();
        out.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(bytes, b"archive");
        let err = dump.finish().await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DumpError::Failed { .. }));
        assert!(msg.contains("boom") && msg.contains('3'), "{msg}");
    }

    #[tokio::test]
    async fn zero_exit_succeeds_and_long_stderr_is_trimmed() {
        let (dump, mut out) = PgDump::spawn_command(sh(
            "i=0; while [ $i -lt 500 ]; do echo warning line $i >&2; i=$((i+1)); done; printf ok",
        ))
        .unwrap();
        out.read_to_end(&mut Vec::new()).await.unwrap();
        dump.finish().await.unwrap();
        let (dump, mut out) = PgDump::spawn_command(sh(
            "i=0; while [ $i -lt 500 ]; do echo line $i >&2; i=$((i+1)); done; exit 1",
        ))
        .unwrap();
        out.read_to_end(&mut Vec::new()).await.unwrap();
        let DumpError::Failed { stderr_tail, .. } = dump.finish().await.unwrap_err() else {
            panic!()
        };
        assert!(stderr_tail.len() <= STDERR_TAIL);
        assert!(stderr_tail.ends_with("line 499"));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let err = PgDump::spawn_command(Command::new("/nonexistent/pg_dump"))
            .err()
            .unwrap();
        assert!(matches!(err, DumpError::Spawn { .. }));
    }
}
