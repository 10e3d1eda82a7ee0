//! A TCP proxy on loopback that can be cut: S3 going away mid-upload, for real, in front of
//! the emulator. It forwards bytes both ways and counts those sent upstream; once cut (by hand,
//! or on its own after a given number of upstream bytes, so the cut lands mid-upload whatever
//! the machine's speed) it stops accepting (new connections are refused) and resets every
//! open connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it cuts it.
pub struct Proxy {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    upstream_bytes: Arc<AtomicU64>,
    cut: watch::Sender<bool>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<free port>` to `upstream` (`http://host:port` or `host:port`);
    /// with `cut_after`, cuts itself once that many bytes went upstream.
    pub fn start(upstream: &str, cut_after: Option<u64>) -> Result<Proxy> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("upstream {upstream:?} is not host:port"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let upstream_bytes = Arc::new(AtomicU64::new(0));
        let (cut, _) = watch::channel(false);
        runtime.spawn(accept(
            listener,
            upstream,
            upstream_bytes.clone(),
            cut.clone(),
            cut_after,
        ));
        Ok(Proxy {
            runtime: Some(runtime),
            addr,
            upstream_bytes,
            cut,
        })
    }

    /// `http://127.0.0.1:<port>`, for `PGKEEP_AWS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes forwarded upstream so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.upstream_bytes.load(Ordering::SeqCst)
    }

    /// Whether the proxy was cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Stops accepting and resets every open connection.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    upstream_bytes: Arc<AtomicU64>,
    cut: watch::Sender<bool>,
    cut_after: Option<u64>,
) {
    let mut cut_rx = cut.subscribe();
    loop {
        tokio::select! {
            _ = cut_rx.wait_for(|c| *c) => return, // the listener closes: connections refused
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if *cut.borrow() {
                    return;
                }
                tokio::spawn(forward(client, upstream, upstream_bytes.clone(), cut.clone(), cut_after));
            }
        }
    }
}

/// One connection, until either side closes or the proxy is cut (then both sides are reset).
async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    upstream_bytes: Arc<AtomicU64>,
    cut: watch::Sender<bool>,
    cut_after: Option<u64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Closing with linger 0 sends a reset: the client sees the connection die, not end.
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut cut_rx = cut.subscribe();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if *cut.borrow() || server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            let total = upstream_bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if cut_after.is_some_and(|limit| total >= limit) {
                cut.send_replace(true);
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending ends the connection: HTTP clients read a response to the end or
    // not at all, so no half-close is needed.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut_rx.wait_for(|c| *c) => {}
    }
}
