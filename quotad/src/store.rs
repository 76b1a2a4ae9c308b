//! Where the counts live: Redis (one node, a Redis Cluster, or the primary Redis Sentinel
//! names), one Lua script per decision.
//!
//! The script (`take.lua`) checks every limit of a request and takes from all of them or from
//! none, atomically. `redis::Script` sends it by SHA (EVALSHA) and loads it again when Redis
//! answers NOSCRIPT (after a restart or a failover). Every call is bounded by a timeout.
//!
//! `rediss://` URLs are TLS (rustls): the server's certificate is checked against the system's
//! roots or `--redis-ca`, and its name against the host (for Cluster and Sentinel, the address
//! the node announces). A target's URLs are all `redis://` or all `rediss://`; behind rediss://
//! sentinels the data nodes are reached over TLS too, with the same certificates.

use std::time::Duration;

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Script, TlsMode,
};

use crate::redis_access::{install_crypto_provider, Credentials, RedisTls};
use crate::request::{Decision, Outcome};

const TAKE: &str = include_str!("take.lua");

/// Why a decision could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Redis did not answer within the timeout.
    Timeout(Duration),
    /// Redis refused or the connection failed.
    Redis(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Timeout(t) => write!(f, "Redis did not answer within {} ms", t.as_millis()),
            StoreError::Redis(e) => write!(f, "Redis: {e}"),
        }
    }
}

#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelPrimary>),
}

/// The primary that Redis Sentinel names: asked for on first use and again after any error
/// (a failover turns the old primary into a replica, which refuses writes).
struct SentinelPrimary {
    client: tokio::sync::Mutex<SentinelClient>,
    current: tokio::sync::RwLock<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelPrimary {
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.current.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut client = self.client.lock().await;
        if let Some(c) = self.current.read().await.as_ref() {
            return Ok(c.clone());
        }
        let c = client
            .get_async_connection_with_config(&self.config)
            .await?;
        *self.current.write().await = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        *self.current.write().await = None;
    }
}

/// A client of the sentinels that names the primary. The sentinels' URLs carry the sentinels'
/// credentials (one set for all: redis-rs authenticates to every sentinel alike); `auth` is the
/// data nodes'. rediss:// sentinels mean TLS data nodes, with the same certificates.
fn sentinel_client(
    nodes: &[String],
    primary: &str,
    auth: Option<&Credentials>,
    tls: &RedisTls,
) -> Result<SentinelClient, String> {
    let flag = "--redis-sentinel";
    let infos = nodes
        .iter()
        .map(|n| connection_info(n, flag))
        .collect::<Result<Vec<_>, _>>()?;
    let tls_on = uses_tls(&infos, flag, tls)?;
    let credentials = |i: &ConnectionInfo| {
        let r = i.redis_settings();
        (
            r.username().map(str::to_string),
            r.password().map(str::to_string),
        )
    };
    let sentinel_auth = infos.first().map(credentials).unwrap_or_default();
    if infos.iter().any(|i| credentials(i) != sentinel_auth) {
        return Err(format!(
            "{flag}: the sentinels' URLs carry different credentials; quotad authenticates to \
             every sentinel with one user and password"
        ));
    }
    let mut builder = SentinelClientBuilder::new(
        infos.iter().map(|i| i.addr().clone()),
        primary,
        SentinelServerType::Master,
    )
    .map_err(|e| format!("{flag}: {e}"))?
    .set_client_to_sentinel_tcp_settings(tcp())
    .set_client_to_redis_tcp_settings(tcp());
    if let (user, Some(password)) = sentinel_auth {
        if let Some(user) = user {
            builder = builder.set_client_to_sentinel_username(user);
        }
        builder = builder.set_client_to_sentinel_password(password);
    }
    if let Some(auth) = auth {
        if let Some(user) = &auth.username {
            builder = builder.set_client_to_redis_username(user);
        }
        builder = builder.set_client_to_redis_password(&auth.password);
    }
    if tls_on {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if !tls.is_empty() {
            builder = builder
                .set_client_to_sentinel_certificates(tls.certificates())
                .set_client_to_redis_certificates(tls.certificates());
        }
    }
    builder.build().map_err(|e| format!("{flag}: {e}"))
}

