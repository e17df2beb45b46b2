//! A real `osprey serve` in a process of its own, as an operator runs it:
//! on the address asked (port 0 for any), its log read for the address it
//! took. Killed when dropped, or on purpose (`kill`, `terminate`) to test
//! what survives it. Its log is kept for the test to read (`log`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Osprey {
    child: Child,
    pub addr: SocketAddr,
    /// Every line it logged so far (its stdout).
    log: Arc<Mutex<Vec<String>>>,
}

impl Osprey {
    /// Starts `target/release/osprey serve` and waits until it listens.
    pub fn start(config: &Path, listen: SocketAddr) -> Osprey {
        Self::start_binary(&super::repo().join("target/release/osprey"), config, listen)
    }

    /// The same with variables added to its environment (tokens, say).
    pub fn start_env(config: &Path, listen: SocketAddr, env: &[(&str, &str)]) -> Osprey {
        Self::spawn(&super::repo().join("target/release/osprey"), config, listen, env)
    }

    /// The same with another build of the binary.
    pub fn start_binary(binary: &Path, config: &Path, listen: SocketAddr) -> Osprey {
        Self::spawn(binary, config, listen, &[])
    }

    fn spawn(binary: &Path, config: &Path, listen: SocketAddr, env: &[(&str, &str)]) -> Osprey {
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &listen.to_string()])
            .env("OSPREY_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run `make setup` to build it)", binary.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("osprey exited before listening: {:?}\n{}", child.wait(), log.lock().unwrap().join("\n")),
            };
            log.lock().unwrap().push(line.clone());
            if let Some(at) = line.find("listening on http://") {
                let rest = &line[at + "listening on http://".len()..];
                let end = rest.find(|c: char| c.is_whitespace() || c == '\x1b').unwrap_or(rest.len());
                break rest[..end].parse().unwrap_or_else(|e| panic!("address in {line:?}: {e}"));
            }
        };
        // Keep reading its log so a full pipe never blocks the server.
        let kept = log.clone();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| kept.lock().unwrap().push(l)));
        Osprey { child, addr, log }
    }

    /// The lines it logged so far that contain `needle`.
    pub fn log(&self, needle: &str) -> Vec<String> {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Waits until it logged `count` lines containing `needle`; false if not within `limit`.
    pub fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while self.log(needle).len() < count {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// SIGTERM, as an operator or Kubernetes stops it, and waits for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill(1)");
        assert!(sent.success(), "kill -TERM {}", self.child.id());
        self.child.wait().expect("wait for osprey")
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
