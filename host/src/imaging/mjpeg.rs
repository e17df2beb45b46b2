//! Whole JPEGs out of a byte stream (ffmpeg's `image2pipe` of MJPEG): video
//! jobs and live streams read their frames from a pipe this way.

use bytes::{Bytes, BytesMut};

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
