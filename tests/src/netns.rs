//! A network of Linux network namespaces made by one test, as machines on a
//! LAN: a "public" namespace holding a bridge (the gateway's side, and where
//! pebble would run), and hosts (nodes, Redis) each in a namespace of its own
//! wired to that bridge by a veth pair. A host may be **behind NAT**: a
//! stateful firewall in its namespace lets its own connections and their
//! answers through and drops every connection opened towards it, so the
//! public side reaches it only through a connection it made itself.
//!
//! Needs root and `ip` (iproute2); `nft` (nftables) for a host behind NAT.
//! Where namespaces cannot be made (not root, no `ip`, a container without
//! the capability, or `OSPREY_NETNS=off`), [`Network::new`] says so on stderr
//! and gives a network on loopback instead: every host is 127.0.0.1 and
//! listens on any free port, nothing is enforced and no link can be cut
//! ([`Network::namespaces`] tells a test which it got).
//!
//! Every interface lives inside the test's own namespaces (the bridge too),
//! so nothing is added to the machine's own network: two networks, in one
//! process or in two, use the same addresses without meeting. Namespace
//! names are `osprey-t-PID-N-ROLE`; dropping the network kills what still
//! runs in them and deletes them, and the first network a process makes
//! deletes those of processes that no longer exist (a run killed before
//! its drops ran).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Every namespace this harness makes starts so: the sweep deletes no other.
const PREFIX: &str = "osprey-t-";
/// The public namespace's address on its bridge; hosts get .10 and up.
const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// Who may open a connection to a host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reach {
    /// Anyone on the network: a node on a LAN that the gateway dials.
    Open,
    /// Nobody: the host's own connections and their answers only, as a node
    /// behind NAT (a stateful firewall on its namespace's input).
    OutboundOnly,
}

/// Where the hosts live: namespaces, or loopback where those cannot be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Namespaces,
    Loopback,
}

/// One machine of the network: a namespace (or, on loopback, this one).
#[derive(Clone, Debug)]
pub struct Host {
    pub role: String,
    /// Its address, as the others reach it.
    pub ip: Ipv4Addr,
    pub reach: Reach,
    namespace: Option<String>,
    /// Its veth's end on the public bridge: down is a cable pulled out.
    public_end: Option<String>,
}

impl Host {
    /// The namespace's name, for `ip netns exec` by hand (None on loopback).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Where a server of this host should listen. In a namespace of its own
    /// the test owns every port, so `port` is free and stays so (a server
    /// restarted there gets it again with no race); on loopback it is any
    /// free port, chosen by the server as it binds.
    pub fn listen_addr(&self, port: u16) -> SocketAddr {
        match self.namespace {
            Some(_) => SocketAddr::new(IpAddr::V4(self.ip), port),
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        }
    }

    /// `program` as a process of this host: through `ip netns exec`, which
    /// execs it in place (its pid is the child's, so a kill reaches it).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.namespace {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Makes `name` resolve to `ip` for this host's processes: a hosts file
    /// that `ip netns exec` puts over `/etc/hosts` for what it runs there
    /// (`/etc/netns/NS/hosts`, deleted with the namespace). Threads of the
    /// test do not see it ([`Host::run`]): give their clients the address.
    pub fn resolve(&self, name: &str, ip: Ipv4Addr) {
        let ns = self.namespace.as_deref().unwrap_or_else(|| panic!("{}: on loopback a name resolves through the machine's /etc/hosts, which a test leaves alone", self.role));
        let dir = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        let path = format!("{dir}/hosts");
        let first = if std::path::Path::new(&path).exists() { "" } else { "127.0.0.1 localhost\n" };
        let mut file = std::fs::File::options().create(true).append(true).open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        writeln!(file, "{first}{ip} {name}").unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    /// Runs `f` on a thread inside this host's namespace and returns what it
    /// returns: sockets it opens belong to the host, and keep belonging to
    /// it after the thread ends; threads it starts (a client's runtime) are
    /// in the namespace too. A panic in `f` is this caller's.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                self.enter();
                f()
            });
            thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// [`Host::run`] on a thread that outlives this call: a client under load.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let host = self.clone();
        std::thread::spawn(move || {
            host.enter();
            f()
        })
    }

    /// Moves the calling thread into the namespace. A network namespace is
    /// per thread (setns), so the test's other threads stay where they were.
    fn enter(&self) {
        let Some(ns) = &self.namespace else { return };
        let path = format!("/run/netns/{ns}");
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e} (was the network dropped?)"));
        // SAFETY: setns on a file descriptor that `file` keeps open for the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {ns}: {}", std::io::Error::last_os_error());
    }
}

/// The test's network; dropped, its processes are killed and its namespaces go.
pub struct Network {
    id: String,
    mode: Mode,
    public: Host,
    hosts: Vec<Host>,
}

