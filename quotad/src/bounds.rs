//! What one gRPC client can make quotad hold: bounded (the trust boundary: anyone who reaches
//! the listener is a client). A valid `ShouldRateLimit` request is at most ~10 KB (16
//! descriptors of five short entries), so:
//!
//! - a message above [`MAX_MESSAGE_BYTES`] is refused from its length prefix, before its body
//!   is read (`OUT_OF_RANGE`);
//! - HTTP/2 flow control lets a connection have at most [`CONNECTION_WINDOW`] bytes in flight
//!   towards quotad (a stream [`STREAM_WINDOW`]), so an unread body costs at most that;
//! - a connection may open [`MAX_STREAMS`] streams at once and have [`MAX_IN_FLIGHT`] of them
//!   decided at once (the others wait, unread);
//! - at most [`MAX_CONNECTIONS`] (`--max-connections`) connections are served at once: beyond,
//!   quotad stops accepting and the kernel's backlog holds the rest; a peer that died without
//!   closing frees its slot when keepalive ([`KEEPALIVE_INTERVAL`], [`KEEPALIVE_TIMEOUT`])
//!   gives up on it. A client that connects and never speaks HTTP/2 holds a slot: the
//!   listener must be reachable by Envoys only (mutual TLS and a network policy, the trust
//!   boundary);
//! - a request (its body read and its decision) gets `--request-timeout-ms` in all, then
//!   `CANCELLED`, so a client that trickles its bytes holds a stream no longer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::tls::{self, Tls};

/// Largest request message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bytes a connection may have in flight towards quotad (HTTP/2 connection window).
pub const CONNECTION_WINDOW: u32 = 128 * 1024;
/// Bytes a stream may have in flight towards quotad (HTTP/2 stream window).
pub const STREAM_WINDOW: u32 = 64 * 1024;
/// Streams a connection may have open at once (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const MAX_STREAMS: u32 = 256;
/// Requests of one connection decided at once.
pub const MAX_IN_FLIGHT: usize = 256;
/// Connections served at once, by default (`--max-connections`).
pub const MAX_CONNECTIONS: u64 = 512;
/// HTTP/2 pings on an idle connection this often; TCP keepalive probes too.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// A ping unanswered this long closes the connection (and frees its slot).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's byte stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection, holding one of the [`MAX_CONNECTIONS`] permits until it closes.
pub struct Capped {
    stream: Box<dyn Io>,
    info: TcpConnectInfo,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

/// The listener's connections, at most `max` open at once (TCP_NODELAY set: decisions are
/// small writes), over TLS when `tls` is given (each handshake in a task of its own, at most
/// [`tls::HANDSHAKE_TIMEOUT`] long, holding its connection's slot). An accept error (e.g. out
/// of file descriptors) is logged and retried shortly, never the end of the server; a failed
/// handshake closes that connection only.
pub fn capped_incoming(
    listener: TcpListener,
    max: usize,
    tls: Option<Tls>,
) -> ReceiverStream<io::Result<Capped>> {
    let (sender, receiver) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let stream = loop {
                match listener.accept().await {
                    Ok((stream, _)) => break stream,
                    Err(e) => {
                        log::warn!("gRPC listener: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("gRPC connection: cannot set TCP_NODELAY: {e}");
            }
            let info = stream.connect_info();
            let Some(tls) = &tls else {
                let capped = Capped {
                    stream: Box::new(stream),
                    info,
                    _permit: permit,
                };
                if sender.send(Ok(capped)).await.is_err() {
                    return; // the server stopped
                }
                continue;
            };
            let acceptor = tls.acceptor();
            let sender = sender.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            log::debug!(
                                "gRPC connection from {:?}: TLS handshake failed: {e}",
                                info.remote_addr()
                            );
                            return;
                        }
                        Err(_) => {
                            log::debug!(
                                "gRPC connection from {:?}: TLS handshake timed out",
                                info.remote_addr()
                            );
                            return;
                        }
                    };
                let capped = Capped {
                    stream: Box::new(stream),
                    info,
                    _permit: permit,
                };
                let _ = sender.send(Ok(capped)).await;
            });
        }
    });
    ReceiverStream::new(receiver)
}
