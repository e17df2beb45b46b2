//! The result cache: successful answers kept by a SHA-256 over everything
//! that decides them (route, plugin and model versions, parameters, input
//! bytes), so a reload never serves a stale answer and equal requests share
//! one. In memory (an LRU bounded in bytes) by default; in Redis when
//! `[redis] url` is set, so several hosts share it, with the memory standing
//! in while Redis is down (`crate::redis`): never a failed request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::metrics::Local;
use crate::plugin::engine::hex;
use crate::redis::Redis;

/// Bodies larger than this are hashed on a blocking thread.
const INLINE_HASH_BYTES: usize = 256 << 10;

/// How often expired answers are swept out. Without a sweep an expired
/// answer nobody asks for again (most of them: each photo is new) stays
/// until the byte bound pushes it out, so a server answering new photos
/// grew its cache to `max_bytes` (256 MiB by default) whatever the TTL.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis at {url}: {why}")]
    Redis { url: String, why: String },
}

/// Answers in this host's memory, and in Redis when one is set: then the
/// memory is where answers go while Redis is down.
pub struct Cache {
    local: Arc<quick_cache::sync::Cache<String, Entry, Weight>>,
    redis: Option<Arc<Redis>>,
    /// When expired answers were last swept out.
    swept: std::sync::Mutex<Instant>,
}

#[derive(Clone)]
pub struct Entry {
    body: Bytes,
    expires: Instant,
}

#[derive(Clone)]
pub struct Weight;

impl quick_cache::Weighter<String, Entry> for Weight {
    fn weight(&self, key: &String, value: &Entry) -> u64 {
        (key.len() + value.body.len() + 64) as u64
    }
}

impl Cache {
    pub fn memory(max_bytes: u64) -> Cache {
        // quick_cache wants an item estimate for its index; a typical answer is ~1 KB.
        let items = (max_bytes / 1024).clamp(16, 10_000_000) as usize;
        let local = Arc::new(quick_cache::sync::Cache::with_weighter(items, max_bytes, Weight));
        Cache { local, redis: None, swept: std::sync::Mutex::new(Instant::now()) }
    }

    /// In Redis, with `max_bytes` of memory for the times it is down.
    pub fn redis(redis: Arc<Redis>, max_bytes: u64) -> Cache {
        Cache { redis: Some(redis), ..Cache::memory(max_bytes) }
    }

    /// The Redis this cache (and the token buckets) share, for `/readyz`.
    pub fn shared_through(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref()
    }

    pub async fn get(&self, key: &str) -> Option<Bytes> {
        if let Some(redis) = &self.redis {
            let key = redis_key(key);
            let got: Option<Option<Vec<u8>>> = redis.run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await }).await;
            match got {
                Some(found) => return found.map(Bytes::from),
                None => crate::metrics::global().redis_local(Local::cache),
            }
        }
        let e = self.local.get(key)?;
        if e.expires > Instant::now() {
            Some(e.body)
        } else {
            self.local.remove(key);
            None
        }
    }

    pub async fn put(&self, key: String, body: Bytes, ttl: Duration) {
        if let Some(redis) = &self.redis {
            let (k, b) = (redis_key(&key), body.clone());
            let set: Option<()> =
                redis.run(|mut c| async move { redis::cmd("SET").arg(k).arg(b.as_ref()).arg("EX").arg(ttl.as_secs().max(1)).query_async(&mut c).await }).await;
            if set.is_some() {
                return;
            }
        }
        let now = Instant::now();
        self.local.insert(key, Entry { body, expires: now + ttl });
        crate::metrics::global().cache_bytes.set(self.local.weight() as i64);
        if self.sweep_due(now) {
            let local = self.local.clone();
            // Visits every entry: off the async runtime.
            tokio::task::spawn_blocking(move || sweep(&local, Instant::now()));
        }
    }

    /// True once every `SWEEP_EVERY`, for the caller that should sweep.
    fn sweep_due(&self, now: Instant) -> bool {
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*swept) < SWEEP_EVERY {
            return false;
        }
        *swept = now;
        true
    }
}

