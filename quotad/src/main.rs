//! quotad: flags, start, health checks, `/metrics` and `/healthz`; shutdown is `shutdown.rs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tollgate_quotad::bounds;
use tollgate_quotad::metrics::Metrics;
use tollgate_quotad::payments::api::payments_server::PaymentsServer;
use tollgate_quotad::policy::Policy;
use tollgate_quotad::redis_access::{Credentials, RedisTls};
use tollgate_quotad::service::Service;
use tollgate_quotad::shutdown::{self, Connections, Signals};
use tollgate_quotad::store::{Store, Target};
use tollgate_quotad::tls::{self, Tls};

const SERVICE_NAME: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// quotad: fleet-wide quota counts on Redis, behind Envoy's rate limit service protocol
/// (envoy.service.ratelimit.v3). It keeps no plans: each request's descriptors carry them.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Flags {
    /// gRPC address (RateLimitService and grpc.health.v1.Health).
    #[arg(long, env = "QUOTAD_LISTEN", default_value = "0.0.0.0:8081")]
    listen: SocketAddr,
    /// HTTP address of /metrics and /healthz.
    #[arg(long, env = "QUOTAD_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
    /// One Redis node: redis://[user:password@]host:port[/db], or rediss:// for TLS.
    #[arg(
        long,
        env = "QUOTAD_REDIS",
        default_value = "redis://127.0.0.1:6379",
        conflicts_with = "redis_cluster"
    )]
    redis: String,
    /// One Redis node's URL read from this file instead (a mounted Secret, say): the password
    /// then appears in neither the arguments nor the environment. Read once, at start.
    #[arg(
        long,
        env = "QUOTAD_REDIS_FILE",
        conflicts_with_all = ["redis", "redis_cluster", "redis_sentinel"]
    )]
    redis_file: Option<std::path::PathBuf>,
    /// A Redis Cluster instead: seed nodes, comma-separated (redis://host:port,redis://...).
    #[arg(
        long,
        env = "QUOTAD_REDIS_CLUSTER",
        value_delimiter = ',',
        conflicts_with = "redis_sentinel"
    )]
    redis_cluster: Vec<String>,
    /// Redis Sentinel instead: sentinel nodes, comma-separated (redis://host:26379,...); the
    /// primary is the one they name for --redis-sentinel-primary, asked again after a failover.
    #[arg(
        long,
        env = "QUOTAD_REDIS_SENTINEL",
        value_delimiter = ',',
        requires = "redis_sentinel_primary"
    )]
    redis_sentinel: Vec<String>,
    /// The name of the primary the sentinels watch (`sentinel monitor <name> ...`).
    #[arg(long, env = "QUOTAD_REDIS_SENTINEL_PRIMARY")]
    redis_sentinel_primary: Option<String>,
    /// The credentials of the primary (and replicas) behind Sentinel, from this file: its first
    /// line is `password` or `user:password` (of at most 4 KiB read). The sentinels' URLs carry
    /// only the sentinels' own.
    #[arg(
        long,
        env = "QUOTAD_REDIS_SENTINEL_AUTH_FILE",
        requires = "redis_sentinel"
    )]
    redis_sentinel_auth_file: Option<std::path::PathBuf>,
    /// rediss:// only: trust the CA certificates in this PEM file instead of the system's roots
    /// (a private CA).
    #[arg(long, env = "QUOTAD_REDIS_CA")]
    redis_ca: Option<std::path::PathBuf>,
    /// rediss:// only: present this PEM certificate chain to Redis (for `tls-auth-clients yes`).
    #[arg(long, env = "QUOTAD_REDIS_CLIENT_CERT", requires = "redis_client_key")]
    redis_client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --redis-client-cert.
    #[arg(long, env = "QUOTAD_REDIS_CLIENT_KEY", requires = "redis_client_cert")]
    redis_client_key: Option<std::path::PathBuf>,
    /// Longest wait for Redis per decision, in milliseconds; then the answer is UNAVAILABLE.
    #[arg(long, env = "QUOTAD_REDIS_TIMEOUT_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    redis_timeout_ms: u64,
    /// Seconds a counter outlives its window (covers clock differences between replicas).
    #[arg(long, env = "QUOTAD_TTL_MARGIN_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(0..=86_400))]
    ttl_margin_seconds: i64,
    /// Longest a request may take, its body read and its decision made, in milliseconds; then
    /// CANCELLED (a client that trickles its bytes holds a stream no longer than this).
    #[arg(long, env = "QUOTAD_REQUEST_TIMEOUT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    request_timeout_ms: u64,
    /// After SIGTERM or SIGINT, the longest quotad waits for its connections to close, in
    /// milliseconds; then it cuts them and exits. A second signal exits at once.
    #[arg(long, env = "QUOTAD_SHUTDOWN_TIMEOUT_MS", default_value_t = shutdown::DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    shutdown_timeout_ms: u64,
    /// Most gRPC connections served at once; beyond, quotad stops accepting until one closes
    /// (an Envoy opens one per worker). Dead peers' connections close on keepalive.
    #[arg(long, env = "QUOTAD_MAX_CONNECTIONS", default_value_t = bounds::MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_connections: u64,
    /// Threads that serve requests (0: one per CPU). 1 runs everything on one thread, which
    /// wastes no CPU on handing work between threads: where quotad shares a machine with Redis,
    /// 1 is fastest (quotad/README.md, "Speed").
    #[arg(long, env = "QUOTAD_WORKER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    worker_threads: u16,
    /// Serve only these domains (comma-separated; default: any).
    #[arg(long, env = "QUOTAD_ALLOW_DOMAINS", value_delimiter = ',')]
    allow_domains: Vec<String>,
    /// Refuse a limit whose `requests` is above this (default: no bound).
    #[arg(long, env = "QUOTAD_MAX_REQUESTS", value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: Option<u64>,
    /// Refuse a `hits_addend` above this, per limit (default: no bound).
    #[arg(long, env = "QUOTAD_MAX_HITS_ADDEND", value_parser = clap::value_parser!(u64).range(1..))]
    max_hits_addend: Option<u64>,
    /// Serve only limits of these windows (comma-separated, e.g. day,month,1s; default: any).
    #[arg(long, env = "QUOTAD_ALLOW_WINDOWS", value_delimiter = ',')]
    allow_windows: Vec<String>,
    /// TLS on the gRPC listener: this PEM certificate chain (reloaded when it changes).
    #[arg(long, env = "QUOTAD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "QUOTAD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Mutual TLS: clients must present a certificate issued by a CA in this PEM file.
    #[arg(long, env = "QUOTAD_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Only clients whose certificate names one of these (DNS names or URIs such as SPIFFE
    /// ids, comma-separated) may call; needs --tls-client-ca.
    #[arg(
        long,
        env = "QUOTAD_TLS_ALLOW",
        value_delimiter = ',',
        requires = "tls_client_ca"
    )]
    tls_allow: Vec<String>,
    /// How often the TLS files are read again, in milliseconds (a change applies to new
    /// connections).
    #[arg(long, env = "QUOTAD_TLS_RELOAD_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    tls_reload_ms: u64,
    /// Serve gRPC without TLS on an address other machines can reach. Without TLS anyone who
    /// reaches quotad can spend or read every consumer's quota: use it only where the network
    /// itself is the boundary (a mesh's mutual TLS, a NetworkPolicy). Loopback needs no flag.
    #[arg(long, env = "QUOTAD_PLAINTEXT", conflicts_with = "tls_cert")]
    plaintext: bool,
}

