//! A stream's output: `ffmpeg` encoding RGB frames with x264 (zerolatency, a
//! keyframe every second exactly) into HLS segments of one second in the
//! stream's folder. With watermarks there are two: variant 0 and variant 1,
//! fed the same frames marked with a 0 or a 1, cut at the same frames, so a
//! viewer's playlist can take each segment from either.

use std::path::Path;
use std::sync::Arc;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

use super::ingest::Shape;
use super::StreamError;

/// Segments a variant's playlist keeps (older files are deleted).
pub const LIST_SIZE: u32 = 8;

pub struct Egress {
    _child: Child,
    stdin: Option<ChildStdin>,
    frame_bytes: usize,
}

/// An encoder fed from a queue of its own, so that the frame loop never
/// waits on x264 (a frame of 640x360 RGB is 675 KiB: ten pipe buffers).
pub struct Feed(tokio::sync::mpsc::Sender<Arc<Vec<u8>>>);

/// Frames waiting for one encoder: past this the loop does wait, as the
/// encoder is slower than the input.
const QUEUE: usize = 4;

impl Feed {
    pub fn start(dir: &Path, variant: u8, shape: Shape) -> Result<(Feed, tokio::task::JoinHandle<Result<(), StreamError>>), StreamError> {
        let mut egress = Egress::start(dir, variant, shape)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Vec<u8>>>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                egress.write(&frame).await?;
            }
            Ok(())
        });
        Ok((Feed(tx), task))
    }

    pub async fn send(&self, frame: Arc<Vec<u8>>) -> Result<(), StreamError> {
        self.0.send(frame).await.map_err(|_| StreamError::Egress("the encoder stopped".into()))
    }
}

impl Egress {
    /// Starts the encoder of variant `variant` writing `v{variant}.m3u8` and
    /// `v{variant}_{n}.ts` into `dir`.
    fn start(dir: &Path, variant: u8, shape: Shape) -> Result<Egress, StreamError> {
        let Shape { width, height, fps } = shape;
        let gop = fps.to_string();
        let mut child = super::ffmpeg()
            .args(["-nostdin", "-hide_banner", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &format!("{width}x{height}"), "-framerate", &gop, "-i", "-"])
            .args(["-an", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-threads", "1"])
            // A keyframe every `fps` frames and nowhere else: segment n is
            // frames [n*fps, (n+1)*fps) in both variants.
            .args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0", "-crf", "21", "-maxrate", "2M", "-bufsize", "2M"])
            .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", &LIST_SIZE.to_string()])
            .args(["-hls_flags", "delete_segments+independent_segments+temp_file", "-hls_segment_filename"])
            .arg(dir.join(format!("v{variant}_%d.ts")))
            .arg(dir.join(format!("v{variant}.m3u8")))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| StreamError::tool("ffmpeg", &e))?;
        let stdin = child.stdin.take();
        Ok(Egress { _child: child, stdin, frame_bytes: (width * height * 3) as usize })
    }

    /// Writes one RGB frame (exactly the stream's size).
    async fn write(&mut self, rgb: &[u8]) -> Result<(), StreamError> {
        debug_assert_eq!(rgb.len(), self.frame_bytes);
        let stdin = self.stdin.as_mut().ok_or_else(|| StreamError::Egress("the encoder's input is closed".into()))?;
        stdin.write_all(rgb).await.map_err(|e| StreamError::Egress(format!("the encoder stopped: {e}")))
    }
}
