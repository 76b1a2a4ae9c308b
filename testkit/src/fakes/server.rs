//! The core of the tests' own HTTP/1.1 servers ([`super::Sink`], [`super::ControlPlane`],
//! [`super::FakeLlm`], [`super::Facilitator`]): a free port, a thread that accepts and hands
//! each connection to its own thread, and a stop that joins the accept thread when dropped; and
//! one request read off a connection.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct TestServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves each connection with `serve(stream, stop)` on a thread of its own; `stop` turns
    /// true when the server is dropped (a connection that waits should give up then).
    pub fn start(serve: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static) -> TestServer {
        TestServer::start_on(0, serve)
    }

    /// As [`TestServer::start`], on 127.0.0.1:`port` (0: a free one).
    pub fn start_on(
        port: u16,
        serve: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let accept = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (serve, stop) = (Arc::clone(&serve), Arc::clone(&stop));
                    std::thread::spawn(move || serve(stream, &stop));
                }
            })
        };
        TestServer {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A request as a test server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }
}

/// Reads the next request (head, then a `content-length` or chunked body) off a kept-alive
/// connection, keeping what follows it in `buf`; `None` at the end of the connection or once
/// `stop` is set.
pub fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
) -> Option<Request> {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..split]).to_string();
            let mut lines = head.split("\r\n");
            let mut start = lines.next().unwrap_or_default().split(' ');
            let method = start.next().unwrap_or_default().to_string();
            let path = start.next().unwrap_or_default().to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let chunked = crate::http::header(&headers, "transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let body = if chunked {
                dechunk(&buf[split + 4..]).map(|(body, used)| (body, split + 4 + used))
            } else {
                let length = crate::http::header(&headers, "content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                buf.get(split + 4..split + 4 + length)
                    .map(|body| (body.to_vec(), split + 4 + length))
            };
            if let Some((body, used)) = body {
                buf.drain(..used);
                return Some(Request {
                    method,
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).to_string(),
                });
            }
        }
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
}

/// A whole chunked body at the start of `data` and how many bytes it took (trailers
/// included), or `None` while it is incomplete. A malformed chunk size ends the body there.
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line = data[at..].windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&data[at..at + line])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        at += line + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let line = data[at..].windows(2).position(|w| w == b"\r\n")?;
                at += line + 2;
                if line == 0 {
                    return Some((body, at));
                }
            }
        }
        body.extend_from_slice(data.get(at..at + size)?);
        at += size;
        data.get(at..at + 2)?;
        at += 2;
    }
}
