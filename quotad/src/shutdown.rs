//! Shutdown with a deadline. The first SIGTERM or SIGINT stops accepting, reports NOT_SERVING
//! and lets the calls in flight finish (each connection gets HTTP/2 GOAWAY); quotad exits when
//! every connection has closed, or when the drain deadline (`--shutdown-timeout-ms`) passes,
//! whichever comes first. A peer that never answers GOAWAY (a frozen Envoy, a connection that
//! never spoke HTTP/2) would otherwise keep quotad alive for ever: at the deadline its
//! connection is cut. A second signal exits at once, with status 128 + the signal's number (143
//! for SIGTERM, 130 for SIGINT), as if that signal had killed it: calls still in flight get no
//! answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// The drain deadline by default (`--shutdown-timeout-ms`): above the longest call
/// (`--request-timeout-ms`, 2 s by default), below Kubernetes' termination grace period (the
/// example's 15 s, 30 s by default).
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// A stop signal quotad acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Term,
    Int,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
        }
    }

    /// The exit status of a second signal: 128 + its number, the status a shell reports for a
    /// process that signal killed.
    pub fn exit_status(self) -> i32 {
        match self {
            Stop::Term => 128 + 15,
            Stop::Int => 128 + 2,
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made (make it before the start line is
/// logged: a signal before then would otherwise kill quotad without a drain). Every signal is
/// seen, the second too.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn new() -> Result<Signals, String> {
        let catch = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot catch {name}: {e}"))
        };
        Ok(Signals {
            term: catch(SignalKind::terminate(), "SIGTERM")?,
            int: catch(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.term.recv() => Stop::Term,
            _ = self.int.recv() => Stop::Int,
        }
    }
}

/// How many of the listener's connections are open: counted from accept to close.
#[derive(Clone, Default)]
pub struct Connections(Arc<AtomicUsize>);

impl Connections {
    pub fn open(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// The listener's connections, each counted while it is open.
    pub fn track<S, T, E>(&self, incoming: S) -> impl Stream<Item = Result<Tracked<T>, E>>
    where
        S: Stream<Item = Result<T, E>>,
    {
        let open = self.0.clone();
        incoming.map(move |accepted| {
            accepted.map(|io| {
                open.fetch_add(1, Ordering::SeqCst);
                Tracked {
                    io,
                    _open: Open(open.clone()),
                }
            })
        })
    }
}

/// One count of [`Connections`], given back when the connection is dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection counted in [`Connections`] while it is open.
pub struct Tracked<T> {
    io: T,
    _open: Open,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T: Connected> Connected for Tracked<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// After the first signal (`first`, already told to the servers): waits for `stopped` (the
/// servers' graceful stop: every connection closed) at most `deadline`. Returns `stopped`'s
/// result if it finishes in time. Otherwise exits the process itself, without waiting for
/// anything more: with status 0 when the deadline passes (the connections still open are cut,
/// and counted in the log), with [`Stop::exit_status`] at a second signal.
pub async fn drain(
    first: Stop,
    stopped: impl Future<Output = Result<(), String>>,
    deadline: Duration,
    signals: &mut Signals,
    connections: &Connections,
) -> Result<(), String> {
    log::info!(
        "quotad stopping ({}): NOT_SERVING, no new connections, finishing the calls in flight \
         (gRPC connections open: {}) for at most {} ms; a second signal exits at once",
        first.name(),
        connections.open(),
        deadline.as_millis()
    );
    tokio::select! {
        result = stopped => {
            if result.is_ok() {
                log::info!("quotad stopped: every connection closed");
            }
            result
        }
        () = tokio::time::sleep(deadline) => {
            log::warn!(
                "quotad stopped: the drain deadline ({} ms) passed; gRPC connections cut: {}",
                deadline.as_millis(),
                connections.open()
            );
            std::process::exit(0)
        }
        second = signals.next() => {
            log::warn!(
                "quotad stopped at once on a second signal ({}); gRPC connections cut: {}; exit \
                 status {}",
                second.name(),
                connections.open(),
                second.exit_status()
            );
            std::process::exit(second.exit_status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_counted_from_accept_to_close() {
        let connections = Connections::default();
        let accepted: Vec<Result<u8, ()>> = vec![Ok(1), Err(()), Ok(2)];
        let mut tracked = Box::pin(connections.track(tokio_stream::iter(accepted)));
        let first = tracked.next().await;
        assert_eq!(connections.open(), 1);
        let refused = tracked.next().await;
        assert!(matches!(refused, Some(Err(()))));
        assert_eq!(connections.open(), 1, "an accept error is not a connection");
        let second = tracked.next().await;
        assert_eq!(connections.open(), 2);
        drop(first);
        assert_eq!(connections.open(), 1);
        drop(second);
        assert_eq!(connections.open(), 0);
    }

    #[test]
    fn a_second_signal_exits_as_that_signal_would() {
        assert_eq!(Stop::Term.exit_status(), 143);
        assert_eq!(Stop::Int.exit_status(), 130);
    }
}
