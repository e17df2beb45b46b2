//! `ffprobe` on an upload: is it a video, and how large, long and fast is it.
//! Bounded in time; the process is killed if the probe is dropped. ffprobe
//! and ffmpeg (`frames`) open the upload under the same allow-lists
//! (`input_args`): the upload is the only file they read, and nothing else.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::VideoError;

/// A pathological file must not hold a job slot for long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The demuxers ffmpeg may open an upload with: containers of one video.
/// Playlists and lists (hls, dash, concat, image2's patterns...) name other
/// files or URLs, which would let a client make the server read its own
/// files (`file:/etc/...`) or fetch from its network (`http://10.0.0.1/`).
pub const FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,ogg";

/// The only protocol: the upload is a local file; nothing is fetched.
const PROTOCOLS: &str = "file";

/// The largest frame decoded, 8K UHD: a stream that claims more (a header
/// saying 100000x100000) is refused before ffmpeg allocates for it.
const MAX_PIXELS: u64 = 7680 * 4320;

/// The input options and the input itself, for ffprobe and ffmpeg alike:
/// the allow-lists, then `-i` and the upload named as a `file:` URL, so
/// that no part of its path is read as another protocol.
pub fn input_args(path: &Path) -> Vec<std::ffi::OsString> {
    let mut url = std::ffi::OsString::from("file:");
    url.push(path);
    ["-protocol_whitelist", PROTOCOLS, "-format_whitelist", FORMATS, "-i"].into_iter().map(Into::into).chain([url]).collect()
}

/// What `ffprobe` found in the first video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    /// Frames a second of the source, as a fraction (`30000/1001`).
    pub fps: Fps,
    pub duration_s: Option<f64>,
    /// Frames in the stream, when the container says.
    pub frames: Option<u64>,
}

/// A frame rate as a fraction, the way ffmpeg's `fps` filter takes it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fps {
    pub num: u64,
    pub den: u64,
}

impl Fps {
    pub fn per_second(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// `"30000/1001"`; `None` for `0/0` and other non-rates.
    fn parse(s: &str) -> Option<Fps> {
        let (num, den) = s.split_once('/').unwrap_or((s, "1"));
        let fps = Fps { num: num.trim().parse().ok()?, den: den.trim().parse().ok()? };
        (fps.num > 0 && fps.den > 0).then_some(fps)
    }
}

impl std::fmt::Display for Fps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

pub async fn probe(path: &Path) -> Result<Probe, VideoError> {
    let child = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_streams", "-show_format", "-select_streams", "v:0"])
        .args(input_args(path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| super::tool_failed("ffprobe", &e))?;
    let out = match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(super::tool_failed("ffprobe", &e)),
        Err(_) => return Err(VideoError::BadVideo(format!("the video could not be probed within {} s", PROBE_TIMEOUT.as_secs()))),
    };
    if !out.status.success() {
        if let Some(format) = refused_format(&out.stderr) {
            return Err(VideoError::UnsupportedFormat(format));
        }
        return Err(VideoError::BadVideo(format!("not a video ffmpeg can read: {}", reason(&out.stderr, path))));
    }
    // ffprobe says 0x0 when the decoder refused the claimed size; its reason says why.
    parse(&out.stdout).map_err(|e| match e {
        VideoError::BadVideo(why) if !out.stderr.is_empty() => VideoError::BadVideo(format!("{why}: {}", reason(&out.stderr, path))),
        e => e,
    })
}

/// The demuxer ffmpeg found but the allow-list refused
/// (`[hls @ 0x55d5c] Format not on whitelist '...'`).
fn refused_format(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().find(|l| l.contains("Format not on whitelist"))?;
    let name = line.strip_prefix('[').and_then(|l| l.split_once(" @")).map_or("unknown", |(name, _)| name);
    Some(name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ',').take(40).collect())
}

