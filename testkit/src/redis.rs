//! `redis-server` (Debian's), on free ports in temporary directories: a single node (with or
//! without an append-only file), a three-master Cluster, and a primary with a replica watched by
//! a Sentinel; each in plaintext or TLS only ([`RedisCerts`]), with or without a password
//! ([`Access`]).

use std::path::PathBuf;
use std::process::Command;

use crate::poll::{wait_for, DEADLINE, STARTUP_DEADLINE};
use crate::ports::free_port;
use crate::process::Process;
use crate::temp::{next_id, TempDir};
use crate::tls::{Pair, Pki};

const NO_PERSISTENCE: &[&str] = &["--save", "", "--appendonly", "no"];

/// The TLS files of test Redis servers, of one CA: a server certificate for `127.0.0.1` and
/// `localhost` (every node's: Cluster and Sentinel name nodes by IP), which a replica and a
/// sentinel present as their client certificate too, and redis-cli's client certificate.
#[derive(Clone, Debug)]
pub struct RedisCerts {
    pub ca: PathBuf,
    pub server: Pair,
    pub client: Pair,
}

impl RedisCerts {
    /// Issues the certificates from `pki` (files `redis-server.*` and `redis-client.*` in its
    /// directory).
    pub fn new(pki: &Pki) -> RedisCerts {
        RedisCerts {
            ca: pki.ca(),
            server: pki.issue("redis-server", &["127.0.0.1", "localhost"]),
            client: pki.issue("redis-client", &["redis-client"]),
        }
    }

    /// redis-server's TLS settings (its replication over TLS too; `tls-auth-clients` is left
    /// at Redis's default, `yes`, unless the test's arguments say otherwise).
    fn server_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--tls-cert-file".into(),
            path(&self.server.cert),
            "--tls-key-file".into(),
            path(&self.server.key),
            "--tls-ca-cert-file".into(),
            path(&self.ca),
            "--tls-replication".into(),
            "yes".into(),
        ]
    }

    /// The same as lines of a configuration file (a sentinel's).
    fn conf_lines(&self) -> String {
        format!(
            "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-replication yes\n",
            self.server.cert.display(),
            self.server.key.display(),
            self.ca.display()
        )
    }

    /// redis-cli's TLS options.
    fn cli_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            path(&self.ca),
            "--cert".into(),
            path(&self.client.cert),
            "--key".into(),
            path(&self.client.key),
        ]
    }
}

/// How a test Redis is reached: TLS only (its certificates) and a password (`requirepass`, and
/// `masterauth` for its replication), or neither.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub tls: Option<RedisCerts>,
    pub password: Option<String>,
}

impl Access {
    /// redis-server's arguments: its listening port (plaintext, or TLS only) and the rest.
    fn server_args(&self, port: u16) -> Vec<String> {
        let mut args: Vec<String> = match &self.tls {
            Some(certs) => {
                let mut args = vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                ];
                args.extend(certs.server_args());
                args
            }
            None => vec!["--port".into(), port.to_string()],
        };
        if let Some(password) = &self.password {
            args.extend([
                "--requirepass".into(),
                password.clone(),
                "--masterauth".into(),
                password.clone(),
            ]);
        }
        args
    }

    /// redis-cli for `port`: TLS options, the password in its environment.
    fn cli(&self, port: u16) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(certs) = &self.tls {
            command.args(certs.cli_args());
        }
        if let Some(password) = &self.password {
            command.env("REDISCLI_AUTH", password);
        }
        command
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }
}

/// One `redis-server` on a free port in a directory of its own.
pub struct Redis {
    process: Process,
    pub port: u16,
    args: Vec<String>,
    dir: TempDir,
    access: Access,
}

impl Redis {
    /// A Redis without persistence.
    pub fn start() -> Redis {
        Self::start_with(NO_PERSISTENCE)
    }

    /// A Redis with the append-only file on (fsync every write): a restart replays it.
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

