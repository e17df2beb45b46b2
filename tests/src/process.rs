//! A real `osprey serve` in a process of its own, as an operator runs it:
//! on the address asked (port 0 for any), its log read for the address it
//! took. Killed when dropped, or on purpose (`kill`) to test what survives it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Osprey {
    child: Child,
    pub addr: SocketAddr,
}

impl Osprey {
    /// Starts `target/release/osprey serve` and waits until it listens.
    pub fn start(config: &Path, listen: SocketAddr) -> Osprey {
        Self::start_binary(&binary(), config, listen)
    }

    /// The same with another build of the binary.
    pub fn start_binary(binary: &Path, config: &Path, listen: SocketAddr) -> Osprey {
        Self::start_command(Command::new(binary), config, listen)
    }

    /// Starts it as a process of `host`: in its network namespace, or on
    /// loopback where the network could not make namespaces.
    pub fn start_in(host: &super::netns::Host, config: &Path, listen: SocketAddr) -> Osprey {
        Self::start_command(host.command(binary()), config, listen)
    }

    /// Starts `command`, a command line that ends in the osprey binary (run
    /// through `ip netns exec`, `taskset`...), with `serve` and its
    /// arguments added here. The child must be osprey itself (its wrappers
    /// exec it), so that a kill reaches the server.
    pub fn start_command(mut command: Command, config: &Path, listen: SocketAddr) -> Osprey {
        let mut child = command
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &listen.to_string()])
            .env("OSPREY_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e} (run `make setup` to build the binary)"));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("osprey exited before listening: {:?}", child.wait()),
            };
            if let Some(at) = line.find("listening on http://") {
                let rest = &line[at + "listening on http://".len()..];
                let end = rest.find(|c: char| c.is_whitespace() || c == '\x1b').unwrap_or(rest.len());
                break rest[..end].parse().unwrap_or_else(|e| panic!("address in {line:?}: {e}"));
            }
        };
        // Keep reading its log so a full pipe never blocks the server.
        std::thread::spawn(move || lines.for_each(drop));
        Osprey { child, addr }
    }

    /// Its process id, for readings of its own in /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGKILL: no goodbye to anyone, as a machine that loses power.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release binary the tests run.
pub fn binary() -> std::path::PathBuf {
    super::repo().join("target/release/osprey")
}

impl Drop for Osprey {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Any free loopback port, chosen by the server as it binds: no other
/// listener can take it between a probe and the bind.
pub const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A loopback address whose port is free now, where nothing listens (a
/// node that is down). It is only free until someone binds it: a server
/// should listen on `ANY_PORT` instead.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}