/// A Redis URL without its password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}://***@{}",
                url.get(..scheme).unwrap_or(""),
                url.get(at + 1..).unwrap_or("")
            )
        }
        _ => url.to_string(),
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let flags = Flags::parse();
    // One thread is tokio's current-thread scheduler: every task on the main thread, no worker
    // to wake and no work handed between threads (cheaper per decision than a multi-thread
    // runtime with one worker: docs/benchmarks.md).
    let mut builder = match flags.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if flags.worker_threads > 1 {
        builder.worker_threads(usize::from(flags.worker_threads));
    }
    let result = match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(flags)),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    if let Err(e) = result {
        log::error!("quotad: {e}");
        std::process::exit(1);
    }
}

/// Where Redis is (a node, Sentinel, or Cluster seeds), and how the start-up line names it
/// (credentials redacted).
fn redis_target(flags: &Flags, sentinel_auth: Option<Credentials>) -> (Target, String) {
    if let (false, Some(primary)) = (
        flags.redis_sentinel.is_empty(),
        &flags.redis_sentinel_primary,
    ) {
        let nodes: Vec<String> = flags.redis_sentinel.iter().map(|s| redact(s)).collect();
        (
            Target::Sentinel {
                nodes: flags.redis_sentinel.clone(),
                primary: primary.clone(),
                auth: sentinel_auth,
            },
            format!("redis sentinels [{}] primary {primary}", nodes.join(", ")),
        )
    } else if flags.redis_cluster.is_empty() {
        (
            Target::Node(flags.redis.clone()),
            format!("redis {}", redact(&flags.redis)),
        )
    } else {
        let seeds: Vec<String> = flags.redis_cluster.iter().map(|s| redact(s)).collect();
        (
            Target::Cluster(flags.redis_cluster.clone()),
            format!("redis cluster seeds [{}]", seeds.join(", ")),
        )
    }
}

