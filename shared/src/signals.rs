//! SIGINT and SIGTERM as cancellation: the command installs the handlers once at start-up, and
//! an operation that must end honestly (a backup, a restore) waits on [`received`] beside its
//! work, drops the work when a signal comes, and takes its failure path (the record marked
//! failed, the upload aborted, the lease released, partial and staged files removed).
//!
//! Installed early, so a signal in the first milliseconds is not lost to the default action:
//! it is remembered and the first [`received`] returns at once. SIGTERM is what systemd,
//! ECS and Kubernetes send; it is handled exactly like Ctrl-C.

use std::sync::OnceLock;

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
