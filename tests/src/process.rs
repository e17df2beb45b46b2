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
        Self::start_binary(&super::repo().join("target/release/osprey"), config, listen)
    }

    /// The same with another build of the binary.
    pub fn start_binary(binary: &Path, config: &Path, listen: SocketAddr) -> Osprey {
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &listen.to_string()])
            .env("OSPREY_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run `make setup` to build it)", binary.display()));
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
