//! Shutting down without leaving a request unanswered. hyper's graceful
//! shutdown closes at once a connection whose first request it has not read
//! yet, and the kernel resets the connections still in the listen backlog
//! when the listener goes: a client that sent its request just before
//! SIGTERM got no answer at all (tests/reload/faults.rs found 200 requests
//! in flight losing some that way). So, on shutdown, the backlog is
//! accepted too, and for a short drain every connection is still read:
//! requests already admitted finish, and each request read from now on is
//! answered 503 `shutting_down` with `Retry-After` (and `Connection: close`
//! on HTTP/1), which a client or load balancer retries elsewhere. Only then
//! are idle connections closed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The least time connections are still read after the signal: a client
/// that connected just before it has this long for its request to arrive.
pub const MIN_DRAIN: Duration = Duration::from_millis(500);

/// Whether the server is draining, and how many requests it is handling.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    busy: AtomicUsize,
}

/// One request being handled; counted until dropped.
pub struct Busy<'a>(&'a Drain);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drain {
    /// Counts a request in, and says whether it is to be refused.
    pub fn enter(&self) -> (Busy<'_>, bool) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        (Busy(self), self.draining.load(Ordering::SeqCst))
    }

    /// From now on, requests are refused.
    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Waits at least `MIN_DRAIN`, then until no request is being handled,
    /// but no longer than `limit` in all.
    pub async fn settle(&self, limit: Duration) {
        let waited = async {
            tokio::time::sleep(MIN_DRAIN).await;
            while self.busy.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(limit, waited).await;
    }
}

/// The answer to a request read while draining: 503 with `Retry-After`,
/// and on HTTP/1 `Connection: close`, so the client goes elsewhere.
pub fn refusal(version: hyper::Version) -> hyper::Response<crate::http::respond::Body> {
    let mut resp = crate::http::respond::error(&crate::http::ServeError::ShuttingDown);
    if version < hyper::Version::HTTP_2 {
        resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    }
    resp
}
