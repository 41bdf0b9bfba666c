//! Ports for servers a test starts and must know the port of before they run.
//!
//! A port learnt by binding port 0 and letting go is in the kernel's ephemeral range, where
//! the next port-0 listener or outgoing connection of any process may be handed it before
//! the server binds it (seen: an edge's port taken by another test's control plane). These
//! come from below that range instead, where nothing is handed out, and are free when picked.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first port of the kernel's ephemeral range (Linux's default when unreadable).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A loopback port that is free now and that no port-0 bind will be handed meanwhile.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let span = ephemeral_start().saturating_sub(LOW).max(1);
    // Each test process starts at its own point, so parallel test binaries do not meet.
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free port below the ephemeral range");
        let port = LOW + start.wrapping_add(n) % span;
        if let Ok(port) = u16::try_from(port) {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
}