impl Network {
    /// A public namespace with its bridge, or loopback where namespaces
    /// cannot be made (said on stderr, with why). No `Default`: making one
    /// creates namespaces and links, which a default value should not.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Network {
        let id = crate::unique_name(PREFIX.trim_end_matches('-'));
        let public = |mode| Host {
            role: "public".into(),
            ip: if mode == Mode::Namespaces { PUBLIC_IP } else { Ipv4Addr::LOCALHOST },
            reach: Reach::Open,
            namespace: (mode == Mode::Namespaces).then(|| format!("{id}-public")),
            public_end: None,
        };
        if let Err(why) = can_make_namespaces() {
            eprintln!("netns: network namespaces cannot be made here ({why}): this test runs on loopback instead");
            return Network { public: public(Mode::Loopback), id, mode: Mode::Loopback, hosts: Vec::new() };
        }
        let network = Network { public: public(Mode::Namespaces), id, mode: Mode::Namespaces, hosts: Vec::new() };
        let ns = network.public.namespace.as_deref().expect("a namespace");
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        // No spanning tree and no forward delay: a port forwards as soon as it is up.
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"]);
        ip(&["-n", ns, "addr", "add", &format!("{PUBLIC_IP}/24"), "dev", "br0"]);
        ip(&["-n", ns, "link", "set", "br0", "up"]);
        network
    }

    /// Whether the hosts are namespaces (else loopback: nothing enforced).
    pub fn namespaces(&self) -> bool {
        self.mode == Mode::Namespaces
    }

    /// The public side: the gateway's host, and the bridge's.
    pub fn public(&self) -> &Host {
        &self.public
    }

    /// A new host on the bridge, `role` naming it (unique in this network).
    pub fn add_host(&mut self, role: &str, reach: Reach) -> Host {
        assert!(self.hosts.iter().all(|h| h.role != role) && role != "public", "a second host named {role}");
        let index = self.hosts.len();
        let host = match self.mode {
            Mode::Loopback => Host { role: role.into(), ip: Ipv4Addr::LOCALHOST, reach, namespace: None, public_end: None },
            Mode::Namespaces => {
                let ns = format!("{}-{role}", self.id);
                let public = self.public.namespace.as_deref().expect("a namespace");
                let (end, ip_addr) = (format!("v{index}"), Ipv4Addr::new(10, 77, 0, 10 + u8::try_from(index).expect("< 245 hosts")));
                ip(&["netns", "add", &ns]);
                // Listed before it is wired: a failure below still deletes it on drop.
                self.hosts.push(Host { role: role.into(), ip: ip_addr, reach, namespace: Some(ns.clone()), public_end: None });
                ip(&["-n", &ns, "link", "set", "lo", "up"]);
                // Both ends are made inside namespaces: no name taken on the machine itself.
                ip(&["-n", public, "link", "add", &end, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
                ip(&["-n", public, "link", "set", &end, "master", "br0", "up"]);
                ip(&["-n", &ns, "addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"]);
                ip(&["-n", &ns, "link", "set", "eth0", "up"]);
                if reach == Reach::OutboundOnly {
                    behind_nat(&ns);
                }
                self.hosts.pop();
                Host { role: role.into(), ip: ip_addr, reach, namespace: Some(ns), public_end: Some(end) }
            }
        };
        self.hosts.push(host.clone());
        host
    }

    /// Pulls the host's cable out: its link to the bridge goes down, and
    /// packets either way are lost (the host's own side stays configured, so
    /// its sockets see silence, not an error, as across a real network).
    pub fn cut(&self, host: &Host) {
        self.set_link(host, "down");
    }

    /// Plugs it back in.
    pub fn restore(&self, host: &Host) {
        self.set_link(host, "up");
    }

    fn set_link(&self, host: &Host, state: &str) {
        let end = host.public_end.as_deref().unwrap_or_else(|| panic!("{} has no link to cut on loopback: check Network::namespaces() first", host.role));
        ip(&["-n", self.public.namespace.as_deref().expect("a namespace"), "link", "set", end, state]);
    }

    /// Every namespace of this network.
    fn namespaces_made(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().chain([&self.public]).filter_map(|h| h.namespace.as_deref())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces_made() {
            remove(ns);
        }
    }
}

/// The input chain of a host behind NAT: what a NAT router does to
/// connections from outside, in the host's own namespace.
const NAT_RULES: &str = "table inet osprey_nat {
  chain input {
    type filter hook input priority filter; policy drop;
    iif \"lo\" accept
    ct state established,related accept
  }
}
";

fn behind_nat(ns: &str) {
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec");
    nft.stdin.take().expect("piped stdin").write_all(NAT_RULES.as_bytes()).expect("write the rules to nft");
    let out = nft.wait_with_output().expect("nft");
    assert!(out.status.success(), "nft in {ns}: {} (is nftables installed? `make test-services`)", String::from_utf8_lossy(&out.stderr).trim());
}

/// `Err(why)` where this process cannot make a namespace. Asked once per
/// process, and the stale namespaces of dead runs are deleted then.
fn can_make_namespaces() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            if std::env::var("OSPREY_NETNS").is_ok_and(|v| v == "off") {
                return Err("OSPREY_NETNS=off".into());
            }
            sweep_stale();
            let probe = crate::unique_name(&format!("{PREFIX}probe"));
            let out = Command::new("ip").args(["netns", "add", &probe]).output().map_err(|e| format!("ip: {e}; apt-get install iproute2"))?;
            if !out.status.success() {
                return Err(format!("ip netns add: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            remove(&probe);
            Ok(())
        })
        .clone()
}

/// Deletes the namespaces of runs whose process is gone. Called before this
/// process makes any, so one that carries this process's id is also stale:
/// an earlier process had the id.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    let me = std::process::id();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == me || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netns: deleting {name}, left by process {pid}, which is gone");
            remove(name);
        }
    }
}

/// Kills what runs in the namespace (processes the test started there and
/// has not stopped), then deletes it.
fn remove(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: a signal to a process id; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
    // The files `ip netns exec` puts over /etc for it (Host::resolve), if any.
    let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
}

/// `ip ARGS`, which must succeed: the namespace could be made, so a failure
/// here is a bug of the harness, not a machine without namespaces.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}