/// Most different reasons logged while Redis stays unreachable.
const MAX_REASONS_LOGGED: usize = 8;

/// Health: one PING a second; gRPC health, /healthz and quotad_redis_up follow it. Reports
/// NOT_SERVING once `stop` changes.
fn spawn_health(
    store: Store,
    metrics: Metrics,
    redis_up: Arc<AtomicBool>,
    reporter: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut first = true;
        // The reasons logged in this outage, each once: a timeout often comes first, and the
        // connection's own error (a certificate refused, NOAUTH) at a later check.
        let mut reasons: Vec<String> = Vec::new();
        loop {
            let result = store.ping().await;
            let up = result.is_ok();
            let was = redis_up.swap(up, Ordering::SeqCst);
            metrics.redis_up.set(i64::from(up));
            match &result {
                Ok(()) => reasons.clear(),
                Err(e) => {
                    let reason = e.to_string();
                    if reasons.len() < MAX_REASONS_LOGGED && !reasons.contains(&reason) {
                        log::warn!("Redis is unreachable: {reason}");
                        reasons.push(reason);
                    }
                }
            }
            if up != was || first {
                let status = if up {
                    log::info!("Redis answers");
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status(SERVICE_NAME, status).await;
                reporter.set_service_status("", status).await;
                first = false;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                _ = stop.changed() => break,
            }
        }
        reporter
            .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    })
}

/// The HTTP listener's routes: `/metrics` (Prometheus text) and `/healthz`.
fn http_routes(metrics: Metrics, redis_up: Arc<AtomicBool>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route(
            "/healthz",
            get(move || async move {
                if redis_up.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ok\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n")
                }
            }),
        )
}

/// Most of a `--redis-file` read: a URL is far shorter.
const MAX_REDIS_FILE_BYTES: u64 = 4096;

/// The URL in a `--redis-file`: its first line, trimmed (of at most 4 KiB read).
fn read_redis_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let cannot =
        |e: std::io::Error| format!("--redis-file {}: cannot read it: {e}", path.display());
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_REDIS_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    let url = text.lines().next().unwrap_or("").trim().to_string();
    if url.is_empty() {
        return Err(format!(
            "--redis-file {}: it is empty (it holds one Redis URL)",
            path.display()
        ));
    }
    Ok(url)
}

/// The gRPC listener's TLS, loaded (its reload started), or none: plaintext only on loopback
/// or with --plaintext.
fn listener_tls(flags: &Flags) -> Result<Option<Tls>, String> {
    let (Some(cert), Some(key)) = (&flags.tls_cert, &flags.tls_key) else {
        if !flags.plaintext && !flags.listen.ip().is_loopback() {
            return Err(format!(
                "--listen {}: other machines can reach this address, and without TLS anyone who \
                 does can spend or read every consumer's quota. Give --tls-cert and --tls-key \
                 (and --tls-client-ca for mutual TLS), or --plaintext where the network is the \
                 boundary (quotad/README.md, \"TLS\")",
                flags.listen
            ));
        }
        return Ok(None);
    };
    let files = tls::Files {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: flags.tls_client_ca.clone(),
        allow: flags.tls_allow.clone(),
    };
    let (tls, contents) = Tls::load(&files)?;
    tls.spawn_reload(files, contents, Duration::from_millis(flags.tls_reload_ms));
    Ok(Some(tls))
}

