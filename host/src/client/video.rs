//! `osprey client video FILE`: uploads the video (`POST /v1/videos`), follows
//! the job's Server-Sent Events with a progress bar, then prints what was
//! seen in each second of the video. Interrupting the client closes the
//! stream, which cancels the job on the server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::{content_type, json_of, read_file, Failure, Server};

/// Uploading a large video to a remote server takes a while.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// The server sends a keep-alive every 10 s: this much silence means it is gone.
const SILENCE: Duration = Duration::from_secs(60);

pub async fn run(server: &Server, route: &str, file: &Path) -> Result<(), Failure> {
    let bytes = read_file(file).await?;
    let path = format!("/v1/videos?route={route}");
    let accepted = server.post(&path, content_type(file), bytes, UPLOAD_TIMEOUT).await?;
    let events = accepted["events"].as_str().ok_or_else(|| Failure::Server(format!("the server's answer has no events link: {accepted}")))?;
    let bar = progress(accepted["frames"].as_u64().unwrap_or(0));
    let mut resp = server.http.get(server.url(events)).send().await.map_err(|e| server.unreachable(&e))?;
    if !resp.status().is_success() {
        return Err(json_of(resp).await.err().unwrap_or_else(|| Failure::Server("the event stream was refused".into())));
    }
    let mut parser = Parser::default();
    let mut summary = Summary::default();
    let end = loop {
        let chunk = match tokio::time::timeout(SILENCE, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break Err(Failure::Server("the event stream ended before the job did".into())),
            Ok(Err(e)) => break Err(server.unreachable(&e)),
            Err(_) => break Err(Failure::Server(format!("the server sent nothing for {} s", SILENCE.as_secs()))),
        };
        let mut ended = None;
        for (event, data) in parser.push(&chunk) {
            let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match event.as_str() {
                "frame" => {
                    summary.add(&data);
                    bar.inc(1);
                }
                "done" => ended = Some(Ok(data)),
                "failed" => {
                    let (m, code) = (data["message"].as_str().unwrap_or("no reason given"), data["code"].as_str().unwrap_or("failed"));
                    ended = Some(Err(Failure::Server(format!("the server stopped the job: {m} ({code})"))));
                }
                _ => {}
            }
        }
        if let Some(end) = ended {
            break end;
        }
    };
    bar.finish_and_clear();
    let header = match &end {
        Ok(done) => format!(
            "{}: {} frames at {} fps, processed in {:.1} s ({:.1} frames/s) by {route}",
            file.display(),
            done["frames"],
            accepted["fps"],
            done["elapsed_s"].as_f64().unwrap_or(0.0),
            done["fps"].as_f64().unwrap_or(0.0)
        ),
        Err(_) => format!("{}: {} frames before the job stopped", file.display(), summary.frames()),
    };
    println!("{header}");
    print!("{}", summary.table());
    end.map(drop)
}

fn progress(frames: u64) -> ProgressBar {
    // Hidden by indicatif when stderr is not a terminal (pipes, CI).
    let bar = ProgressBar::new(frames);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} frames ({per_sec}, {eta} left)") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Server-Sent Events out of a byte stream cut anywhere: (event, data) pairs.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..at + 2).collect();
            let (mut event, mut data) = (String::from("message"), Vec::new());
            for line in String::from_utf8_lossy(&block).lines() {
                let line = line.trim_end_matches('\r');
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                }
            }
            // A block of comments only (keep-alives) carries no event.
            if !data.is_empty() {
                out.push((event, data.join("\n")));
            }
        }
        out
    }
}

/// What each second of the video held.
#[derive(Default)]
pub struct Summary {
    seconds: BTreeMap<u64, Second>,
}

#[derive(Default)]
struct Second {
    frames: u32,
    /// Frames the route answered with an error, and the first such message.
    errors: u32,
    error: Option<String>,
    /// Label → the most objects of it seen in one frame of this second.
    most: BTreeMap<String, u32>,
}

impl Summary {
    /// One `frame` event: `{"index", "time_s", "result"}`.
    pub fn add(&mut self, frame: &Value) {
        let second = frame["time_s"].as_f64().unwrap_or(0.0).max(0.0).floor() as u64;
        let s = self.seconds.entry(second).or_default();
        s.frames += 1;
        let result = &frame["result"];
        if let Some(e) = result.get("error") {
            s.errors += 1;
            s.error.get_or_insert_with(|| e["message"].as_str().unwrap_or("error").to_string());
            return;
        }
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for d in result["detections"].as_array().map(Vec::as_slice).unwrap_or_default() {
            *counts.entry(d["label"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        }
        for (label, n) in counts {
            let most = s.most.entry(label).or_default();
            *most = (*most).max(n);
        }
    }

    pub fn frames(&self) -> u32 {
        self.seconds.values().map(|s| s.frames).sum()
    }

    pub fn table(&self) -> String {
        let mut out = String::from("  second  frames  objects (most seen in one frame)\n");
        for (second, s) in &self.seconds {
            let mut objects: Vec<(&String, &u32)> = s.most.iter().collect();
            objects.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let mut seen = objects.iter().map(|(l, n)| format!("{l} {n}")).collect::<Vec<_>>().join(", ");
            if seen.is_empty() {
                seen = "-".into();
            }
            let _ = write!(out, "  {second:>6}  {:>6}  {seen}", s.frames);
            if let Some(e) = &s.error {
                let _ = write!(out, "  ({} failed: {e})", s.errors);
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_parsed_across_chunk_boundaries() {
        let stream = b"event: frame\ndata: {\"index\":0}\n\n: keep-alive\n\nevent: done\ndata: {\"frames\":1}\n\n";
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            let mut got = p.push(&stream[..cut]);
            got.extend(p.push(&stream[cut..]));
            assert_eq!(got, vec![("frame".into(), "{\"index\":0}".into()), ("done".into(), "{\"frames\":1}".into())], "cut at {cut}");
        }
    }

    #[test]
    fn seconds_count_the_most_objects_seen_in_one_frame() {
        let mut s = Summary::default();
        let frame = |t: f64, labels: &[&str]| {
            let dets: Vec<Value> = labels.iter().map(|l| json!({"label": l})).collect();
            json!({"time_s": t, "result": {"detections": dets}})
        };
        s.add(&frame(0.0, &["horse", "horse", "person"]));
        s.add(&frame(0.5, &["horse"]));
        s.add(&frame(1.0, &[]));
        s.add(&json!({"time_s": 1.5, "result": {"error": {"code": "bad_image", "message": "corrupt"}}}));
        assert_eq!(s.frames(), 4);
        assert_eq!(
            s.table(),
            "  second  frames  objects (most seen in one frame)\n       0       2  horse 2, person 1\n       1       2  -  (1 failed: corrupt)\n"
        );
    }
}
