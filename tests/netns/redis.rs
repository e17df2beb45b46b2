//! Two gateways on the public side sharing one Redis in a namespace of its
//! own, each with a node behind NAT that dials it: Redis killed under load
//! and started again on its address. No request fails, and both gateways'
//! `/readyz` say Redis is down, then up again, and they share the cache
//! through it before and after (tests/e2e/redis.rs checks more on
//! loopback: the buckets while Redis is down, the metrics).

use std::process::{Child, Stdio};

use super::*;

/// Debian's redis-server as a process of its host, killed when dropped.
pub struct Redis {
    host: Host,
    addr: SocketAddr,
    child: Child,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Redis {
    /// On port 6379 of its namespace, or a free loopback port.
    pub fn start(host: Host) -> Redis {
        let mut addr = host.listen_addr(6379);
        if addr.port() == 0 {
            addr = osprey_tests::process::free_addr();
        }
        let child = spawn(&host, addr);
        let redis = Redis { host, addr, child };
        redis.wait_for_pong();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// SIGKILL: its connections are reset, nothing is saved.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Started again on the same address.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.host, self.addr);
        self.wait_for_pong();
    }

    fn wait_for_pong(&self) {
        let (addr, started) = (self.addr, Instant::now());
        while !self.host.run(move || pong(addr)) {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not answer on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(host: &Host, addr: SocketAddr) -> Child {
    host.command("redis-server")
        .args(["--bind", &addr.ip().to_string(), "--port", &addr.port().to_string(), "--save", "", "--appendonly", "no"])
        // Without a password Redis answers -DENIED to any address but
        // loopback; the gateways are other hosts on the bridge.
        .args(["--protected-mode", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server; `make test-deps` installs it)")
}

fn pong(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 7];
    tcp.write_all(b"PING\r\n").is_ok() && tcp.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// Waits (at most `limit`) until every gateway's `/readyz` says Redis is `state`.
fn until_redis(fleet: &Fleet, state: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let states: Vec<Value> = (0..fleet.gateways.len()).map(|g| fleet.ready(g)["redis"].clone()).collect();
        if states.iter().all(|s| s["state"] == state) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "the gateways did not see redis {state} within {limit:?}: {states:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same upload through gateway 0, then gateway 1: the cache's word
/// (`x-osprey-cache`) on each; a miss then a hit means they share Redis.
fn shared(fleet: &Fleet) -> (String, String) {
    let (urls, client, body) = ([fleet.url(0, "/v1/detect/fast"), fleet.url(1, "/v1/detect/fast")], fleet.client(), fresh_dog());
    fleet.net.public().run(move || {
        let client = client.build();
        let word = |url: &str| {
            let resp = client.post(url).header("content-type", "image/jpeg").body(body.clone()).send().unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers().get("x-osprey-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
        };
        (word(&urls[0]), word(&urls[1]))
    })
}

#[test]
fn two_gateways_keep_serving_while_their_redis_is_killed_and_restarted_under_load() {
    let mut fleet = Topology::pool(2)
        .tunnel()
        .gateways(2)
        .redis()
        // Fresh uploads: every request asks Redis for its answer, then stores it.
        .route("cache_ttl_s = 60\nrate_limit = { rate = 1000, burst = 1000 }")
        .start("redis");
    until_redis(&fleet, "up", Duration::from_secs(5));
    assert_eq!(shared(&fleet), ("miss".into(), "hit".into()), "the gateways share the cache through Redis");
    let redis_url = fleet.redis.as_ref().unwrap().url();
    let load = Load::start(&fleet, "/v1/detect/fast", 4);
    load.pass(12);

    fleet.redis.as_mut().unwrap().kill();
    let down = until_redis(&fleet, "down", Duration::from_secs(10));
    eprintln!("both gateways said redis was down {} ms after it was killed", down.as_millis());
    for g in 0..2 {
        let redis = fleet.ready(g)["redis"].clone();
        assert_eq!(redis["url"], redis_url.as_str(), "{redis}");
    }
    load.pass(12);

    fleet.redis.as_mut().unwrap().restart();
    let up = until_redis(&fleet, "up", Duration::from_secs(10));
    eprintln!("both gateways were back on redis {} ms after it answered again", up.as_millis());
    load.pass(12);
    assert_eq!(shared(&fleet), ("miss".into(), "hit".into()), "the gateways share the cache through Redis again");

    let seen = load.stop();
    let (total, failed) = failures(&seen);
    assert!(failed.is_empty(), "{} of {total} requests failed while redis went away and came back: {:?}", failed.len(), &failed[..failed.len().min(3)]);
    for (g, gateway) in fleet.gateways.iter().enumerate() {
        let node = format!("tunnel://node{g}@");
        let served = seen.iter().filter(|s| s.node.as_deref().is_some_and(|n| n.starts_with(&node))).count();
        assert!(served > 0, "gateway {g} ({}) served nothing through its node", gateway.addr);
    }
    eprintln!("{total} requests under load on two gateways, none failed");
}
