//! Redis, shared by the result cache and the token buckets of every host
//! that names the same `[redis] url`, and what a host does when it fails.
//!
//! Redis is a help, never a dependency: each call is bounded by `timeout_ms`
//! (connect and answer alike), and the first call that fails puts the host
//! in the *down* state, where the cache and the buckets use their local,
//! in-memory twins and Redis is not even asked, so a dead or blackholed
//! Redis costs requests nothing. Every `recheck_ms` one request asks it
//! again; the first answer brings the host back. Each change is logged once
//! and shown in `/readyz` and in `osprey_redis_up`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use serde::Serialize;

use crate::metrics::UrlLabel;

/// `[redis]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub url: String,
    /// The longest one call may take, connecting included.
    pub timeout: Duration,
    /// While down, how long to wait before asking Redis again.
    pub recheck: Duration,
}

/// One connection (multiplexed, reconnected when lost) and whether Redis answers.
pub struct Redis {
    conn: ConnectionManager,
    /// The URL without its password, for logs and `/readyz`.
    shown: String,
    timeout: Duration,
    health: Mutex<Health>,
    /// `osprey_redis_up{url}`: 1 while Redis answers, 0 while down.
    up: Gauge,
}

impl Redis {
    /// Makes the handle without connecting: a host starts, and serves from
    /// local state, even while Redis is away. `check` then says which.
    pub fn open(settings: &Settings) -> RedisResult<Arc<Redis>> {
        let client = redis::Client::open(settings.url.as_str())?;
        // One connection attempt per reconnect, not the crate's six with
        // backoff: the state machine here decides when to try again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let shown = without_password(&settings.url);
        let up = crate::metrics::global().redis_up.get_or_create(&UrlLabel { url: shown.clone() }).clone();
        up.set(1);
        Ok(Arc::new(Redis { conn, shown, timeout: settings.timeout, health: Mutex::new(Health::new(settings.recheck)), up }))
    }

    /// A PING at start, so the log and `/readyz` tell at once whether Redis answers.
    pub async fn check(&self) {
        let pong: Option<String> = self.run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await }).await;
        if pong.is_some() {
            tracing::info!("redis at {}: answering; the result cache and token buckets are shared through it", self.shown);
        }
    }

    /// Runs one call on Redis, within the timeout. `None` when the host is
    /// down or the call failed: the caller then uses its local state.
    pub async fn run<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let admit = self.health().admit(Instant::now());
        if admit == Admit::Local {
            return None;
        }
        let why = match tokio::time::timeout(self.timeout, call(self.conn.clone())).await {
            Ok(Ok(value)) => {
                if self.health().succeeded(admit) {
                    tracing::info!("redis at {}: back; the result cache and token buckets are shared again", self.shown);
                    self.up.set(1);
                }
                return Some(value);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        let recheck = self.health().failed(Instant::now(), SystemTime::now());
        if let Some(recheck) = recheck {
            tracing::warn!(
                "redis at {}: down ({why}); serving from this host's own cache and token buckets, asking again every {} ms",
                self.shown,
                recheck.as_millis()
            );
            self.up.set(0);
        }
        None
    }

    /// For `/readyz`.
    pub fn status(&self) -> Status {
        let health = self.health();
        let (state, since) = match health.down_since {
            None => ("up", None),
            Some((since, _)) => ("down", Some(since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))),
        };
        Status { url: self.shown.clone(), state, down_since: since }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Redis as `/readyz` shows it.
#[derive(Debug, Serialize)]
pub struct Status {
    pub url: String,
    /// `up` or `down`.
    pub state: &'static str,
    /// Unix seconds since Redis stopped answering; absent while up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_since: Option<u64>,
}

/// What a call may do now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Admit {
    /// Redis answers: ask it.
    Redis,
    /// Down, and time to ask again: this call is the one that asks.
    Probe,
    /// Down: use local state without asking.
    Local,
}

/// Up, or down since when and until when nobody asks. Time comes in as a
/// parameter, so the tests move it by hand.
#[derive(Debug)]
struct Health {
    recheck: Duration,
    /// Wall clock (for people) and the next probe (monotonic).
    down_since: Option<(SystemTime, Instant)>,
}

