//! `GET /v1/videos/{id}/events`: the job's Server-Sent Events, replayed from
//! the start, then live until it ends; a comment every few seconds keeps
//! proxies from closing a quiet stream. A client that goes away is noticed
//! (the body's channel closes) and, if it was the last, cancels the job.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Response;
use tokio::sync::mpsc;

use super::job::Job;
use crate::http::respond::{self, Body};

const KEEP_ALIVE: Duration = Duration::from_secs(10);

pub fn stream(job: Arc<Job>) -> Response<Body> {
    let (tx, rx) = mpsc::channel(16);
    // Counted now, not when the task first runs: the job must not look unfollowed meanwhile.
    let subscription = job.subscribe();
    tokio::spawn(async move {
        follow(&job, &tx).await;
        drop(subscription);
    });
    respond::event_stream(respond::channel(rx))
}

/// Sends every event of the job to one client, until the job's last event
/// (the stream then ends) or until the client is gone.
async fn follow(job: &Job, tx: &mpsc::Sender<Bytes>) {
    let mut changed = job.watch();
    let mut sent = 0;
    loop {
        let (events, ended) = job.events_from(sent);
        for event in events {
            if tx.send(event).await.is_err() {
                return;
            }
            sent += 1;
        }
        if ended {
            return;
        }
        tokio::select! {
            update = changed.changed() => {
                if update.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
            () = tokio::time::sleep(KEEP_ALIVE) => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
        }
    }
}
