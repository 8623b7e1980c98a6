//! Loopback ports for the processes the tests start (etcd, kube-apiserver, the controller's
//! listeners), which must be told their port before they bind it.
//!
//! A port learnt by binding `127.0.0.1:0` and letting go comes from the kernel's ephemeral
//! range, the range every outgoing connection takes its local port from: between the test
//! letting go and the process binding, a connection (to etcd, to the API server, to the
//! emulator) may take it, and the process fails with "address already in use". CI saw exactly
//! that. So the ports come from below that range, where the kernel hands out none by itself,
//! each at most once per test binary, and each checked free by binding it.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use rand::Rng;

/// The lowest port handed out: above the well-known and most registered service ports.
const LOWEST: u16 = 10_000;
/// Where the kernel's ephemeral range starts when /proc does not say (Linux's default).
const EPHEMERAL_START: u16 = 32_768;
const ATTEMPTS: usize = 200;

/// A loopback port that nothing listens on now, that no outgoing connection will take, and
/// that no other caller in this test binary was given.
pub fn unused_port() -> Result<u16, String> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let below = ephemeral_start();
    if below <= LOWEST {
        return Err(format!(
            "the ephemeral port range starts at {below}: no port below it to draw from"
        ));
    }
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    let mut random = rand::rng();
    for _ in 0..ATTEMPTS {
        let port = random.random_range(LOWEST..below);
        if given.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.insert(port);
        return Ok(port);
    }
    Err(format!(
        "no free loopback port in {LOWEST}..{below} after {ATTEMPTS} tries"
    ))
}

/// The first port of the kernel's ephemeral range.
pub fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START)
}
