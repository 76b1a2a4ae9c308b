//! Fleet mode in the tests: Redis, quotad and Envoys that count through them, and h2load.

use super::*;

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

    /// SIGSTOP, then waits until every thread of the process is stopped.
    fn freeze(&self) {
        self.signal("STOP");
        let pid = self.pid();
        poll(
            Duration::from_secs(20),
            "the process to stop (SIGSTOP)",
            || super::stopped::all_threads_stopped(pid).then_some(()),
        );
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
        self.process.freeze();
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