async fn run(mut flags: Flags) -> Result<(), String> {
    if let Some(path) = &flags.redis_file {
        flags.redis = read_redis_file(path)?;
    }
    let timeout = Duration::from_millis(flags.redis_timeout_ms);
    let sentinel_auth = match &flags.redis_sentinel_auth_file {
        Some(path) => Some(Credentials::read_file(path, "--redis-sentinel-auth-file")?),
        None => None,
    };
    let redis_tls = RedisTls::load(
        flags.redis_ca.as_deref(),
        flags
            .redis_client_cert
            .as_deref()
            .zip(flags.redis_client_key.as_deref()),
    )?;
    let (target, redis_text) = redis_target(&flags, sentinel_auth);
    let store = Store::new(&target, &redis_tls, timeout)?;
    let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
    // Caught before the start line: a signal from then on drains (src/shutdown.rs).
    let mut signals = Signals::new()?;
    let connections = Connections::default();

    let policy = Policy::new(
        flags.allow_domains.clone(),
        flags.max_requests,
        flags.max_hits_addend,
        &flags.allow_windows,
    )?;
    let tls = listener_tls(&flags)?;
    let grpc = TcpListener::bind(flags.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", flags.listen))?;
    let http = TcpListener::bind(flags.http_listen)
        .await
        .map_err(|e| format!("--http-listen {}: {e}", flags.http_listen))?;
    let grpc_addr = grpc.local_addr().map_err(|e| e.to_string())?;
    let http_addr = http.local_addr().map_err(|e| e.to_string())?;
    log::info!(
        "quotad {} started: grpc {grpc_addr}, http {http_addr}, gRPC over {}, {redis_text}, redis timeout {} ms, \
         ttl margin {} s, worker threads {}",
        env!("CARGO_PKG_VERSION"),
        match (&tls, &flags.tls_client_ca, flags.tls_allow.len()) {
            (None, ..) => "plaintext".to_string(),
            (Some(_), None, _) => "TLS".to_string(),
            (Some(_), Some(_), 0) => "mutual TLS (any client certificate of the CA)".to_string(),
            (Some(_), Some(_), n) => format!("mutual TLS ({n} client identities allowed)"),
        },
        flags.redis_timeout_ms,
        flags.ttl_margin_seconds,
        match flags.worker_threads {
            0 => "one per CPU".to_string(),
            n => n.to_string(),
        }
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let redis_up = Arc::new(AtomicBool::new(false));
    let (reporter, health_service) = tonic_health::server::health_reporter();

    let health = spawn_health(
        store.clone(),
        metrics.clone(),
        redis_up.clone(),
        reporter,
        stop_rx.clone(),
    );

    let app = http_routes(metrics.clone(), redis_up.clone());
    let http_server = {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await
        })
    };

    let service = Service {
        store,
        metrics,
        margin: flags.ttl_margin_seconds,
        policy,
        scripts: tollgate_quotad::payments::Scripts::default(),
    };
    // One service, two APIs on the listener: the rate limit protocol and fleet mode's payments.
    let service = Arc::new(service);
    let grpc_server = {
        let mut stop = stop_rx.clone();
        // What one client can make quotad hold is bounded (src/bounds.rs).
        tokio::spawn(
            tonic::transport::Server::builder()
                .initial_connection_window_size(bounds::CONNECTION_WINDOW)
                .initial_stream_window_size(bounds::STREAM_WINDOW)
                .max_concurrent_streams(bounds::MAX_STREAMS)
                .concurrency_limit_per_connection(bounds::MAX_IN_FLIGHT)
                .timeout(Duration::from_millis(flags.request_timeout_ms))
                // A peer that died without closing (a node lost, a NAT dropping the flow) must
                // not keep a connection slot: HTTP/2 pings, and TCP keepalive under them.
                .http2_keepalive_interval(Some(bounds::KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(bounds::KEEPALIVE_TIMEOUT))
                .tcp_keepalive(Some(bounds::KEEPALIVE_INTERVAL))
                .add_service(health_service)
                .add_service(
                    RateLimitServiceServer::from_arc(Arc::clone(&service))
                        .max_decoding_message_size(bounds::MAX_MESSAGE_BYTES),
                )
                .add_service(
                    PaymentsServer::from_arc(service)
                        .max_decoding_message_size(bounds::MAX_MESSAGE_BYTES),
                )
                .serve_with_incoming_shutdown(
                    connections.track(bounds::capped_incoming(
                        grpc,
                        usize::try_from(flags.max_connections).unwrap_or(usize::MAX),
                        tls,
                    )),
                    async move {
                        let _ = stop.changed().await;
                    },
                ),
        )
    };

    let first = signals.next().await;
    let _ = stop_tx.send(true);
    let stopped = async {
        let _ = health.await;
        let grpc_result = grpc_server.await;
        let _ = http_server.await;
        match grpc_result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("gRPC server: {e}")),
            Err(e) => Err(format!("gRPC server: {e}")),
        }
    };
    let deadline = Duration::from_millis(flags.shutdown_timeout_ms);
    shutdown::drain(first, stopped, deadline, &mut signals, &connections).await
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact("redis://user:s3cret@redis:6379/2"),
            "redis://***@redis:6379/2"
        );
        assert_eq!(
            redact("redis://:s3cret@redis:6379"),
            "redis://***@redis:6379"
        );
        assert_eq!(redact("redis://redis:6379"), "redis://redis:6379");
    }
}
