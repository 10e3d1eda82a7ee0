//! SIGINT and SIGTERM as cancellation: the command installs the handlers once at start-up, and
//! an operation that must end honestly (a backup, a restore) waits on [`received`] beside its
//! work, drops the work when a signal comes, and takes its failure path (the record marked
//! failed, the upload aborted, the lease released, partial and staged files removed).
//!
//! Installed early, so a signal in the first milliseconds is not lost to the default action:
//! it is remembered and the first [`received`] returns at once. SIGTERM is what systemd,
//! ECS and Kubernetes send; it is handled exactly like Ctrl-C.
//!
//! A Lambda invocation has a third way to end: its time limit, after which the process is
//! killed without a signal. [`with_deadline`] gives a run that limit, and [`stop_requested`]
//! fires a margin before it, so the run ends through the same failure path while it still can.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// A signal that ends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (a service manager stopping us).
    Terminate,
}

impl Signal {
    /// The exit code shells report for it: 128 + the signal number (130, 143).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

static RECEIVED: OnceLock<watch::Receiver<Option<Signal>>> = OnceLock::new();

/// Handles SIGINT and SIGTERM from now on (instead of dying at once). Call once, inside the
/// tokio runtime; later calls do nothing.
pub fn install() -> std::io::Result<()> {
    if RECEIVED.get().is_some() {
        return Ok(());
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(None);
    if RECEIVED.set(rx).is_err() {
        return Ok(());
    }
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = interrupt.recv() => Signal::Interrupt,
            _ = terminate.recv() => Signal::Terminate,
        };
        tracing::info!(signal = first.name(), "signal received; ending the run");
        let _ = tx.send(Some(first));
        // Keep the handlers (and the sender) alive: a second signal must not kill us midway
        // through the cleanup either.
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    });
    Ok(())
}

/// The first SIGINT or SIGTERM since [`install`]; never returns when nothing was installed.
pub async fn received() -> Signal {
    let Some(rx) = RECEIVED.get() else {
        return std::future::pending().await;
    };
    let mut rx = rx.clone();
    let signal = match rx.wait_for(Option::is_some).await {
        Ok(signal) => signal.expect("waited for Some"),
        Err(_) => return std::future::pending().await,
    };
    signal
}

/// The signal received so far, if any (for an exit code after the run ended through it).
pub fn received_now() -> Option<Signal> {
    RECEIVED.get().and_then(|rx| *rx.borrow())
}

tokio::task_local! {
    /// When the invocation running this task is killed.
    static DEADLINE: SystemTime;
}

/// Runs `work` knowing it is killed at `deadline` (a Lambda invocation's time limit).
pub async fn with_deadline<F: Future>(deadline: SystemTime, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// Why the run must end now: the first SIGINT or SIGTERM, or `margin` before the deadline
/// given by [`with_deadline`]. Never returns when neither comes.
pub async fn stop_requested(margin: Duration) -> String {
    let deadline = DEADLINE.try_with(|d| *d).ok();
    let limit = async move {
        match deadline {
            Some(deadline) => {
                let left = deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .saturating_sub(margin);
                tokio::time::sleep(left).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        signal = received() => format!("interrupted ({})", signal.name()),
        () = limit => format!(
            "stopped {}s before the invocation's time limit, which it would not have met (a database this large needs a longer timeout or another runner)",
            margin.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_deadline_stops_a_run_a_margin_before_it() {
        let start = std::time::Instant::now();
        let deadline = SystemTime::now() + Duration::from_millis(1300);
        let why = with_deadline(deadline, stop_requested(Duration::from_secs(1))).await;
        let waited = start.elapsed();
        assert!(why.contains("time limit"), "{why}");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(1200),
            "{waited:?}"
        );
        // Outside an invocation, nothing but a signal stops the run.
        let free = tokio::time::timeout(
            Duration::from_millis(50),
            stop_requested(Duration::from_secs(1)),
        )
        .await;
        assert!(free.is_err());
    }
}
