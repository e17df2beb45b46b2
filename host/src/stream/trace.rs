//! `POST /v1/streams/trace?bits=8`: a recorded clip of a stream's output in,
//! the viewer it was made for out. ffmpeg samples the clip's frames; each
//! goes through the stego check route; the marks found vote per segment and
//! per bit position (`viewers::Votes`).

use std::io::Write;
use std::process::Stdio;

use bytes::BytesMut;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::viewers::Votes;
use super::{StreamError, CHECK_ROUTE};
use crate::config::StreamSettings;
use crate::http::respond::{self, Answer, Body};
use crate::http::ServeError;
use crate::imaging::mjpeg::{split, Split};
use crate::state::Shared;

/// Frames checked per second of clip: several per one-second segment, so a
/// damaged frame is outvoted.
const SAMPLE_FPS: u32 = 4;
/// The longest clip looked at, in seconds.
const MAX_SECONDS: u32 = 60;
/// Containers a clip may be in: a recording, never a playlist naming other files.
const FORMATS: &str = "mpegts,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,flv";

pub async fn handle(shared: &Shared, settings: &StreamSettings, req: Request<Incoming>) -> Result<Response<Body>, ServeError> {
    let bits = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "bits")
        .map_or(Ok(settings.viewer_id_bits), |(_, v)| v.parse::<u32>().ok().filter(|b| (1..=16).contains(b)).ok_or_else(|| StreamError::BadRequest("bits: 1 to 16".into())))?;
    let limit = shared.snapshot.load().config.video.max_bytes as usize;
    let clip = Limited::new(req.into_body(), limit).collect().await.map_err(|e| StreamError::BadClip(format!("{e} (at most {limit} bytes, [video] max_bytes)")))?.to_bytes();
    let file = tokio::task::spawn_blocking(move || {
        let mut f = tempfile::Builder::new().prefix("osprey-trace-").tempfile()?;
        f.write_all(&clip)?;
        Ok::<_, std::io::Error>(f)
    })
    .await
    .map_err(|e| ServeError::Internal(e.to_string()))?
    .map_err(|e| StreamError::Unavailable(format!("writing the clip: {e}")))?;
    let mut child = super::ffmpeg()
        .args(["-nostdin", "-hide_banner", "-v", "error", "-protocol_whitelist", "file", "-format_whitelist", FORMATS, "-i"])
        .arg(file.path())
        .args(["-map", "0:v:0", "-t", &MAX_SECONDS.to_string(), "-vf", &format!("fps={SAMPLE_FPS}"), "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "2", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| StreamError::tool("ffmpeg", &e))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut buf = BytesMut::new();
    let (mut votes, mut checked, mut marked) = (Votes::default(), 0u32, 0u32);
    loop {
        match split(&mut buf) {
            Split::Frame(jpeg) => {
                checked += 1;
                if let Some(id) = check(shared, jpeg).await? {
                    marked += 1;
                    votes.add(id);
                }
                continue;
            }
            Split::Broken(why) => return Err(StreamError::BadClip(why).into()),
            Split::NeedMore => {}
        }
        buf.reserve(256 << 10);
        if stdout.read_buf(&mut buf).await.map_err(|e| StreamError::BadClip(e.to_string()))? == 0 {
            break;
        }
    }
    let out = child.wait_with_output().await.map_err(|e| StreamError::tool("ffmpeg", &e))?;
    if checked == 0 {
        let why = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("no video frames").to_string();
        return Err(StreamError::BadClip(why).into());
    }
    let traced = votes.result(bits);
    let mut answer = serde_json::to_value(&traced).expect("serialises");
    answer["found"] = json!(traced.viewer.is_some());
    answer["frames_checked"] = json!(checked);
    answer["frames_marked"] = json!(marked);
    Ok(respond::json_response(StatusCode::OK, &answer))
}

/// The payload of a frame's mark, if it has one.
async fn check(shared: &Shared, jpeg: bytes::Bytes) -> Result<Option<u32>, ServeError> {
    match super::live::answer(shared, CHECK_ROUTE, None, jpeg).await? {
        Answer::Json(body) => {
            let v: Value = serde_json::from_slice(&body).map_err(|e| ServeError::Internal(format!("{CHECK_ROUTE} answered: {e}")))?;
            let w = &v["watermark"];
            Ok(w["found"].as_bool().filter(|f| *f).and_then(|_| w["id"].as_u64()).map(|id| id as u32))
        }
        _ => Err(ServeError::Internal(format!("{CHECK_ROUTE} did not answer JSON"))),
    }
}
