//! Where the counts live: Redis (one node, or a Redis Cluster), one Lua script per decision.
//!
//! The script (`take.lua`) checks every limit of a request and takes from all of them or from
//! none, atomically. `redis::Script` sends it by SHA (EVALSHA) and loads it again when Redis
//! answers NOSCRIPT (after a restart or a failover). Every call is bounded by a timeout.

use std::time::Duration;

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, Script};

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
    /// Redis Sentinel nodes and the name of the primary they watch.
    Sentinel { nodes: Vec<String>, primary: String },
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

impl Store {
    /// Connects lazily: quotad starts (and answers `UNAVAILABLE`) while Redis is still down, and
    /// reconnects by itself whenever the connection is lost.
    pub fn new(target: &Target, timeout: Duration) -> Result<Store, String> {
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
                let client = redis::Client::open(info).map_err(|e| format!("--redis: {e}"))?;
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
                let client = ClusterClientBuilder::new(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
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
            Target::Sentinel { nodes, primary } => {
                let client = SentinelClient::build(
                    nodes.clone(),
                    primary.clone(),
                    Some(
                        <&SentinelNodeConnectionInfo>::default()
                            .clone()
                            .set_tcp_settings(tcp()),
                    ),
                    SentinelServerType::Master,
                )
                .map_err(|e| format!("--redis-sentinel: {e}"))?;
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
        let call = async {
            match &self.connection {
                Connection::Node(c) => {
                    let mut c = c.clone();
                    match invocation.invoke_async::<Vec<u64>>(&mut c).await {
                        // Refused: the call never reached Redis (nothing counted), and the
                        // manager has begun a new connection; once more, on it. Any other
                        // failure may have run the script: never retried.
                        Err(e) if e.is_connection_refusal() => {
                            invocation.invoke_async::<Vec<u64>>(&mut c).await
                        }
                        result => result,
                    }
                }
                Connection::Cluster(c) => invocation.invoke_async::<Vec<u64>>(&mut c.clone()).await,
                Connection::Sentinel(s) => {
                    let result = match s.connection().await {
                        Ok(mut c) => invocation.invoke_async::<Vec<u64>>(&mut c).await,
                        Err(e) => Err(e),
                    };
                    if result.is_err() {
                        s.forget().await;
                    }
                    result
                }
            }
        };
        let reply = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(|e| self.error(e))?;
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
