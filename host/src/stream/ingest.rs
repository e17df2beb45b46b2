//! A stream's input: `ffmpeg` listening for one RTMP publisher (push) or
//! reading an allowed URL (pull), scaling and padding every frame into the
//! stream's box at its rate, and writing JPEGs to a pipe that
//! `imaging::mjpeg::split` cuts into frames. The process is killed when the
//! `Ingest` is dropped.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::{Source, StreamError};
use crate::imaging::mjpeg::{split, Split};

/// A frame bigger than this is no JPEG ffmpeg made.
const MAX_FRAME_BYTES: usize = 32 << 20;

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
    buf: BytesMut,
    /// Set by the stderr reader when a publisher gave the wrong stream key.
    refused: Arc<AtomicBool>,
}

/// What the stderr reader learnt, for the supervisor's log.
pub struct Complaints(pub tokio::task::JoinHandle<Vec<String>>);

impl Ingest {
    /// Starts ffmpeg on `source`; frames come out of `next`.
    pub fn start(source: &Source, shape: Shape) -> Result<(Ingest, Complaints), StreamError> {
        let mut cmd = Command::new("ffmpeg");
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
        cmd.args(["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", &filter, "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "-"]);
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
                // The JPEG encoder's full-range note comes once per frame: not news.
                if kept.len() < 20 && !line.contains("deprecated pixel format") && !line.contains("Last message repeated") {
                    kept.push(line);
                }
            }
            kept
        });
        Ok((Ingest { _child: child, stdout, buf: BytesMut::with_capacity(1 << 20), refused }, Complaints(complaints)))
    }

    /// The next frame; `None` when the input ended (publisher gone, URL
    /// closed) or a publisher was refused.
    pub async fn next(&mut self) -> Result<Option<Bytes>, StreamError> {
        loop {
            if self.refused.load(Ordering::SeqCst) {
                return Err(StreamError::Refused);
            }
            match split(&mut self.buf) {
                Split::Frame(jpeg) => return Ok(Some(jpeg)),
                Split::Broken(why) => return Err(StreamError::Ingest(why)),
                Split::NeedMore if self.buf.len() > MAX_FRAME_BYTES => return Err(StreamError::Ingest("a frame of over 32 MiB".into())),
                Split::NeedMore => {}
            }
            self.buf.reserve(256 << 10);
            let n = self.stdout.read_buf(&mut self.buf).await.map_err(|e| StreamError::Ingest(format!("reading ffmpeg: {e}")))?;
            if n == 0 {
                return Ok(None);
            }
        }
    }
}