/// Drops the answers expired at `now`. Blocking (visits every entry).
fn sweep(local: &quick_cache::sync::Cache<String, Entry, Weight>, now: Instant) {
    local.retain(|_, e| e.expires > now);
    crate::metrics::global().cache_bytes.set(local.weight() as i64);
}

fn redis_key(key: &str) -> String {
    format!("osprey:cache:{key}")
}

/// The cache key of a request: SHA-256 over the route's version key (route,
/// plugin builds, model versions), the parameters and the body (or bodies:
/// one per branch, each length-prefixed so parts cannot be shifted).
pub async fn key(version: &str, params: &str, bodies: &[Bytes]) -> String {
    let inline = bodies.iter().map(Bytes::len).sum::<usize>() <= INLINE_HASH_BYTES;
    let (version, params, bodies) = (version.to_string(), params.to_string(), bodies.to_vec());
    let hash = move || {
        let mut h = Sha256::new();
        for part in [version.as_bytes(), params.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        for (i, body) in bodies.iter().enumerate() {
            if i > 0 {
                h.update((body.len() as u64).to_le_bytes());
            }
            h.update(body);
        }
        hex(&h.finalize())
    };
    if inline {
        hash()
    } else {
        tokio::task::spawn_blocking(hash).await.expect("hashing does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_differ_by_version_params_and_body() {
        let body = [Bytes::from_static(b"image")];
        let k = key("r@1", "conf=0.5", &body).await;
        assert_eq!(k.len(), 64);
        assert_eq!(k, key("r@1", "conf=0.5", &body).await);
        assert_ne!(k, key("r@2", "conf=0.5", &body).await);
        assert_ne!(k, key("r@1", "conf=0.6", &body).await);
        assert_ne!(k, key("r@1", "conf=0.5", &[Bytes::from_static(b"other")]).await);
        // Length prefixes keep the parts apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(key("ab", "c", &body).await, key("a", "bc", &body).await);
        let two = |a: &'static [u8], b: &'static [u8]| [Bytes::from_static(a), Bytes::from_static(b)];
        assert_ne!(key("r", "", &two(b"ab", b"c")).await, key("r", "", &two(b"a", b"bc")).await);
    }

    #[tokio::test]
    async fn memory_entries_expire_and_respect_the_byte_bound() {
        let c = Cache::memory(4096);
        c.put("a".into(), Bytes::from(vec![1; 100]), Duration::from_secs(60)).await;
        assert_eq!(c.get("a").await.map(|b| b.len()), Some(100));
        c.put("gone".into(), Bytes::from_static(b"x"), Duration::ZERO).await;
        assert_eq!(c.get("gone").await, None);
        for i in 0..100 {
            c.put(format!("k{i}"), Bytes::from(vec![0; 500]), Duration::from_secs(60)).await;
        }
        assert!(c.local.weight() <= 4096, "weight {}", c.local.weight());
    }

    #[tokio::test]
    async fn expired_answers_nobody_asks_for_again_are_swept_out() {
        let c = Cache::memory(1 << 20);
        for i in 0..50 {
            c.put(format!("old{i}"), Bytes::from(vec![0; 1000]), Duration::from_secs(60)).await;
        }
        c.put("fresh".into(), Bytes::from(vec![0; 1000]), Duration::from_secs(3600)).await;
        // A fake "now", 10 minutes on: the sweep is due, and only the fresh answer outlives it.
        let later = Instant::now() + Duration::from_secs(600);
        assert!(c.sweep_due(later) && !c.sweep_due(later + Duration::from_secs(1)));
        sweep(&c.local, later);
        assert_eq!((c.local.len(), c.local.weight()), (1, ("fresh".len() + 1000 + 64) as u64));
        assert!(c.get("fresh").await.is_some());
    }
}
