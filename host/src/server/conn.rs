//! Guards on a client connection before and around hyper: the cap on
//! connections open at once, all clients together and per client address;
//! the refusal past it (closed at once, logged once per interval); and the
//! time a client has for its first bytes, before hyper knows which HTTP it
//! speaks.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Connections open now, counted against `[server] max_connections` and
/// `max_connections_per_ip`.
pub(super) struct Gate {
    max: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// `max_connections` are open.
    Full,
    /// This address has `max_connections_per_ip` open.
    PerAddress,
}

/// A connection's place under the cap; given back when dropped.
pub(super) struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    pub(super) fn new(max: usize, max_per_ip: usize) -> Arc<Gate> {
        Arc::new(Gate { max, max_per_ip, open: Mutex::new(Open::default()) })
    }

    /// A place for a connection from `ip`, or why there is none. The lock is
    /// held for a hash-map update: never across an await.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.max {
            return Err(Refused::Full);
        }
        let mine = open.by_ip.entry(ip).or_default();
        if *mine >= self.max_per_ip {
            return Err(Refused::PerAddress);
        }
        *mine += 1;
        open.total += 1;
        Ok(Admitted { gate: self.clone(), ip })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

/// What a refused plain-HTTP client reads before the connection closes:
/// the socket buffer of a new connection takes it whole, so writing it
/// never waits. (A TLS client is only closed: it expects a handshake.)
pub(super) const REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: text/plain\r\ncontent-length: 44\r\n\r\ntoo many connections open; retry in a second";

/// Refusals are logged once per interval with their count: a flood of
/// connections must not become a flood of log lines.
pub(super) struct RefusalLog {
    interval: Duration,
    last: Option<Instant>,
    full: u64,
    per_address: u64,
}

impl RefusalLog {
    pub(super) fn new(interval: Duration) -> Self {
        RefusalLog { interval, last: None, full: 0, per_address: 0 }
    }

    pub(super) fn note(&mut self, why: Refused, max: usize, max_per_ip: usize) {
        match why {
            Refused::Full => self.full += 1,
            Refused::PerAddress => self.per_address += 1,
        }
        if self.last.is_some_and(|at| at.elapsed() < self.interval) {
            return;
        }
        tracing::warn!(
            "refused {} connection(s) since the last report: {} with max_connections = {max} open, {} from an address with max_connections_per_ip = {max_per_ip} open",
            self.full + self.per_address,
            self.full,
            self.per_address
        );
        (self.last, self.full, self.per_address) = (Some(Instant::now()), 0, 0);
    }
}

/// The bytes a client must send within the header timeout before hyper
/// takes over: the length of the HTTP/2 preface. hyper's HTTP/1 header
/// timeout starts only once the version is known, and HTTP/2 has none, so
/// a client that connects and sends nothing (or "P" and nothing more)
/// would hold its connection for ever without this.
const FIRST_BYTES: usize = 24;

/// A connection that fails its reads once `deadline` passes with fewer than
/// `FIRST_BYTES` received; afterwards it passes everything through.
pub(super) struct FirstBytes<IO> {
    io: IO,
    left: usize,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> FirstBytes<IO> {
    pub(super) fn new(io: IO, within: Duration) -> Self {
        FirstBytes { io, left: FIRST_BYTES, deadline: Some(Box::pin(tokio::time::sleep(within))) }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytes<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else { return poll };
        match &poll {
            Poll::Ready(Ok(())) => {
                this.left = this.left.saturating_sub(buf.filled().len() - before);
                if this.left == 0 {
                    this.deadline = None;
                }
            }
            // Waiting for bytes: the timer wakes this read when it fires.
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request within the header timeout")));
            }
            _ => {}
        }
        poll
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytes<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_cap_counts_all_and_each_address_and_frees_on_drop() {
        let gate = Gate::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refused::PerAddress));
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some(Refused::Full));
        drop(a1);
        assert!(gate.admit(b).is_ok());
    }

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), body.len());
    }

    // Real time, kept short: the host's tokio has no paused clock (no `test-util`).
    #[tokio::test]
    async fn a_client_silent_past_the_timeout_is_cut_off() {
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = FirstBytes::new(server, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test]
    async fn after_the_first_bytes_reads_wait_as_long_as_they_like() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = FirstBytes::new(server, Duration::from_millis(50));
        client.write_all(&[b'G'; FIRST_BYTES]).await.unwrap();
        let mut buf = [0u8; FIRST_BYTES];
        guarded.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 1);
    }
}
