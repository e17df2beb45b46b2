//! Frames out of a video: `ffmpeg` decodes it at the sampling rate and writes
//! JPEGs to a pipe; `imaging::mjpeg::split` cuts that stream into whole images. The process
//! is killed when the `Decoder` is dropped (a cancelled job).

use std::path::Path;
use std::process::Stdio;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::probe::Fps;
use crate::imaging::mjpeg::{split, Split};
use super::VideoError;

/// A frame bigger than this is no JPEG ffmpeg made: stop rather than buffer on.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// How much of ffmpeg's complaints to keep for the `failed` event.
const MAX_STDERR: usize = 16 << 10;

pub struct Decoder {
    child: Child,
    stdout: ChildStdout,
    stderr: JoinHandle<Vec<u8>>,
    buf: BytesMut,
    path: std::path::PathBuf,
    /// What ffmpeg complained of, once it ended well all the same.
    complaints: Option<String>,
}

impl Decoder {
    /// Starts ffmpeg on `path`, sampling `fps` frames a second, at most `max_frames`.
    pub fn start(path: &Path, fps: Fps, max_frames: usize) -> Result<Decoder, VideoError> {
        let mut child = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error"])
            .args(super::probe::input_args(path))
            .args(["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", &format!("fps={fps}"), "-frames:v", &max_frames.to_string()])
            .args(["-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| super::tool_failed("ffmpeg", &e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        // Read stderr to its end, so ffmpeg never blocks on a full pipe; keep its start.
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
                let room = MAX_STDERR.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            kept
        });
        Ok(Decoder { child, stdout, stderr, buf: BytesMut::with_capacity(1 << 20), path: path.to_path_buf(), complaints: None })
    }

    /// The next JPEG; `None` once ffmpeg ended well. An error when it ended
    /// badly (a file cut short), after the frames it could decode.
    pub async fn next(&mut self) -> Result<Option<Bytes>, VideoError> {
        loop {
            match split(&mut self.buf) {
                Split::Frame(jpeg) => return Ok(Some(jpeg)),
                Split::Broken(why) => return Err(VideoError::BadVideo(why)),
                Split::NeedMore if self.buf.len() > MAX_FRAME_BYTES => {
                    return Err(VideoError::BadVideo(format!("a decoded frame is over {} MiB", MAX_FRAME_BYTES >> 20)))
                }
                Split::NeedMore => {}
            }
            self.buf.reserve(256 << 10);
            let n = self.stdout.read_buf(&mut self.buf).await.map_err(|e| VideoError::BadVideo(format!("reading ffmpeg's output: {e}")))?;
            if n == 0 {
                return self.end().await;
            }
        }
    }

    /// ffmpeg's errors when it ended with status 0 nonetheless (damaged frames, a cut file).
    pub fn complaints(&self) -> Option<&str> {
        self.complaints.as_deref()
    }

    async fn end(&mut self) -> Result<Option<Bytes>, VideoError> {
        let status = self.child.wait().await.map_err(|e| super::tool_failed("ffmpeg", &e))?;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        if status.success() {
            // A file cut short decodes "well" up to the cut, with complaints.
            self.complaints = Some(super::probe::reason(&stderr, &self.path)).filter(|_| !stderr.is_empty());
            Ok(None)
        } else {
            Err(VideoError::BadVideo(format!("decoding the video failed: {}", super::probe::reason(&stderr, &self.path))))
        }
    }
}