impl Health {
    fn new(recheck: Duration) -> Health {
        Health { recheck, down_since: None }
    }

    fn admit(&mut self, now: Instant) -> Admit {
        match &mut self.down_since {
            None => Admit::Redis,
            Some((_, next)) if now >= *next => {
                // The one probe of this period; the calls behind it stay local.
                *next = now + self.recheck;
                Admit::Probe
            }
            Some(_) => Admit::Local,
        }
    }

    /// True when this answer brings Redis back. Only a probe does: an answer
    /// to a call made before the failure proves nothing about Redis now.
    fn succeeded(&mut self, admit: Admit) -> bool {
        let back = admit == Admit::Probe && self.down_since.is_some();
        if back {
            self.down_since = None;
        }
        back
    }

    /// `Some(recheck)` when this failure takes Redis down; a failed probe,
    /// or a second failure among calls made together, changes nothing.
    fn failed(&mut self, now: Instant, wall: SystemTime) -> Option<Duration> {
        if self.down_since.is_some() {
            return None;
        }
        self.down_since = Some((wall, now + self.recheck));
        Some(self.recheck)
    }
}

/// `redis://user:secret@host/0` → `redis://user@host/0`.
pub fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECHECK: Duration = Duration::from_secs(1);

    #[test]
    fn down_once_then_local_until_one_probe_a_period_brings_it_back() {
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut h = Health::new(RECHECK);
        assert_eq!(h.admit(at(0)), Admit::Redis);
        // Calls made together all fail: the first takes Redis down, the rest say nothing.
        assert_eq!(h.failed(at(10), wall), Some(RECHECK));
        assert_eq!(h.failed(at(11), wall), None);
        // Down: nobody asks Redis until the recheck.
        assert_eq!(h.admit(at(500)), Admit::Local);
        assert_eq!(h.admit(at(1009)), Admit::Local);
        // Then exactly one call asks; it fails quietly and the wait starts again.
        assert_eq!(h.admit(at(1010)), Admit::Probe);
        assert_eq!(h.admit(at(1011)), Admit::Local);
        assert_eq!(h.failed(at(1020), wall), None);
        assert_eq!(h.admit(at(1500)), Admit::Local);
        // An answer to a call made before the failure does not bring it back.
        assert!(!h.succeeded(Admit::Redis));
        assert_eq!(h.admit(at(1600)), Admit::Local);
        // The next probe's answer does, once.
        assert_eq!(h.admit(at(2010)), Admit::Probe);
        assert!(h.succeeded(Admit::Probe));
        assert!(!h.succeeded(Admit::Probe));
        assert_eq!(h.admit(at(2011)), Admit::Redis);
        // A later failure is a new transition, logged again.
        assert_eq!(h.failed(at(3000), wall), Some(RECHECK));
    }

    #[test]
    fn the_password_stays_out_of_logs() {
        assert_eq!(without_password("redis://:hunter2@10.0.0.5:6379/0"), "redis://10.0.0.5:6379/0");
        assert_eq!(without_password("rediss://app:hunter2@r.example.com"), "rediss://app@r.example.com");
        assert_eq!(without_password("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    /// A port where nothing listens: the first call fails, the host goes
    /// down, and the calls after it do not wait on Redis at all.
    #[tokio::test]
    async fn an_unreachable_redis_costs_one_failed_call_then_none() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let settings = Settings { url: format!("redis://127.0.0.1:{port}"), timeout: Duration::from_millis(200), recheck: Duration::from_secs(60) };
        let redis = Redis::open(&settings).unwrap();
        let ping = |r: Arc<Redis>| async move { r.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await };
        assert_eq!(ping(redis.clone()).await, None);
        assert_eq!(redis.status().state, "down");
        let started = Instant::now();
        for _ in 0..100 {
            assert_eq!(ping(redis.clone()).await, None);
        }
        assert!(started.elapsed() < Duration::from_millis(50), "took {:?}", started.elapsed());
    }
}
