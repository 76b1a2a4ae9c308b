//! The usage-events sink of the tests: records every batch and answers as told.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::server::{read_request, Request, TestServer};

/// What a [`Sink`] does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// 200.
    Accept,
    /// Answer with this status.
    Fail(u16),
    /// Never answer (until the client gives up or the sink stops).
    Hang,
    /// Answer 200 after this long.
    Slow(Duration),
}

/// One request a [`Sink`] received (its path, headers and body through `Deref`), and how it
/// answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub mode: SinkMode,
    pub request: Request,
}

impl std::ops::Deref for Received {
    type Target = Request;

    fn deref(&self) -> &Request {
        &self.request
    }
}

impl Received {
    /// The CloudEvents of a batch body.
    pub fn events(&self) -> Vec<serde_json::Value> {
        match serde_json::from_str::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::Array(events)) => events,
            other => panic!(
                "a batch is a JSON array, got {other:?} from {:?}",
                self.body
            ),
        }
    }
}

#[derive(Default)]
struct SinkState {
    /// Modes for the next requests, in order; then `default`.
    script: std::collections::VecDeque<SinkMode>,
    default: Option<SinkMode>,
    received: Vec<Received>,
}

/// A test HTTP/1.1 server that records every request (usage event batches) and answers as
/// told: accept, fail with a status, hang, or answer slowly. Stopped when dropped.
pub struct Sink {
    pub port: u16,
    state: Arc<Mutex<SinkState>>,
    _server: TestServer,
}

impl Sink {
    pub fn start() -> Sink {
        let state = Arc::new(Mutex::new(SinkState::default()));
        let server = {
            let state = Arc::clone(&state);
            TestServer::start(move |stream, stop| serve(stream, &state, stop))
        };
        Sink {
            port: server.port,
            state,
            _server: server,
        }
    }

    /// The next requests get these answers, then the default one.
    pub fn script(&self, modes: &[SinkMode]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(modes.iter().copied());
    }

    /// What every request gets once the script is used up (initially [`SinkMode::Accept`]).
    pub fn set_default(&self, mode: SinkMode) {
        self.state.lock().unwrap().default = Some(mode);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Every event of every batch answered 200, in arrival order (duplicates included).
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.received()
            .iter()
            .filter(|r| matches!(r.mode, SinkMode::Accept | SinkMode::Slow(_)))
            .flat_map(|r| r.events())
            .collect()
    }
}

/// Answers the requests of one kept-alive connection, each as the script says.
fn serve(mut stream: TcpStream, state: &Mutex<SinkState>, stop: &AtomicBool) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf, stop) {
        let mode = {
            let mut st = state.lock().unwrap();
            let mode = st
                .script
                .pop_front()
                .unwrap_or(st.default.unwrap_or(SinkMode::Accept));
            st.received.push(Received { mode, request });
            mode
        };
        let status = match mode {
            SinkMode::Accept => 200,
            SinkMode::Fail(status) => status,
            SinkMode::Hang => {
                let end = Instant::now() + Duration::from_secs(60);
                while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            SinkMode::Slow(delay) => {
                std::thread::sleep(delay);
                200
            }
        };
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
