//! Live streams end to end, with real processes on loopback: an `osprey
//! serve` child on the default config (its `[streams]` pointed at this
//! test's folder), ffmpeg publishing a scripted source over RTMP (4 s of a
//! still photo, then 2 s of motion, at 25 fps) or serving one over HTTP to
//! pull, HLS read back as a viewer would, the events as SSE, a recorded clip
//! traced back to its viewer, and the audit log after SIGKILL.
//!
//! Figures (skip rate, latency, frames in and out) are printed; the README
//! keeps those of a quiet run.

mod push;
mod watermark;

pub use osprey_tests::streams::*;
