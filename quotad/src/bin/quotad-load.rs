//! quotad-load: the gRPC load generator of `make bench-quotad` (bench/quotad.py).
//!
//! Sends `ShouldRateLimit` calls of two limits each (a day and a month, sized so that every call
//! is admitted: the Redis work is the full check-and-take) for consumers drawn round-robin from a
//! pool, either closed-loop (`--concurrency` callers, as fast as answers come: saturation) or
//! open-loop at `--rate` calls per second (latency measured from each call's scheduled time, so a
//! stall is not hidden). Prints one JSON object.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use tonic::transport::Channel;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "gRPC load generator for quotad (make bench-quotad)")]
struct Flags {
    /// quotad's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    target: String,
    /// HTTP/2 connections to spread the calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Calls per second (open loop); 0 = closed loop with --concurrency callers.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Concurrent callers in closed loop; most calls in flight in open loop.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Consumers to cycle through.
    #[arg(long, default_value_t = 10_000)]
    consumers: u64,
    /// Write one call's gRPC request body (length-prefixed message) to this file and exit:
    /// the body bench/quotad.py gives h2load, a load generator that costs less CPU than this one.
    #[arg(long)]
    write_body: Option<std::path::PathBuf>,
}

fn entry(key: &str, value: &str) -> Entry {
    Entry {
        key: key.into(),
        value: value.into(),
    }
}

fn call(n: u64, consumers: u64) -> RateLimitRequest {
    let consumer = format!("bench{}", n % consumers.max(1));
    let limit = |name: &str, window: &str| RateLimitDescriptor {
        entries: vec![
            entry("consumer", &consumer),
            entry("limit", name),
            entry("window", window),
            entry("requests", "999999999999"),
        ],
        ..Default::default()
    };
    RateLimitRequest {
        domain: "bench".into(),
        descriptors: vec![limit("daily", "day"), limit("monthly", "month")],
        hits_addend: 1,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied().unwrap_or(0) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flags = Flags::parse();
    if let Some(path) = &flags.write_body {
        let message = prost::Message::encode_to_vec(&call(0, 1));
        // gRPC framing: not compressed (0), then the message length as a big-endian u32.
        let mut body = vec![0u8];
        body.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
        body.extend_from_slice(&message);
        std::fs::write(path, body)?;
        return Ok(());
    }
    let mut clients = Vec::new();
    for _ in 0..flags.connections.max(1) {
        let channel = Channel::from_shared(flags.target.clone())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(RateLimitServiceClient::new(channel));
    }
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs(flags.seconds.max(1));
    let started = Instant::now();
    let end = started + duration;
    let mut latencies_us: Vec<u64> = Vec::new();

    if flags.rate == 0 {
        let mut tasks = Vec::new();
        for i in 0..flags.concurrency.max(1) {
            let Some(client) = clients.get(i % clients.len()) else {
                continue;
            };
            let mut client = client.clone();
            let (counter, errors, consumers) = (counter.clone(), errors.clone(), flags.consumers);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    if client.should_rate_limit(call(n, consumers)).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                }
                lat
            }));
        }
        for t in tasks {
            latencies_us.extend(t.await?);
        }
    } else {
        let limit = Arc::new(tokio::sync::Semaphore::new(flags.concurrency.max(1) * 64));
        let interval = Duration::from_secs_f64(1.0 / flags.rate as f64);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let mut n: u64 = 0;
        let mut dropped: u64 = 0;
        loop {
            let scheduled = started + interval.mul_f64(n as f64);
            if scheduled >= end {
                break;
            }
            tokio::time::sleep_until(scheduled.into()).await;
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                dropped += 1;
                n += 1;
                continue;
            };
            let Some(client) = clients.get((n as usize) % clients.len()) else {
                break;
            };
            let mut client = client.clone();
            let (tx, errors, consumers) = (tx.clone(), errors.clone(), flags.consumers);
            tokio::spawn(async move {
                if client.should_rate_limit(call(n, consumers)).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.send(scheduled.elapsed().as_micros() as u64);
                drop(permit);
            });
            n += 1;
        }
        drop(tx);
        while let Some(l) = rx.recv().await {
            latencies_us.push(l);
        }
        errors.fetch_add(dropped, Ordering::Relaxed);
    }

    let elapsed = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let completed = latencies_us.len() as u64;
    println!(
        "{{\"mode\": \"{}\", \"offered_per_s\": {}, \"concurrency\": {}, \"seconds\": {:.2}, \
         \"completed\": {}, \"errors\": {}, \"decisions_per_s\": {:.0}, \"p50_ms\": {:.3}, \
         \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
        if flags.rate == 0 { "closed" } else { "open" },
        flags.rate,
        flags.concurrency,
        elapsed,
        completed,
        errors.load(Ordering::Relaxed),
        completed as f64 / elapsed,
        percentile(&latencies_us, 50.0),
        percentile(&latencies_us, 99.0),
        percentile(&latencies_us, 100.0),
    );
    Ok(())
}