/// ffprobe's JSON → the first video stream's facts.
pub fn parse(json: &[u8]) -> Result<Probe, VideoError> {
    let v: Value = serde_json::from_slice(json).map_err(|e| VideoError::BadVideo(format!("ffprobe printed no JSON: {e}")))?;
    let Some(stream) = v["streams"].as_array().and_then(|s| s.iter().find(|s| s["codec_type"] == "video")) else {
        return Err(VideoError::BadVideo("the file has no video stream".into()));
    };
    let (width, height) = (stream["width"].as_u64().unwrap_or(0), stream["height"].as_u64().unwrap_or(0));
    if width == 0 || height == 0 || width > 1 << 16 || height > 1 << 16 {
        return Err(VideoError::BadVideo(format!("the video stream has no usable size ({width}x{height})")));
    }
    if width * height > MAX_PIXELS {
        return Err(VideoError::BadVideo(format!("the video stream is {width}x{height}, more pixels a frame than the 7680x4320 this server decodes")));
    }
    // The average rate is the true one; r_frame_rate can be a timebase (90000/1) on variable-rate files.
    let rate = |key: &str| stream[key].as_str().and_then(Fps::parse).filter(|f| f.per_second() <= 1000.0);
    let fps = rate("avg_frame_rate")
        .or_else(|| rate("r_frame_rate"))
        .ok_or_else(|| VideoError::BadVideo("the video stream has no frame rate".into()))?;
    let number = |v: &Value| v.as_str().and_then(|s| s.parse::<f64>().ok()).filter(|d| d.is_finite() && *d > 0.0);
    let duration_s = number(&v["format"]["duration"]).or_else(|| number(&stream["duration"]));
    let frames = stream["nb_frames"].as_str().and_then(|s| s.parse::<u64>().ok()).filter(|n| *n > 0);
    Ok(Probe { width: width as u32, height: height as u32, fps, duration_s, frames })
}

/// ffprobe's complaint without the server's file path and the demuxer's
/// address prefix (`[mov,mp4 @ 0x55d5c] moov atom not found`).
pub fn reason(stderr: &[u8], path: &Path) -> String {
    let path = path.to_string_lossy();
    let text = String::from_utf8_lossy(stderr).replace(&format!("file:{path}"), "the upload").replace(&*path, "the upload");
    let lines: Vec<&str> = text
        .lines()
        .map(|l| match (l.starts_with('['), l.find("] ")) {
            (true, Some(at)) => &l[at + 2..],
            _ => l,
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut reason = lines.iter().rev().take(3).rev().copied().collect::<Vec<_>>().join("; ");
    if reason.is_empty() {
        reason = "ffmpeg gave no reason".into();
    }
    if reason.len() > 300 {
        let cut = (0..=300).rev().find(|i| reason.is_char_boundary(*i)).unwrap_or(0);
        reason.truncate(cut);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_video_stream() {
        let json = br#"{"streams":[{"codec_type":"video","width":640,"height":426,"r_frame_rate":"5/1","avg_frame_rate":"5/1","duration":"2.000000","nb_frames":"10"}],
                        "format":{"duration":"2.010000"}}"#;
        let p = parse(json).unwrap();
        assert_eq!((p.width, p.height, p.fps, p.frames), (640, 426, Fps { num: 5, den: 1 }, Some(10)));
        assert_eq!(p.duration_s, Some(2.01));
    }

    #[test]
    fn falls_back_to_r_frame_rate_when_the_average_is_unknown() {
        let json = br#"{"streams":[{"codec_type":"video","width":8,"height":8,"r_frame_rate":"30000/1001","avg_frame_rate":"0/0"}],"format":{}}"#;
        let p = parse(json).unwrap();
        assert_eq!(p.fps.to_string(), "30000/1001");
        assert_eq!((p.duration_s, p.frames), (None, None));
    }

    #[test]
    fn no_video_stream_is_a_bad_video() {
        let err = parse(br#"{"streams":[],"format":{"duration":"3.0"}}"#).unwrap_err();
        assert!(err.to_string().contains("no video stream"), "{err}");
    }

    #[test]
    fn a_frame_over_8k_is_refused_before_decoding() {
        let err = parse(br#"{"streams":[{"codec_type":"video","width":16000,"height":16000,"avg_frame_rate":"5/1"}],"format":{}}"#).unwrap_err();
        assert!(err.to_string().contains("16000x16000"), "{err}");
    }

    #[test]
    fn a_playlist_refused_by_the_allow_list_is_named() {
        let stderr = b"[hls @ 0x56408b79d2c0] Format not on whitelist 'mov,mp4'\nfile:/tmp/x.upload: Invalid argument\n";
        assert_eq!(refused_format(stderr).as_deref(), Some("hls"));
        assert_eq!(refused_format(b"[mov,mp4 @ 0x1] moov atom not found\n"), None);
    }

    #[test]
    fn reasons_hide_the_path_and_demuxer_prefix() {
        let path = Path::new("/tmp/osprey-videos/abc.upload");
        let stderr = b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d5c0] moov atom not found\n/tmp/osprey-videos/abc.upload: Invalid data found when processing input\n";
        assert_eq!(reason(stderr, path), "moov atom not found; the upload: Invalid data found when processing input");
    }
}
