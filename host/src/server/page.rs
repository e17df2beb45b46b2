//! The web page at `/` (photo, video, camera and live-stream detection). Its
//! files live in `host/web/` and are compiled into the binary: no web server
//! beside osprey, nothing downloaded at run time. `app.js` is the entry (an
//! ES module) and imports the others: every file of `host/web/` must be
//! listed here. `/hls.js`, the Live tab's player, is the npm package's file
//! that `build.rs` copies from setup's cache (or a stand-in saying to run
//! setup).

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

use crate::http::respond::{full, Body};

/// Path, content type, contents.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("../../web/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/app.js")),
    ("/common.js", "text/javascript; charset=utf-8", include_bytes!("../../web/common.js")),
    ("/draw.js", "text/javascript; charset=utf-8", include_bytes!("../../web/draw.js")),
    ("/photo.js", "text/javascript; charset=utf-8", include_bytes!("../../web/photo.js")),
    ("/video.js", "text/javascript; charset=utf-8", include_bytes!("../../web/video.js")),
    ("/camera.js", "text/javascript; charset=utf-8", include_bytes!("../../web/camera.js")),
    ("/live.js", "text/javascript; charset=utf-8", include_bytes!("../../web/live.js")),
    ("/hls.js", "text/javascript; charset=utf-8", include_bytes!(concat!(env!("OUT_DIR"), "/hls.js"))),
    ("/style.css", "text/css; charset=utf-8", include_bytes!("../../web/style.css")),
];

/// The page's file at `path`, if it is one.
pub fn find(path: &str) -> Option<usize> {
    FILES.iter().position(|(p, _, _)| *p == path)
}

pub fn serve(index: usize) -> Response<Body> {
    let (_, content_type, contents) = FILES[index];
    let mut resp = Response::new(full(Bytes::from_static(contents)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: revalidate rather than keep a stale page.
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files of the page that are not in `host/web/` (made by `build.rs`).
    const BUILT: &[&str] = &["/hls.js"];

    /// A file added to `host/web/` but not to `FILES` would be a 404 for the page that imports it.
    #[test]
    fn every_web_file_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        for entry in std::fs::read_dir(&dir).expect("host/web") {
            let name = entry.expect("entry").file_name().into_string().expect("utf-8 name");
            let path = if name == "index.html" { "/".to_string() } else { format!("/{name}") };
            assert!(find(&path).is_some(), "host/web/{name} is not in page::FILES");
        }
        assert_eq!(FILES.len(), std::fs::read_dir(&dir).expect("host/web").count() + BUILT.len());
        for path in BUILT {
            assert!(find(path).is_some(), "{path} is not in page::FILES");
        }
    }

    #[test]
    fn modules_are_javascript() {
        let resp = serve(find("/app.js").expect("app.js"));
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(find("/missing.js").is_none());
    }
}
