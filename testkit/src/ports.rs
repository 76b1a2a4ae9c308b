//! Free TCP ports on 127.0.0.1.

use std::net::TcpListener;

/// `n` distinct ports free right now: all bound at once (so none is handed out twice), then
/// released for the caller to listen on.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}
