//! pg_dump's stdout read on a thread of its own, handed to the pipeline in batches.
//!
//! pg_dump writes its archive 4 KiB at a time (stdio's buffer for a pipe), and the server
//! feeding it is usually slower than the pipeline reading it. Read through the runtime, every
//! one of those writes woke the I/O driver and then the pipeline's task: about 200,000 context
//! switches and about 0.9 CPU-seconds per 1.4 GB backup, on machines where pgkeep shares two
//! cores with the server. Here a plain thread reads the pipe; when a read finds it nearly empty (the
//! producer is the slower side) the thread waits the time a 1 GB/s producer would take to fill
//! it, so the pipe gathers many writes per wake-up without ever holding pg_dump back.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Bytes handed to the pipeline at once.
const BATCH: usize = 256 << 10;
/// Batches read ahead of the pipeline (memory per stream: this many, one filling, one read).
const QUEUED: usize = 2;
/// Pipe capacity assumed when the kernel does not say (Linux's default).
const DEFAULT_PIPE: usize = 64 << 10;

/// An [`AsyncRead`] over a pipe that a thread of its own reads in batches.
pub struct PipeBatches {
    batches: mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Read batches go back to the thread to be filled again, instead of a fresh zeroed
    /// allocation per batch.
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl PipeBatches {
    /// Reads `pipe` (a pipe's read end, blocking or not) on a new thread until its end; the
    /// thread ends early when this reader is dropped and the writer closes or writes again.
    pub fn spawn(pipe: OwnedFd) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        let capacity = rustix::pipe::fcntl_getpipe_size(&pipe).unwrap_or(DEFAULT_PIPE);
        #[cfg(not(target_os = "linux"))]
        let capacity = DEFAULT_PIPE;
        // The thread's reads block: it has nothing else to do.
        let flags = rustix::fs::fcntl_getfl(&pipe)?;
        rustix::fs::fcntl_setfl(&pipe, flags - rustix::fs::OFlags::NONBLOCK)?;
        let (tx, batches) = mpsc::channel(QUEUED);
        let (spent, recycled) = std::sync::mpsc::sync_channel(QUEUED + 1);
        let file = std::fs::File::from(pipe);
        std::thread::Builder::new()
            .name("pg_dump-out".into())
            .spawn(move || read_batches(file, capacity, &tx, &recycled))?;
        Ok(PipeBatches {
            batches,
            spent,
            current: Vec::new(),
            pos: 0,
        })
    }
}

/// Fills batches (those `recycled` first) from `pipe` and sends them until the pipe ends, a
/// read fails, or the receiver is gone.
fn read_batches(
    mut pipe: std::fs::File,
    capacity: usize,
    tx: &mpsc::Sender<io::Result<Vec<u8>>>,
    recycled: &std::sync::mpsc::Receiver<Vec<u8>>,
) {
    // The time a 1 GB/s producer takes to fill the pipe: 1 ms for a 1 MiB pipe.
    let nap = Duration::from_nanos(capacity as u64);
    loop {
        let mut batch = recycled.try_recv().unwrap_or_default();
        batch.resize(BATCH, 0);
        let mut filled = 0;
        let mut ended = false;
        while filled < BATCH {
            match pipe.read(&mut batch[filled..]) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    filled += n;
                    if n < capacity / 4 && filled < BATCH {
                        std::thread::sleep(nap);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        batch.truncate(filled);
        if (filled > 0 && tx.blocking_send(Ok(batch)).is_err()) || ended {
            return;
        }
    }
}

impl AsyncRead for PipeBatches {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pos == this.current.len() {
            match ready!(this.batches.poll_recv(cx)) {
                Some(Ok(batch)) => {
                    let spent = std::mem::replace(&mut this.current, batch);
                    // Full only if the thread has stopped taking them; then it is dropped.
                    let _ = this.spent.try_send(spent);
                    this.pos = 0;
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.current.len() - this.pos);
        buf.put_slice(&this.current[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Everything written to the pipe, in any pieces and at any pace, comes out once and in
    /// order, and the end of the pipe is the end of the reader.
    #[tokio::test]
    async fn every_byte_arrives_in_order_whatever_the_writes() {
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut pipe = std::fs::File::from(write_end);
            let mut at = 0;
            let mut piece = 1;
            while at < data.len() {
                let end = (at + piece).min(data.len());
                pipe.write_all(&data[at..end]).unwrap();
                at = end;
                // Small writes and large ones, a pause now and then.
                piece = (piece * 13 + 7) % 300_000 + 1;
                if piece % 5 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        let mut reader = PipeBatches::spawn(read_end).unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes differ");
    }

    /// Dropping the reader while the writer still writes ends the thread: the writer sees
    /// the pipe close instead of blocking forever.
    #[tokio::test]
    async fn a_dropped_reader_closes_the_pipe() {
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        let mut reader = PipeBatches::spawn(read_end).unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut pipe = std::fs::File::from(write_end);
            let chunk = vec![1u8; 64 << 10];
            loop {
                if let Err(e) = pipe.write_all(&chunk) {
                    return e.kind();
                }
            }
        });
        let mut first = [0u8; 10];
        reader.read_exact(&mut first).await.unwrap();
        drop(reader);
        let kind = tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
        assert_eq!(kind, io::ErrorKind::BrokenPipe);
    }
}
