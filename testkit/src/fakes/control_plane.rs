//! The control plane of live entitlements in the tests: one JSON document with an ETag.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::server::{read_request, TestServer};

/// How the test control plane answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// The current document with its ETag; 304 when `If-None-Match` matches it.
    Serve,
    /// 503 to every request.
    Down,
    /// Closes every connection without answering.
    Refuse,
    /// Waits this long before answering as `Serve` would.
    Slow(Duration),
}

/// A request the control plane received.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Seconds since the control plane started.
    pub at: f64,
    pub path: String,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
    /// What it answered (0: nothing).
    pub status: u16,
    /// The ETag of the document it was answered with (200 and 304).
    pub etag: String,
}

struct PlaneState {
    /// When the current document was published (seconds since start).
    published_at: f64,
    body: Vec<u8>,
    etag: String,
    answering: Answering,
    /// Send an ETag with each 200 (and answer `If-None-Match`); false: a control plane
    /// without ETags, which answers every request with the whole document.
    etags: bool,
    fetches: Vec<Fetch>,
}

/// A control plane of live entitlements in the test process: serves one JSON document with
/// an ETag (`"v1"`, `"v2"`, ... one per [`ControlPlane::publish`]), answers 304 to a matching
/// `If-None-Match`, can go down, refuse or be slow, and records every request. Stopped (and
/// its thread joined) when dropped.
pub struct ControlPlane {
    pub port: u16,
    state: Arc<Mutex<PlaneState>>,
    published: u32,
    started: Instant,
    _server: TestServer,
}

impl ControlPlane {
    pub fn start(document: &str) -> ControlPlane {
        let state = Arc::new(Mutex::new(PlaneState {
            published_at: 0.0,
            body: document.as_bytes().to_vec(),
            etag: "\"v1\"".into(),
            answering: Answering::Serve,
            etags: true,
            fetches: Vec::new(),
        }));
        let started = Instant::now();
        let server = {
            let state = Arc::clone(&state);
            TestServer::start(move |stream, stop| serve(stream, &state, started, stop))
        };
        ControlPlane {
            port: server.port,
            state,
            published: 1,
            started,
            _server: server,
        }
    }

    /// Serves `document` from now on, with a new ETag (returned).
    pub fn publish(&mut self, document: &str) -> String {
        self.published += 1;
        let etag = format!("\"v{}\"", self.published);
        let mut state = self.state.lock().unwrap();
        state.published_at = self.started.elapsed().as_secs_f64();
        state.body = document.as_bytes().to_vec();
        state.etag = etag.clone();
        etag
    }

    /// When the current document was published: every request recorded at or after this
    /// instant was answered from it (both are taken under one lock).
    pub fn published_at(&self) -> f64 {
        self.state.lock().unwrap().published_at
    }

    /// From now on, answer as a control plane without ETags: no `etag` header, never a 304.
    pub fn without_etags(&self) {
        self.state.lock().unwrap().etags = false;
    }

    pub fn answer(&self, answering: Answering) {
        self.state.lock().unwrap().answering = answering;
    }

    /// Every request received, in the order they were answered from the state (`at`).
    pub fn fetches(&self) -> Vec<Fetch> {
        let mut fetches = self.state.lock().unwrap().fetches.clone();
        fetches.sort_by(|a, b| a.at.total_cmp(&b.at));
        fetches
    }

    /// Seconds since the control plane started (the clock of [`Fetch::at`]).
    pub fn clock(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The requests received at or after `at` (see [`ControlPlane::clock`]).
    pub fn fetches_since(&self, at: f64) -> Vec<Fetch> {
        self.fetches().into_iter().filter(|f| f.at >= at).collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("control plane requests: {:#?}", self.fetches());
        }
    }
}

/// Answers one request (every answer closes its connection).
fn serve(mut stream: TcpStream, state: &Mutex<PlaneState>, started: Instant, stop: &AtomicBool) {
    let Some(request) = read_request(&mut stream, &mut Vec::new(), stop) else {
        return;
    };
    let path = request.path.clone();
    let header = |name: &str| request.header(name).map(str::to_string);
    let (if_none_match, authorization) = (header("if-none-match"), header("authorization"));
    let answering = state.lock().unwrap().answering;
    if let Answering::Slow(delay) = answering {
        std::thread::sleep(delay);
    }
    let (body, etag, etags, at) = {
        let s = state.lock().unwrap();
        (
            s.body.clone(),
            s.etag.clone(),
            s.etags,
            started.elapsed().as_secs_f64(),
        )
    };
    let etag_header = if etags {
        format!("etag: {etag}\r\n")
    } else {
        String::new()
    };
    let (status, reply): (u16, Vec<u8>) = match answering {
        Answering::Refuse => (0, Vec::new()),
        Answering::Down => (
            503,
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\nconnection: close\r\n\r\ndown\n"
                .to_vec(),
        ),
        // RFC 9110 §13.1.2: If-None-Match is a list of entity tags.
        Answering::Serve | Answering::Slow(_)
            if etags
                && if_none_match
                    .as_deref()
                    .is_some_and(|list| list.split(',').any(|t| t.trim() == etag)) =>
        (
            304,
            format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\nconnection: close\r\n\r\n")
                .into_bytes(),
        ),
        Answering::Serve | Answering::Slow(_) => {
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{etag_header}\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            reply.extend_from_slice(&body);
            (200, reply)
        }
    };
    state.lock().unwrap().fetches.push(Fetch {
        at,
        path,
        if_none_match,
        authorization,
        status,
        etag,
    });
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
}
