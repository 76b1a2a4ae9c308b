//! quotad's gRPC client (Envoy's rate limit service protocol), for quotad's own tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::transport::Channel;

use crate::quotad::Quotad;

impl Quotad {
    /// A gRPC client of this quotad.
    pub async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://127.0.0.1:{}", self.grpc))
            .await
            .unwrap()
    }

    /// A gRPC client of this quotad over TLS: trusting `ca`, naming the server `server_name`,
    /// presenting `identity` (mutual TLS) if given. The error of a refused handshake is the
    /// caller's to look at.
    #[cfg(feature = "tls")]
    pub async fn tls_client(
        &self,
        ca: &std::path::Path,
        server_name: &str,
        identity: Option<&crate::tls::Pair>,
    ) -> Result<RateLimitServiceClient<Channel>, tonic::transport::Error> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
            .domain_name(server_name);
        if let Some(pair) = identity {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(&pair.cert).unwrap(),
                std::fs::read(&pair.key).unwrap(),
            ));
        }
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", self.grpc))
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await?;
        Ok(RateLimitServiceClient::new(channel))
    }
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
    client: &mut RateLimitServiceClient<Channel>,
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
) -> HashMap<String, u64> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(quotad.client().await);
    }
    let work: Vec<String> = (0..per_consumer)
        .flat_map(|_| consumers.iter().cloned())
        .collect();
    let work = Arc::new(Mutex::new(work));
    let mut tasks = Vec::new();
    for i in 0..callers {
        let mut client = clients[i % clients.len()].clone();
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted: HashMap<String, u64> = Default::default();
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
    let mut total: HashMap<String, u64> = Default::default();
    for t in tasks {
        for (c, n) in t.await.unwrap() {
            *total.entry(c).or_default() += n;
        }
    }
    total
}
