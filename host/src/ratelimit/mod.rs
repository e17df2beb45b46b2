//! Token buckets per client and route: `rate` tokens a second up to `burst`,
//! one per request. In memory by default; in Redis (one Lua script, the same
//! arithmetic) when `[redis] url` is set, so limits hold across hosts, with
//! the memory buckets standing in while Redis is down (`crate::redis`): a
//! limit still holds then, per host, and never fails open.
//! Generic over a clock, so tests move time by hand instead of sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Local;
use crate::redis::Redis;

/// A route's limit, from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: f64,
}

/// Time since an arbitrary start.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
}

pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Duration,
}

/// Refills `b` up to `now` and takes a token, or says how long until one is there.
fn take(b: &mut Bucket, now: Duration, limit: Limit) -> Result<(), Duration> {
    let elapsed = now.saturating_sub(b.at).as_secs_f64();
    b.tokens = (b.tokens + elapsed * limit.rate).min(limit.burst);
    b.at = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - b.tokens) / limit.rate))
    }
}

/// Buckets kept in memory beyond this are pruned (the full ones first).
const MAX_BUCKETS: usize = 100_000;

/// The buckets: in this host's memory, or in Redis with this host's memory
/// standing in while Redis is down (a client then gets a fresh bucket here,
/// and its Redis bucket again once Redis is back).
pub struct Limiter {
    clock: Box<dyn Clock>,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
    redis: Option<(Arc<Redis>, redis::Script)>,
}

impl Limiter {
    pub fn memory(clock: Box<dyn Clock>) -> Limiter {
        Limiter { clock, buckets: Mutex::new(HashMap::new()), redis: None }
    }

    pub fn redis(redis: Arc<Redis>, clock: Box<dyn Clock>) -> Limiter {
        Limiter { redis: Some((redis, redis::Script::new(LUA))), ..Limiter::memory(clock) }
    }

    /// Takes a token of `client`'s bucket on `route`, or says when to retry.
    pub async fn check(&self, route: &str, client: &str, limit: Limit) -> Result<(), Duration> {
        if let Some((redis, script)) = &self.redis {
            let key = format!("osprey:bucket:{route}:{client}");
            let wait: Option<String> =
                redis.run(|mut c| async move { script.key(key).arg(limit.rate).arg(limit.burst).invoke_async(&mut c).await }).await;
            match wait.map(|w| w.parse::<f64>().unwrap_or(0.0)) {
                Some(w) if w > 0.0 => return Err(Duration::from_secs_f64(w)),
                Some(_) => return Ok(()),
                None => crate::metrics::global().redis_local(Local::ratelimit),
            }
        }
        self.local(route, client, limit)
    }

    fn local(&self, route: &str, client: &str, limit: Limit) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS {
            prune(&mut map, now, limit);
        }
        let b = map.entry((route.to_string(), client.to_string())).or_insert(Bucket { tokens: limit.burst, at: now });
        take(b, now, limit)
    }
}

/// Drops buckets that have refilled (they are as good as new), then the oldest.
fn prune(map: &mut HashMap<(String, String), Bucket>, now: Duration, limit: Limit) {
    map.retain(|_, b| b.tokens + now.saturating_sub(b.at).as_secs_f64() * limit.rate < limit.burst);
    if map.len() >= MAX_BUCKETS {
        let mut ages: Vec<Duration> = map.values().map(|b| b.at).collect();
        ages.sort();
        let cut = ages[ages.len() / 2];
        map.retain(|_, b| b.at > cut);
    }
}

/// The same bucket in Redis; the clock is Redis' own, shared by every host.
const LUA: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock the test moves.
    #[derive(Clone, Default)]
    struct Manual(Arc<AtomicU64>);

    impl Clock for Manual {
        fn now(&self) -> Duration {
            Duration::from_millis(self.0.load(Ordering::SeqCst))
        }
    }

    #[tokio::test]
    async fn burst_then_refill_at_the_rate() {
        let clock = Manual::default();
        let limiter = Limiter::memory(Box::new(clock.clone()));
        let limit = Limit { rate: 2.0, burst: 3.0 };
        for _ in 0..3 {
            assert_eq!(limiter.check("/r", "a", limit).await, Ok(()));
        }
        // Empty: the next token is half a second away at 2 per second.
        assert_eq!(limiter.check("/r", "a", limit).await, Err(Duration::from_millis(500)));
        // Another client and another route have their own buckets.
        assert_eq!(limiter.check("/r", "b", limit).await, Ok(()));
        assert_eq!(limiter.check("/other", "a", limit).await, Ok(()));
        clock.0.store(500, Ordering::SeqCst);
        assert_eq!(limiter.check("/r", "a", limit).await, Ok(()));
        assert!(limiter.check("/r", "a", limit).await.is_err());
        // A long pause refills to the burst, not beyond.
        clock.0.store(60_000, Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(limiter.check("/r", "a", limit).await, Ok(()));
        }
        assert!(limiter.check("/r", "a", limit).await.is_err());
    }
}
