//! A stream's input: `ffmpeg` listening for one RTMP publisher (push) or
//! reading an allowed URL (pull), scaling and padding every frame into the
//! stream's box at its rate, and writing raw RGB frames to a pipe: the gate
//! and the encoders take pixels, and only the frames the route runs on are
//! made JPEGs (no encode and decode of every frame). The process is killed
//! when the `Ingest` is dropped.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout};

use super::{Source, StreamError};

/// Demuxers a pulled URL may be read with: live containers only. Not `hls`
/// or `concat`, whose playlists name further URLs that the allow-list never
/// saw (a way around it to any host).
const PULL_FORMATS: &str = "flv,live_flv,rtsp,rtp,sdp,mpegts,matroska,webm,mov,mp4,m4a,3gp,3g2,mj2,h264,hevc,mjpeg,mpjpeg";

/// Where and how big the frames come out.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

pub struct Ingest {
    _child: Child,
    stdout: ChildStdout,
    frame_bytes: usize,
    /// Set by the stderr reader when a publisher gave the wrong stream key.
    refused: Arc<AtomicBool>,
}

/// What the stderr reader learnt, for the supervisor's log.
pub struct Complaints(pub tokio::task::JoinHandle<Vec<String>>);

impl Ingest {
    /// Starts ffmpeg on `source`; frames come out of `next`.
    pub fn start(source: &Source, shape: Shape) -> Result<(Ingest, Complaints), StreamError> {
        let mut cmd = super::ffmpeg();
        cmd.args(["-nostdin", "-hide_banner", "-v", "warning"]);
        // ffmpeg reads 5 s of a live input before its first frame by default
        // (`analyzeduration`), then catches up in a burst that the newest-wins
        // hand-over drops: half a second is enough for RTMP. (`-fflags
        // nobuffer` lost the first 25 of 150 frames here: left out.)
        cmd.args(["-probesize", "500000", "-analyzeduration", "500000"]);
        match source {
            Source::Push { bind, port, key } => {
                cmd.args(["-protocol_whitelist", "rtmp,tcp", "-listen", "1", "-i"]).arg(format!("rtmp://{bind}:{port}/live/{key}"));
            }
            Source::Pull { url } => {
                let protocols = match url.scheme() {
                    "rtsp" => "rtsp,rtp,tcp,udp",
                    "rtmp" => "rtmp,tcp",
                    _ => "http,https,tcp,tls",
                };
                cmd.args(["-protocol_whitelist", protocols, "-format_whitelist", PULL_FORMATS, "-i"]).arg(url.as_str());
            }
        }
        let Shape { width: w, height: h, fps } = shape;
        let filter = format!("fps={fps},scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1");
        cmd.args(["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", &filter, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().map_err(|e| StreamError::tool("ffmpeg", &e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let refused = Arc::new(AtomicBool::new(false));
        let flag = refused.clone();
        // ffmpeg's listener only warns when a publisher names another stream
        // key; the warning is the refusal: `next` ends this ingest on it.
        let complaints = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut kept = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Unexpected stream") {
                    flag.store(true, Ordering::SeqCst);
                }
                if kept.len() < 20 && !line.contains("Last message repeated") {
                    kept.push(line);
                }
            }
            kept
        });
        Ok((Ingest { _child: child, stdout, frame_bytes: (w * h * 3) as usize, refused }, Complaints(complaints)))
    }

    /// Whether ffmpeg refused a publisher (read once its stderr has ended:
    /// it may exit before its warning was read).
    pub fn refusal(&self) -> Arc<AtomicBool> {
        self.refused.clone()
    }

    /// The next frame's RGB pixels; `None` when the input ended (publisher
    /// gone, URL closed) or a publisher was refused.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        let mut frame = vec![0u8; self.frame_bytes];
        let mut filled = 0;
        while filled < frame.len() {
            if self.refused.load(Ordering::SeqCst) {
                return Err(StreamError::Refused);
            }
            let n = self.stdout.read(&mut frame[filled..]).await.map_err(|e| StreamError::Ingest(format!("reading ffmpeg: {e}")))?;
            if n == 0 {
                return Ok(None);
            }
            filled += n;
        }
        if self.refused.load(Ordering::SeqCst) {
            return Err(StreamError::Refused);
        }
        Ok(Some(frame))
    }
}
