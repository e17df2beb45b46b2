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
    /// Every line it logged so far (its stdout).
    log: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
}

impl Osprey {
    /// Starts `target/release/osprey serve` and waits until it listens.
    pub fn start(config: &Path, listen: SocketAddr) -> Osprey {
        Self::start_binary(&binary(), config, listen)
    }

    /// The same with variables added to its environment (tokens, say).
    pub fn start_env(config: &Path, listen: SocketAddr, env: &[(&str, &str)]) -> Osprey {
        let mut command = Command::new(binary());
        command.envs(env.iter().copied());
        Self::start_command(command, config, listen)
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

    /// [`Osprey::start_in`] with variables added to its environment
    /// (`ip netns exec` passes it on): the tokens of a tunnel.
    pub fn start_in_env(host: &super::netns::Host, config: &Path, listen: SocketAddr, env: &[(&str, &str)]) -> Osprey {
        let mut command = host.command(binary());
        command.envs(env.iter().copied());
        Self::start_command(command, config, listen)
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
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("osprey exited before listening: {:?}\n{}", child.wait(), log.lock().unwrap().join("\n")),
            };
            log.lock().unwrap().push(line.clone());
            // `https://` where the server terminates TLS (ACME, files).
            if let Some(rest) = line.find("listening on http").map(|at| &line[at..]).and_then(|l| l.split_once("://")).map(|(_, rest)| rest) {
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
