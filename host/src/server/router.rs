//! Method + path → what answers: a host endpoint or a route of the snapshot.

use crate::snapshot::Snapshot;

pub enum Target {
    Health,
    Ready,
    Metrics,
    Admin(super::admin::Op),
    /// Anything under `/v2`: the Open Inference Protocol.
    Oip,
    /// A file of the web page (index into `page::FILES`).
    Page(usize),
    /// Index of the route in the snapshot.
    Route(usize),
    /// Under `/v1/videos`: video jobs.
    Video(crate::video::Op),
    /// Under `/v1/streams`: live streams.
    Stream(crate::stream::Op),
    /// `GET /v1/tunnel`: a node dialling in to one of the gateway's pools.
    Tunnel,
}

pub enum Miss {
    NotFound,
    /// The path exists, for these methods only.
    MethodNotAllowed(Vec<String>),
}

pub fn find(snapshot: &Snapshot, method: &str, path: &str) -> Result<Target, Miss> {
    use super::admin::Op;
    match (method, path) {
        ("GET" | "HEAD", "/healthz") => return Ok(Target::Health),
        ("GET" | "HEAD", "/readyz") => return Ok(Target::Ready),
        ("GET" | "HEAD", "/metrics") => return Ok(Target::Metrics),
        ("GET", "/admin/status") => return Ok(Target::Admin(Op::Status)),
        ("GET", "/admin/audit") => return Ok(Target::Admin(Op::Audit)),
        ("POST", "/admin/reload") => return Ok(Target::Admin(Op::Reload)),
        ("GET", crate::upstream::tunnel::PATH) => return Ok(Target::Tunnel),
        (_, "/healthz" | "/readyz" | "/metrics" | "/admin/status" | "/admin/audit" | crate::upstream::tunnel::PATH) => return Err(Miss::MethodNotAllowed(vec!["GET".into()])),
        (_, "/admin/reload") => return Err(Miss::MethodNotAllowed(vec!["POST".into()])),
        (_, p) if p == "/v2" || p.starts_with("/v2/") => return Ok(Target::Oip),
        _ => {}
    }
    if let Some(found) = crate::video::find(method, path) {
        return found.map(Target::Video).map_err(Miss::MethodNotAllowed);
    }
    if let Some(found) = crate::stream::find(method, path) {
        return found.map(Target::Stream).map_err(Miss::MethodNotAllowed);
    }
    if let ("GET" | "HEAD", Some(file)) = (method, super::page::find(path)) {
        return Ok(Target::Page(file));
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