/// The Redis store. Cheap to clone: one multiplexed connection (per node) shared by all requests.
#[derive(Clone)]
pub struct Store {
    connection: Connection,
    script: Script,
    timeout: Duration,
}

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum Target {
    /// `redis://host:port[/db]` (or `rediss://`, `redis+unix://`).
    Node(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    /// Redis Sentinel nodes, the name of the primary they watch, and the credentials of the
    /// primary (and replicas) they name.
    Sentinel {
        nodes: Vec<String>,
        primary: String,
        auth: Option<Credentials>,
    },
}

/// redis-rs leaves Nagle's algorithm on by default. With many decisions in flight on one
/// multiplexed connection, a small write then waits for the ACK of the previous one.
fn tcp() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

fn connection_info(url: &str, flag: &str) -> Result<ConnectionInfo, String> {
    Ok(url
        .into_connection_info()
        .map_err(|e| format!("{flag}: {e}"))?
        .set_tcp_settings(tcp()))
}

/// Whether these URLs are TLS (`rediss://`): all of them or none. Certificate checks cannot be
/// turned off (`#insecure`), and TLS files need TLS URLs (else they would silently not apply).
fn uses_tls(infos: &[ConnectionInfo], flag: &str, tls: &RedisTls) -> Result<bool, String> {
    let mut schemes = Vec::new();
    for info in infos {
        match info.addr() {
            ConnectionAddr::TcpTls { insecure: true, .. } => {
                return Err(format!(
                    "{flag}: #insecure is refused: quotad always checks Redis's certificate \
                     (give --redis-ca to trust a private CA)"
                ))
            }
            ConnectionAddr::TcpTls { .. } => schemes.push(true),
            _ => schemes.push(false),
        }
    }
    let tls_on = schemes.first().copied().unwrap_or(false);
    if schemes.iter().any(|s| *s != tls_on) {
        return Err(format!(
            "{flag}: the URLs mix redis:// and rediss://; use one for all"
        ));
    }
    if !tls_on && !tls.is_empty() {
        return Err(format!(
            "{} apply to TLS: {flag} needs rediss:// URLs",
            tls.flags()
        ));
    }
    Ok(tls_on)
}

impl Store {
    /// Connects lazily: quotad starts (and answers `UNAVAILABLE`) while Redis is still down, and
    /// reconnects by itself whenever the connection is lost.
    pub fn new(target: &Target, tls: &RedisTls, timeout: Duration) -> Result<Store, String> {
        // Before any TLS connection is made (they are made lazily, by redis-rs).
        install_crypto_provider();
        let connection = match target {
            Target::Node(url) => {
                let mut info = connection_info(url, "--redis")?;
                if !url.contains("protocol=") {
                    // RESP3: the connection reports its own end (the server closed it, e.g. a
                    // Redis restart) and the manager reconnects at once, so the next decision
                    // is not sent down a dead connection (quotad/README.md, "Redis restarts").
                    let settings = info
                        .redis_settings()
                        .clone()
                        .set_protocol(redis::ProtocolVersion::RESP3);
                    info = info.set_redis_settings(settings);
                }
                let client = if uses_tls(std::slice::from_ref(&info), "--redis", tls)? {
                    redis::Client::build_with_tls(info, tls.certificates())
                } else {
                    redis::Client::open(info)
                }
                .map_err(|e| format!("--redis: {e}"))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // A reconnection is retried at most for ~1 s, then the next request tries again.
                    .set_number_of_retries(3)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                Connection::Node(
                    ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|e| format!("--redis: {e}"))?,
                )
            }
            Target::Cluster(nodes) => {
                let nodes = nodes
                    .iter()
                    .map(|n| connection_info(n, "--redis-cluster"))
                    .collect::<Result<Vec<_>, _>>()?;
                let tls_on = uses_tls(&nodes, "--redis-cluster", tls)?;
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2);
                if tls_on {
                    builder = builder.certs(tls.certificates());
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("--redis-cluster: {e}"))?;
                Connection::Cluster(
                    client.get_pending_async_connection_with_config(
                        redis::cluster::ClusterConfig::new()
                            .set_connection_timeout(timeout)
                            .set_response_timeout(timeout),
                    ),
                )
            }
            Target::Sentinel {
                nodes,
                primary,
                auth,
            } => {
                let client = sentinel_client(nodes, primary, auth.as_ref(), tls)?;
                Connection::Sentinel(Arc::new(SentinelPrimary {
                    client: tokio::sync::Mutex::new(client),
                    current: tokio::sync::RwLock::new(None),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout)),
                }))
            }
        };
        Ok(Store {
            connection,
            script: Script::new(TAKE),
            timeout,
        })
    }

    /// Runs the decision: all limits taken from, or none.
    pub async fn take(&self, decision: &Decision) -> Result<Outcome, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        for ask in &decision.asks {
            invocation.key(&ask.key);
            invocation.arg(ask.requests).arg(ask.hits).arg(ask.ttl);
        }
        let reply: Vec<u64> = self.invoke(&invocation).await?;
        let (admitted, used) = reply
            .split_first()
            .ok_or_else(|| StoreError::Redis("the script returned nothing".into()))?;
        if used.len() != decision.asks.len() {
            return Err(StoreError::Redis(format!(
                "the script returned {} counts for {} limits",
                used.len(),
                decision.asks.len()
            )));
        }
        Ok(Outcome {
            admitted: *admitted == 1,
            used: used.to_vec(),
        })
    }

    /// Runs a script (its keys in one hash tag), within the timeout. A call Redis refused
    /// before running it (a connection being replaced) is made once more; any other failure
    /// may have run it, and is never retried.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let call = async {
            match &self.connection {
                Connection::Node(c) => {
                    let mut c = c.clone();
                    match invocation.invoke_async::<T>(&mut c).await {
                        Err(e) if e.is_connection_refusal() => {
                            invocation.invoke_async::<T>(&mut c).await
                        }
                        result => result,
                    }
                }
                Connection::Cluster(c) => invocation.invoke_async::<T>(&mut c.clone()).await,
                Connection::Sentinel(s) => {
                    let result = match s.connection().await {
                        Ok(mut c) => invocation.invoke_async::<T>(&mut c).await,
                        Err(e) => Err(e),
                    };
                    if result.is_err() {
                        s.forget().await;
                    }
                    result
                }
            }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(|e| self.error(e))
    }

    /// Whether Redis answers a PING within the timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let cmd = redis::cmd("PING");
        let call = async {
            match &self.connection {
                Connection::Node(c) => cmd.query_async::<String>(&mut c.clone()).await,
                Connection::Cluster(c) => cmd.query_async::<String>(&mut c.clone()).await,
                Connection::Sentinel(s) => {
                    let result = match s.connection().await {
                        Ok(mut c) => cmd.query_async::<String>(&mut c).await,
                        Err(e) => Err(e),
                    };
                    if result.is_err() {
                        s.forget().await;
                    }
                    result
                }
            }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// The client's own response timeout (the same length) is a timeout too.
    fn error(&self, e: redis::RedisError) -> StoreError {
        if e.is_timeout() {
            StoreError::Timeout(self.timeout)
        } else {
            StoreError::Redis(e.to_string())
        }
    }
}
