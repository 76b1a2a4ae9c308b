//! quotad, started with the binary a test names: quotad's own tests run the one cargo builds for
//! them (`env!("CARGO_BIN_EXE_quotad")`, which only they can name), the filter's fleet tests the
//! one `make quotad` builds ([`quotad_path`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::http::try_request;
use crate::paths::quotad_path;
use crate::poll::{wait_for, DEADLINE, STARTUP_DEADLINE};
use crate::process::Process;
use crate::redis::Redis;
use crate::temp::{next_id, TempDir};
use crate::tls::{Pair, Pki};

/// The name in quotad's certificate, which Envoys check (envoy/fleet/*.yaml).
pub const QUOTAD_NAME: &str = "quotad.tollgate";
/// The identity in the Envoys' client certificate, the one on quotad's `--tls-allow`.
pub const GATEWAY_NAME: &str = "gateway.tollgate";

/// The certificates of a quotad in mutual TLS, laid out as `make fleet-certs` writes them for
/// the examples (envoy/fleet/certs/): `ca.crt`, `quotad.crt`/`.key`, `gateway.crt`/`.key`.
pub struct FleetCerts {
    pub dir: TempDir,
    pub pki: Pki,
    pub quotad: Pair,
    pub gateway: Pair,
}

impl FleetCerts {
    pub fn new() -> FleetCerts {
        let dir = TempDir::named("certs");
        let pki = Pki::new(dir.path(), "ca");
        let quotad = pki.issue("quotad", &[QUOTAD_NAME, "127.0.0.1"]);
        let gateway = pki.issue("gateway", &[GATEWAY_NAME]);
        FleetCerts {
            dir,
            pki,
            quotad,
            gateway,
        }
    }

    /// quotad's flags for mutual TLS with these files, allowing [`GATEWAY_NAME`] only.
    pub fn quotad_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".into(),
            path(&self.quotad.cert),
            "--tls-key".into(),
            path(&self.quotad.key),
            "--tls-client-ca".into(),
            path(&self.pki.ca()),
            "--tls-allow".into(),
            GATEWAY_NAME.into(),
        ]
    }
}

impl Default for FleetCerts {
    fn default() -> Self {
        Self::new()
    }
}

/// A running quotad; its gRPC and HTTP (health, metrics) ports.
pub struct Quotad {
    process: Process,
    pub grpc: u16,
    pub http: u16,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: TempDir,
    /// Its certificates when it speaks mutual TLS ([`Quotad::mutual_tls`]).
    pub certs: Option<FleetCerts>,
}

impl Quotad {
    /// `binary` with `args` (e.g. `["--redis", url]`), with a 300 ms Redis timeout unless the
    /// arguments set one. It listens on ports the kernel picks (no race for a free port) and is
    /// ready when it has logged its start line, which names them; Redis may still be down
    /// ([`Quotad::wait_healthy`] waits for it).
    pub fn start(binary: impl AsRef<Path>, args: &[&str]) -> Quotad {
        Self::start_with_env(binary, args, &[])
    }

    /// [`Quotad::start`] with these environment variables too (`QUOTAD_*` settings: a binary
    /// that does not know one ignores it, where it would refuse an unknown flag).
    pub fn start_with_env(binary: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Quotad {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.iter().any(|a| a == "--redis-timeout-ms") {
            args.extend(["--redis-timeout-ms".to_string(), "300".to_string()]);
        }
        let dir = TempDir::named("quotad");
        let binary = binary.as_ref().to_path_buf();
        let mut process = Self::spawn(&binary, (0, 0), &args, &env, &dir);
        let (grpc, http) = Self::wait_started(&mut process);
        Quotad {
            process,
            grpc,
            http,
            binary,
            args,
            env,
            dir,
            certs: None,
        }
    }

    /// `binary` with `args` and mutual TLS as the fleet examples run it: certificates of a CA
    /// of its own, Envoys' client certificate ([`FleetCerts::gateway`]) the only one allowed.
    pub fn mutual_tls(binary: impl AsRef<Path>, args: &[&str]) -> Quotad {
        let certs = FleetCerts::new();
        let tls = certs.quotad_args();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(tls.iter().map(String::as_str));
        let mut quotad = Self::start(binary, &all);
        quotad.certs = Some(certs);
        quotad
    }

    /// `binary` on one Redis node.
    pub fn on(binary: impl AsRef<Path>, redis: &Redis) -> Quotad {
        Self::start(binary, &["--redis", &redis.url()])
    }

    /// The quotad `make quotad` builds, in front of `redis` as fleet-mode Envoys use it: mutual
    /// TLS, a 500 ms Redis timeout, and ready when `/healthz` says Redis answers.
    pub fn fleet(redis: &Redis) -> Quotad {
        let quotad = Self::mutual_tls(
            quotad_path(),
            &["--redis", &redis.url(), "--redis-timeout-ms", "500"],
        );
        quotad.wait_healthy();
        quotad
    }

    fn spawn(
        binary: &Path,
        (grpc, http): (u16, u16),
        args: &[String],
        env: &[(String, String)],
        dir: &TempDir,
    ) -> Process {
        let mut command = Command::new(binary);
        command
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info");
        // A log per process: a restart's start line is not the first one's.
        let log = dir.join(format!("quotad-{}.log", next_id()));
        Process::spawn("quotad", command, log)
    }

    /// Waits for the start line; the ports it names.
    fn wait_started(process: &mut Process) -> (u16, u16) {
        let mut ports = None;
        wait_for("quotad logs its start line", STARTUP_DEADLINE, || {
            if let Some(status) = process.exited() {
                panic!("quotad exited ({status}):\n{}", process.log());
            }
            ports = parse_start_line(&process.log());
            ports.is_some()
        });
        ports.unwrap()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGSTOP: quotad keeps its connections and answers nothing.
    pub fn freeze(&self) {
        self.process.freeze();
    }

    pub fn thaw(&self) {
        self.process.thaw();
    }

    /// Stops quotad (SIGKILL).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// SIGTERM; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.process.terminate(DEADLINE)
    }

    /// Sends `signal` (`TERM`, `INT`, …) and returns at once.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Waits (at most `deadline`) for quotad to exit: its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(deadline)
    }

    /// Starts it again on the same ports and arguments, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(
            &self.binary,
            (self.grpc, self.http),
            &self.args,
            &self.env,
            &self.dir,
        );
        Self::wait_started(&mut self.process);
        self.wait_healthy();
    }

    /// GET on the HTTP port: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        try_request(self.http, "GET", path, &[])
            .map(|r| (r.status, r.body))
            .unwrap()
    }

    /// Waits until /healthz says Redis answers.
    pub fn wait_healthy(&self) {
        wait_for("quotad /healthz to be 200", STARTUP_DEADLINE, || {
            try_request(self.http, "GET", "/healthz", &[]).is_ok_and(|r| r.status == 200)
        });
    }

    /// The value of a metric line (`name{labels}`) in /metrics.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{body}"))
    }

    /// quotad's decisions so far (its store calls, every code), from /metrics; 0 where it
    /// does not answer.
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

/// The gRPC and HTTP ports of quotad's start line (`quotad … started: grpc ADDR, http ADDR, …`).
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
    }
}
