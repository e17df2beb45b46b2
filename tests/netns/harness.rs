//! The harness's own promises, checked without osprey: a node behind NAT
//! is reached by nobody yet reaches the public side, a cut link carries
//! nothing until restored, and a dropped network leaves nothing behind.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use osprey_tests::netns::{Host, Network, Reach};

use super::connects;

/// A listener of `host` on `port` (made in its namespace: it stays there).
fn listen(host: &Host, port: u16) -> TcpListener {
    let addr = SocketAddr::new(host.ip.into(), port);
    host.run(move || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
}

/// The enforcement behind "nodes behind NAT": the public side (and another
/// node) cannot open a connection to a node behind NAT, while an open node
/// is reached; the NAT'ed node opens one to the public side, and bytes go
/// both ways on it (its answers pass the firewall as established traffic).
#[test]
fn a_node_behind_nat_reaches_the_public_side_and_nobody_reaches_it() {
    let mut net = Network::new();
    if !net.namespaces() {
        eprintln!("netns: skipped (on loopback nothing can be enforced)");
        return;
    }
    let (open, natted) = (net.add_host("open", Reach::Open), net.add_host("nat", Reach::OutboundOnly));
    let (_l_open, _l_nat, l_public) = (listen(&open, 9000), listen(&natted, 9000), listen(net.public(), 9000));
    let wait = Duration::from_secs(1);
    assert!(connects(net.public(), SocketAddr::new(open.ip.into(), 9000), wait), "the public side reaches an open node");
    assert!(!connects(net.public(), SocketAddr::new(natted.ip.into(), 9000), wait), "the public side opened a connection to a node behind NAT");
    assert!(!connects(&open, SocketAddr::new(natted.ip.into(), 9000), wait), "another node opened a connection to a node behind NAT");

    let public_addr = SocketAddr::new(net.public().ip.into(), 9000);
    let mut stream = natted.run(move || TcpStream::connect_timeout(&public_addr, wait).expect("the node behind NAT reaches the public side"));
    let (mut accepted, from) = l_public.accept().unwrap();
    assert_eq!(from.ip(), std::net::IpAddr::from(natted.ip), "seen from the public side, the connection comes from the node");
    exchange(&mut stream, &mut accepted);
}

/// Bytes one way and back on an open connection, within a bounded time.
fn exchange(a: &mut TcpStream, b: &mut TcpStream) {
    use std::io::{Read, Write};
    for s in [&*a, &*b] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    a.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    b.write_all(b"pong").unwrap();
    a.read_exact(&mut got).expect("the answer to the node's own connection passes its firewall");
    assert_eq!(&got, b"pong");
    let _ = a.shutdown(Shutdown::Both);
}

/// What the tunnel case does to a node: its cable pulled, then plugged
/// back. Cut, an open connection carries nothing and a new one fails; put
/// back, the same connection carries bytes again and new ones succeed.
#[test]
fn a_cut_link_carries_nothing_until_restored() {
    let mut net = Network::new();
    if !net.namespaces() {
        eprintln!("netns: skipped (on loopback there is no link to cut)");
        return;
    }
    let node = net.add_host("node", Reach::OutboundOnly);
    let l_public = listen(net.public(), 9000);
    let public_addr = SocketAddr::new(net.public().ip.into(), 9000);
    let wait = Duration::from_secs(1);
    let mut stream = node.run(move || TcpStream::connect_timeout(&public_addr, wait).unwrap());
    let (mut accepted, _) = l_public.accept().unwrap();

    net.cut(&node);
    assert!(!connects(&node, public_addr, wait), "a new connection crossed a cut link");
    {
        use std::io::{Read, Write};
        stream.write_all(b"lost").unwrap();
        accepted.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut got = [0u8; 4];
        assert!(accepted.read_exact(&mut got).is_err(), "bytes crossed a cut link");
        net.restore(&node);
        // TCP sends them again once the link is back (its retransmission timer).
        accepted.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        accepted.read_exact(&mut got).expect("the bytes sent while cut arrive once restored");
        assert_eq!(&got, b"lost");
    }
    assert!(connects(&node, public_addr, wait), "no new connection after the link came back");
    exchange(&mut stream, &mut accepted);
}

/// Dropping a network kills what runs in it and deletes its namespaces.
#[test]
fn a_dropped_network_leaves_no_namespace_and_no_process() {
    let mut net = Network::new();
    if !net.namespaces() {
        eprintln!("netns: skipped (on loopback there is no namespace to delete)");
        return;
    }
    let host = net.add_host("sleeper", Reach::Open);
    let ns = host.namespace().unwrap().to_string();
    let mut sleeper = host.command("sleep").arg("600").spawn().unwrap();
    // `ip netns exec` enters the namespace after it started: wait until it did.
    let pid = sleeper.id().to_string();
    let entered = Instant::now();
    while !ip(&["netns", "pids", &ns]).split_whitespace().any(|p| p == pid) {
        assert!(entered.elapsed() < Duration::from_secs(5), "sleep never ran in {ns}");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(net);
    let listed = ip(&["netns", "list"]);
    assert!(!listed.lines().any(|l| l.split_whitespace().next() == Some(ns.as_str())), "{ns} is still there:\n{listed}");
    let dropped = Instant::now();
    let status = loop {
        if let Some(status) = sleeper.try_wait().unwrap() {
            break status;
        }
        if dropped.elapsed() > Duration::from_secs(5) {
            let _ = sleeper.kill();
            panic!("the process in the dropped namespace was left to run");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success(), "it was killed, not left to finish: {status}");
}

fn ip(args: &[&str]) -> String {
    String::from_utf8(std::process::Command::new("ip").args(args).output().unwrap().stdout).unwrap()
}