    /// A Redis with these further `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> Redis {
        Self::start_with_access(&Access::default(), args)
    }

    /// A Redis without persistence that speaks TLS only, with these certificates, and these
    /// further arguments (e.g. `--tls-auth-clients no`: Redis's default asks clients for a
    /// certificate).
    pub fn start_tls(certs: &RedisCerts, args: &[&str]) -> Redis {
        let mut all = NO_PERSISTENCE.to_vec();
        all.extend(args);
        let access = Access {
            tls: Some(certs.clone()),
            password: None,
        };
        Self::start_with_access(&access, &all)
    }

    /// A Redis reached as `access` says, with these further `redis-server` arguments.
    pub fn start_with_access(access: &Access, args: &[&str]) -> Redis {
        let dir = TempDir::named("redis");
        let port = free_port();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let process = Self::spawn(port, &dir, access, &args);
        let redis = Redis {
            process,
            port,
            args,
            dir,
            access: access.clone(),
        };
        redis.wait_ready();
        redis
    }

    fn spawn(port: u16, dir: &TempDir, access: &Access, args: &[String]) -> Process {
        let mut command = Command::new("redis-server");
        command
            .args(access.server_args(port))
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(args);
        // A log per process: a restart does not overwrite the first one's.
        let log = dir.join(format!("redis-{}.log", next_id()));
        Process::spawn("redis-server", command, log)
    }

    fn wait_ready(&self) {
        wait_for("redis-server to answer PING", STARTUP_DEADLINE, || {
            self.try_cli(&["PING"])
                .is_some_and(|out| out.trim() == "PONG")
        });
    }

    /// `redis://127.0.0.1:<port>`, `rediss://` if it speaks TLS (no password in it).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.access.scheme(), self.port)
    }

    /// The CA of a Redis that speaks TLS; `None` for plaintext.
    pub fn tls_ca(&self) -> Option<&std::path::Path> {
        self.access.tls.as_ref().map(|c| c.ca.as_path())
    }

    /// redis-cli's raw output of a command; `None` if redis-cli failed.
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.access.cli(self.port), args)
    }

    /// redis-cli's raw output of a command.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// The keys matching a pattern, sorted.
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

    /// The sum of the counters of a consumer's limit (all windows); 0 where Redis does not
    /// answer.
    pub fn counted(&self, domain: &str, consumer: &str, limit: &str) -> u64 {
        let pattern = format!("tollgate:v1:{{{domain}:{consumer}}}:{limit}:*");
        let keys = self
            .try_cli(&["--scan", "--pattern", &pattern])
            .unwrap_or_default();
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|k| {
                self.try_cli(&["GET", k])
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    pub fn dbsize(&self) -> u64 {
        self.cli(&["DBSIZE"]).trim().parse().unwrap()
    }

    /// SIGSTOP: the process keeps its connections but answers nothing.
    pub fn freeze(&self) {
        self.process.freeze();
    }

    pub fn thaw(&self) {
        self.process.thaw();
    }

    /// Stops the server (SIGKILL: nothing flushed beyond what was already fsynced).
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// SIGKILL, then a new redis-server on the same port and directory (the append-only file,
    /// if on, is replayed).
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = Self::spawn(self.port, &self.dir, &self.access, &self.args);
        self.wait_ready();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Stopped, and its log printed if the test is failing, before its directory goes.
        self.process.finish();
    }
}

