//! Frames out of a video: `ffmpeg` decodes it at the sampling rate and writes
//! JPEGs to a pipe; `split` cuts that stream into whole images. The process
//! is killed when the `Decoder` is dropped (a cancelled job).

use std::path::Path;
use std::process::Stdio;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::probe::Fps;
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

#[derive(Debug, PartialEq)]
pub enum Split {
    Frame(Bytes),
    NeedMore,
    Broken(String),
}

/// Takes the whole JPEG at the start of `buf`, if it is all there. Walks the
/// segments by their lengths and skips stuffed bytes in the scan data, so a
/// 0xFFD9 inside a table or the image data never ends a frame early.
pub fn split(buf: &mut BytesMut) -> Split {
    if buf.len() < 2 {
        return Split::NeedMore;
    }
    if buf[..2] != [0xFF, 0xD8] {
        return Split::Broken("ffmpeg wrote something that is not a JPEG".into());
    }
    match jpeg_len(buf) {
        Some(n) => Split::Frame(buf.split_to(n).freeze()),
        None => Split::NeedMore,
    }
}

/// Length of the complete JPEG at the start of `b`; `None` if it is cut short.
fn jpeg_len(b: &[u8]) -> Option<usize> {
    let mut i = 2;
    loop {
        if *b.get(i)? != 0xFF {
            // Not at a marker: tolerate junk by searching for the next one.
            i += 1;
            continue;
        }
        let marker = *b.get(i + 1)?;
        match marker {
            0xFF => i += 1, // fill byte
            0xD9 => return Some(i + 2),
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let len = u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]) as usize;
                i += 2 + len;
                if marker == 0xDA {
                    i = scan_end(b, i)?;
                }
            }
        }
    }
}

/// Where entropy-coded data starting at `i` ends: the first marker that is
/// neither a stuffed 0xFF00 nor a restart marker.
fn scan_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += b.get(i..)?.iter().position(|&x| x == 0xFF)?;
        match *b.get(i + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => i += 1,
            _ => return Some(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal JPEG-shaped stream: SOI, a table holding FF D9, SOS, scan data
    /// with a stuffed FF00 and a restart marker, EOI.
    fn fake_jpeg(tag: u8) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend([0xFF, 0xDB, 0x00, 0x05, 0xFF, 0xD9, tag]); // DQT whose payload contains FF D9
        j.extend([0xFF, 0xDA, 0x00, 0x03, 0x01]); // SOS header
        j.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56]); // scan data
        j.extend([0xFF, 0xD9]);
        j
    }

    #[test]
    fn splits_back_to_back_frames_at_their_real_ends() {
        let (a, b) = (fake_jpeg(1), fake_jpeg(2));
        let mut buf = BytesMut::from(&[a.clone(), b.clone()].concat()[..]);
        assert_eq!(split(&mut buf), Split::Frame(Bytes::from(a)));
        assert_eq!(split(&mut buf), Split::Frame(Bytes::from(b)));
        assert_eq!(split(&mut buf), Split::NeedMore);
    }

    #[test]
    fn waits_for_a_frame_cut_anywhere() {
        let a = fake_jpeg(1);
        for cut in 0..a.len() {
            let mut buf = BytesMut::from(&a[..cut]);
            assert_eq!(split(&mut buf), Split::NeedMore, "cut at {cut}");
            buf.extend_from_slice(&a[cut..]);
            assert_eq!(split(&mut buf), Split::Frame(Bytes::from(a.clone())), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_jpeg() {
        let mut buf = BytesMut::from(&b"GIF89a"[..]);
        assert!(matches!(split(&mut buf), Split::Broken(_)));
    }
}
