//! quotad on a local 3-master Redis Cluster: the same exactness, one consumer's keys in one slot.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_counts_exactly_with_each_consumer_in_one_slot() {
    clear_of_day_boundary();
    let cluster = RedisCluster::start();
    let quotad = Quotad::start(
        QUOTAD,
        &[
            "--redis-cluster",
            &cluster.seeds(),
            "--redis-timeout-ms",
            "5000",
        ],
    );
    let consumers: Vec<String> = (0..12).map(|i| unique(&format!("c{i}"))).collect();
    let admitted = hammer(&quotad, &consumers, 25, 60, 48).await;
    let mut nodes_used = std::collections::BTreeSet::new();
    for c in &consumers {
        assert_eq!(admitted.get(c).copied().unwrap_or(0), 25, "{c}");
        let keys = cluster.keys(&format!("tollgate:v1:{{tollgate:{c}}}:*"));
        assert_eq!(keys.len(), 2, "{c}: {keys:?}");
        let (node, _) = keys[0];
        assert!(
            keys.iter().all(|(n, _)| *n == node),
            "{c}: one node: {keys:?}"
        );
        let slots: Vec<u64> = keys.iter().map(|(_, k)| cluster.slot(k)).collect();
        assert_eq!(slots[0], slots[1], "{c}: one slot");
        for (n, k) in &keys {
            assert_eq!(cluster.get(*n, k), 25, "{k}");
        }
        nodes_used.insert(node);
    }
    assert!(
        nodes_used.len() >= 2,
        "12 consumers should spread over the masters: {nodes_used:?}"
    );
}