fn redis_cli(mut command: Command, args: &[&str]) -> Option<String> {
    let out = command.args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// A local Redis Cluster of three masters (no replicas), each a `redis-server` of its own.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        Self::start_with_access(&Access::default())
    }

    /// A cluster whose nodes speak TLS only, to clients and to each other (`tls-cluster`);
    /// clients need a certificate (Redis's default).
    pub fn start_tls(certs: &RedisCerts) -> RedisCluster {
        Self::start_with_access(&Access {
            tls: Some(certs.clone()),
            password: None,
        })
    }

    fn start_with_access(access: &Access) -> RedisCluster {
        let mut args = vec![
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "5000",
        ];
        if access.tls.is_some() {
            args.extend(["--tls-cluster", "yes"]);
        }
        let nodes: Vec<Redis> = (0..3)
            .map(|_| Redis::start_with_access(access, &args))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = access.cli(nodes[0].port);
        let out = create
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

/// A Redis primary, one replica, and one Redis Sentinel watching them as [`SENTINEL_PRIMARY`].
pub struct RedisSentinel {
    pub primary: Redis,
    pub replica: Redis,
    sentinel: Process,
    pub sentinel_port: u16,
    /// The sentinel's own: TLS as the nodes, its own password.
    sentinel_access: Access,
    _dir: TempDir,
}

pub const SENTINEL_PRIMARY: &str = "quotad-primary";

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        Self::start_with_access(&Access::default(), None)
    }

    /// The primary and the replica reached as `access` says (a password: `requirepass` and
    /// `masterauth` on both, `sentinel auth-pass` for the sentinel); with TLS the sentinel
    /// speaks TLS only too and reaches them over TLS. `sentinel_password` is the sentinel's own
    /// `requirepass`.
    pub fn start_with_access(access: &Access, sentinel_password: Option<&str>) -> RedisSentinel {
        let primary = Redis::start_with_access(access, NO_PERSISTENCE);
        let port = primary.port.to_string();
        let mut args = NO_PERSISTENCE.to_vec();
        args.extend(["--replicaof", "127.0.0.1", &port]);
        let replica = Redis::start_with_access(access, &args);
        wait_for("the replica is in sync", DEADLINE, || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let dir = TempDir::named("sentinel");
        let sentinel_port = free_port();
        let conf = dir.join("sentinel.conf");
        let listen = match &access.tls {
            Some(certs) => format!("port 0\ntls-port {sentinel_port}\n{}", certs.conf_lines()),
            None => format!("port {sentinel_port}\n"),
        };
        let mut auth = match &access.password {
            Some(p) => format!("sentinel auth-pass {SENTINEL_PRIMARY} {p}\n"),
            None => String::new(),
        };
        if let Some(p) = sentinel_password {
            auth.push_str(&format!("requirepass {p}\n"));
        }
        std::fs::write(
            &conf,
            format!(
                "{listen}bind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SENTINEL_PRIMARY} 127.0.0.1 {port} 1\n\
                 {auth}\
                 sentinel down-after-milliseconds {SENTINEL_PRIMARY} 1000\n\
                 sentinel failover-timeout {SENTINEL_PRIMARY} 5000\n",
                dir.path().display()
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
            sentinel_access: Access {
                tls: access.tls.clone(),
                password: sentinel_password.map(str::to_string),
            },
            _dir: dir,
        };
        wait_for("the sentinel sees the replica", DEADLINE, || {
            s.sentinel_cli(&["SENTINEL", "REPLICAS", SENTINEL_PRIMARY])
                .is_some_and(|out| out.contains(&s.replica.port.to_string()))
        });
        s
    }

    pub fn sentinel_cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.sentinel_access.cli(self.sentinel_port), args)
    }

    /// The port the sentinel names as the primary's.
    pub fn primary_port(&self) -> Option<u16> {
        let out = self.sentinel_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_PRIMARY])?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// The sentinel's URL (`rediss://` with TLS), with its password if it has one.
    pub fn url(&self) -> String {
        let auth = match &self.sentinel_access.password {
            Some(p) => format!(":{p}@"),
            None => String::new(),
        };
        format!(
            "{}://{auth}127.0.0.1:{}",
            self.sentinel_access.scheme(),
            self.sentinel_port
        )
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        // Stopped, and its log printed if the test is failing, before its directory goes.
        self.sentinel.finish();
    }
}
