//! `redis-server` (Debian's), on free ports in temporary directories: a single node (with or
//! without an append-only file), a three-master Cluster, and a primary with a replica watched by
//! a Sentinel.

use std::process::Command;

use crate::poll::{wait_for, DEADLINE, STARTUP_DEADLINE};
use crate::ports::free_port;
use crate::process::Process;
use crate::temp::{next_id, TempDir};

const NO_PERSISTENCE: &[&str] = &["--save", "", "--appendonly", "no"];

/// One `redis-server` on a free port in a directory of its own.
pub struct Redis {
    process: Process,
    pub port: u16,
    args: Vec<String>,
    dir: TempDir,
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
        let dir = TempDir::named("redis");
        let port = free_port();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let process = Self::spawn(port, &dir, &args);
        let redis = Redis {
            process,
            port,
            args,
            dir,
        };
        redis.wait_ready();
        redis
    }

    fn spawn(port: u16, dir: &TempDir, args: &[String]) -> Process {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// redis-cli's raw output of a command; `None` if redis-cli failed.
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.port, args)
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
        self.process = Self::spawn(self.port, &self.dir, &self.args);
        self.wait_ready();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Stopped, and its log printed if the test is failing, before its directory goes.
        self.process.finish();
    }
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
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

/// A Redis primary, one replica, and one Redis Sentinel watching them as [`SENTINEL_PRIMARY`].
pub struct RedisSentinel {
    pub primary: Redis,
    pub replica: Redis,
    sentinel: Process,
    pub sentinel_port: u16,
    _dir: TempDir,
}

pub const SENTINEL_PRIMARY: &str = "quotad-primary";

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let primary = Redis::start();
        let port = primary.port.to_string();
        let mut args = NO_PERSISTENCE.to_vec();
        args.extend(["--replicaof", "127.0.0.1", &port]);
        let replica = Redis::start_with(&args);
        wait_for("the replica is in sync", DEADLINE, || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let dir = TempDir::named("sentinel");
        let sentinel_port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SENTINEL_PRIMARY} 127.0.0.1 {port} 1\n\
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
            _dir: dir,
        };
        wait_for("the sentinel sees the replica", DEADLINE, || {
            s.sentinel_cli(&["SENTINEL", "REPLICAS", SENTINEL_PRIMARY])
                .is_some_and(|out| out.contains(&s.replica.port.to_string()))
        });
        s
    }

    pub fn sentinel_cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.sentinel_port, args)
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
        // Stopped, and its log printed if the test is failing, before its directory goes.
        self.sentinel.finish();
    }
}
