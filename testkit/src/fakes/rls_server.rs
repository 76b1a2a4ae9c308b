//! A rate limit server of Envoy's RLS protocol that answers as Kuadrant's Limitador does: an
//! `overall_code` and no per-descriptor statuses (limitador-server's `envoy_rls/server.rs`
//! builds every `RateLimitResponse` with `statuses: vec![]`, and reads only the request-wide
//! `hits_addend`, 0 meaning 1). One count for every request, whatever its descriptors: OK while
//! the count plus the hits fits `limit`, then OVER_LIMIT (nothing counted).

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

use crate::poll::poll;
use crate::ports::free_port;

struct Overall {
    limit: u64,
    count: Mutex<u64>,
    calls: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl RateLimitService for Overall {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hits = match request.get_ref().hits_addend {
            0 => 1,
            n => u64::from(n),
        };
        let mut count = self.count.lock().unwrap();
        let ok = *count + hits <= self.limit;
        if ok {
            *count += hits;
        }
        let code = if ok { Code::Ok } else { Code::OverLimit };
        Ok(Response::new(RateLimitResponse {
            overall_code: code as i32,
            ..Default::default()
        }))
    }
}

/// The fake server, on a free port of 127.0.0.1 (HTTP/2, plaintext), until dropped.
pub struct OverallOnlyRls {
    pub port: u16,
    calls: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OverallOnlyRls {
    /// Admits `limit` hits in all, then refuses.
    pub fn start(limit: u64) -> OverallOnlyRls {
        let port = free_port();
        let calls = Arc::new(AtomicU64::new(0));
        let service = Overall {
            limit,
            count: Mutex::new(0),
            calls: Arc::clone(&calls),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tonic::transport::Server::builder()
                    .add_service(RateLimitServiceServer::new(service))
                    .serve_with_shutdown(addr, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        poll(
            Duration::from_secs(10),
            "the fake RLS server to listen",
            || TcpStream::connect(addr).ok(),
        );
        OverallOnlyRls {
            port,
            calls,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `ShouldRateLimit` calls answered so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for OverallOnlyRls {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
