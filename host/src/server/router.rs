//! Method + path → what answers: a host endpoint or a route of the snapshot.

use crate::snapshot::Snapshot;

pub enum Target {
    Health,
    Ready,
    /// Index of the route in the snapshot.
    Route(usize),
}

pub enum Miss {
    NotFound,
    /// The path exists, for these methods only.
    MethodNotAllowed(Vec<String>),
}

pub fn find(snapshot: &Snapshot, method: &str, path: &str) -> Result<Target, Miss> {
    match (method, path) {
        ("GET" | "HEAD", "/healthz") => return Ok(Target::Health),
        ("GET" | "HEAD", "/readyz") => return Ok(Target::Ready),
        (_, "/healthz" | "/readyz") => return Err(Miss::MethodNotAllowed(vec!["GET".into(), "HEAD".into()])),
        _ => {}
    }
    if let Some(i) = snapshot.routes.iter().position(|r| r.path == path && r.method == method) {
        return Ok(Target::Route(i));
    }
    let allowed: Vec<String> = snapshot.routes.iter().filter(|r| r.path == path).map(|r| r.method.clone()).collect();
    if allowed.is_empty() {
        Err(Miss::NotFound)
    } else {
        Err(Miss::MethodNotAllowed(allowed))
    }
}
