//! The plain HTTP listener beside HTTPS: every request gets a 308 to the same
//! path on `https://`, except HTTP-01 validations, answered from rustls-acme's
//! current challenge.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, LOCATION};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::acme::Http01;

const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// Serves until the task is dropped (the HTTPS server aborts it when it stops).
pub async fn serve(listener: TcpListener, https_port: u16, http01: Option<Http01>, header_timeout: Duration) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed on the plain HTTP listener: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let http01 = http01.clone();
        let service = service_fn(move |req| {
            let answer = answer(&req, https_port, http01.as_ref());
            async move { Ok::<_, Infallible>(answer) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "plain HTTP connection ended: {e}");
            }
        });
    }
}

fn answer<B>(req: &Request<B>, https_port: u16, http01: Option<&Http01>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(CONTENT_TYPE, "text/plain".parse().expect("static header"));
        resp
    };
    if let Some(token) = req.uri().path().strip_prefix(CHALLENGE_PATH) {
        return match http01.and_then(|h| h.get_http_01_key_auth(token)) {
            Some(key_auth) => {
                tracing::info!("answering an HTTP-01 validation");
                text(StatusCode::OK, key_auth)
            }
            None => text(StatusCode::NOT_FOUND, "no such ACME challenge\n".into()),
        };
    }
    let host = req.uri().authority().map(|a| a.host().to_string()).or_else(|| {
        let h = req.headers().get(HOST)?.to_str().ok()?;
        Some(h.parse::<hyper::http::uri::Authority>().ok()?.host().to_string())
    });
    let Some(host) = host else {
        return text(StatusCode::BAD_REQUEST, "a Host header is needed to redirect to https://\n".into());
    };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut resp = text(StatusCode::PERMANENT_REDIRECT, "use https://\n".into());
    match format!("https://{host}{port}{path}").parse() {
        Ok(location) => {
            resp.headers_mut().insert(LOCATION, location);
            resp
        }
        Err(_) => text(StatusCode::BAD_REQUEST, "cannot redirect this request to https://\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(uri: &str, host: Option<&str>, port: u16) -> (u16, Option<String>) {
        let mut req = Request::builder().uri(uri);
        if let Some(h) = host {
            req = req.header(HOST, h);
        }
        let resp = answer(&req.body(()).unwrap(), port, None);
        (resp.status().as_u16(), resp.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_string()))
    }

    #[test]
    fn redirects_keep_path_and_query_and_drop_the_plain_port() {
        assert_eq!(location("/v1/detect?conf=0.5", Some("osprey.example.com:80"), 443), (308, Some("https://osprey.example.com/v1/detect?conf=0.5".into())));
        assert_eq!(location("/", Some("[::1]:8080"), 8443), (308, Some("https://[::1]:8443/".into())));
    }

    #[test]
    fn no_host_no_redirect_and_unknown_challenges_are_404() {
        assert_eq!(location("/x", None, 443).0, 400);
        assert_eq!(location("/.well-known/acme-challenge/abc", Some("a.example"), 443).0, 404);
    }
}
