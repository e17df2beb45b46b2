//! Nodes behind NAT (nftables in their namespaces: nothing opens a
//! connection to them) that dial out to the gateway in the public
//! namespace and serve its pool over the connection they opened; then one
//! node's cable pulled under load and plugged back in.
//!
//! HTTP/2 keep-alive on both ends of a tunnel (`host/src/upstream/node.rs`,
//! `host/src/server/dial.rs`): a ping every 4 s, the connection given up
//! when one is not answered within 3 s. A pulled cable sends no reset, so
//! that is how long each end takes to notice: up to ~7 s. A request in
//! flight on the cut node has no answer byte until then; the gateway then
//! retries it on the other node, within the route's default 10 s deadline.
//! (With pings of 10 s + 5 s, as first built, those requests ended in
//! `504 deadline_exceeded` at 10 s: 2 of 521 under 4 clients.)

use super::*;

/// `tunnel://NODE@ADDR:PORT`: the node's name and the address its connection came from.
fn tunnel_label(name: &str, host: &Host) -> String {
    format!("tunnel://{name}@{}:", host.ip)
}

/// One gateway, two nodes behind NAT, through the cases in turn (each node
/// start loads the real models: a fleet per case would cost minutes).
#[test]
fn nodes_behind_nat_dial_out_serve_the_pool_and_reconnect_after_a_cut_link() {
    let fleet = Topology::pool(2).tunnel().route("cache_ttl_s = 0").start("tunnel");
    let labels: Vec<String> = fleet.hosts.iter().enumerate().map(|(i, h)| tunnel_label(&format!("node{i}"), h)).collect();

    // Answers name the tunnel node that served them; both serve.
    let load = Load::start(&fleet, "/v1/detect/fast", 4);
    load.pass(8);
    let answers = load.stop();
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body["detections"].as_array().unwrap().iter().any(|d| d["label"] == "dog"), "{}", a.body);
        let node = a.node.as_deref().expect("x-osprey-node on a forwarded answer");
        assert!(labels.iter().any(|l| node.starts_with(l)), "{node} is neither of {labels:?}");
    }
    for label in &labels {
        assert!(answers.iter().any(|a| a.node.as_deref().unwrap().starts_with(label)), "{} answers under load, none from {label}", answers.len());
    }

    if !fleet.net.namespaces() {
        eprintln!("netns: NAT enforcement and the cut link skipped (on loopback nothing is enforced and there is no link to cut)");
        return;
    }
    // Enforced: each node listens on its own address, and the gateway's
    // side cannot open a connection to it; only the tunnel carries requests.
    let wait = Duration::from_secs(1);
    for (node, host) in fleet.nodes.iter().zip(&fleet.hosts) {
        assert!(connects(host, node.addr, wait), "{} does listen on {}", host.role, node.addr);
        assert!(!connects(fleet.net.public(), node.addr, wait), "the public side opened a connection to {} behind NAT", host.role);
    }

    // node0's cable pulled under load: node1 serves, nothing fails.
    let load = Load::start(&fleet, "/v1/detect/fast", 4);
    load.pass(8);
    let cut = Instant::now();
    fleet.net.cut(&fleet.hosts[0]);
    let dropped = fleet.wait_for_tunnels(0, 1, Duration::from_secs(25));
    eprintln!("the gateway dropped the cut node's tunnel {} ms after the cut (HTTP/2 pings: 4 s + 3 s)", dropped.as_millis());
    assert!(fleet.nodes[0].wait_for_log("tunnel closed", 1, Duration::from_secs(25).saturating_sub(cut.elapsed())), "the cut node noticed its dead tunnel: {:?}", fleet.nodes[0].log("gateway"));
    load.pass(8);

    // Plugged back in: the node dials again and serves.
    fleet.net.restore(&fleet.hosts[0]);
    let restored = Instant::now();
    let back = load.until_served_by(&labels[0], restored, Duration::from_secs(40));
    let seen = load.stop();
    let (total, failed) = failures(&seen);
    let slowest = seen.iter().map(|s| s.took).max().unwrap();
    eprintln!("{total} requests under load across the cut, {} failed; the slowest took {} ms", failed.len(), slowest.as_millis());
    assert!(failed.is_empty(), "{} of {total} requests failed across the cut: {:?}", failed.len(), &failed[..failed.len().min(3)]);
    let back = back.expect("the restored node served again within 40 s (backoff cap 30 s, jittered)");
    eprintln!(
        "reconnect: node0 served again {} ms after its link was restored (busy machine; {} dial attempts logged)",
        (back - restored).as_millis(),
        fleet.nodes[0].log("dialling again in").len()
    );
    assert_eq!(fleet.nodes[0].log("tunnel open").len(), 2, "one tunnel before the cut, one after");
}

