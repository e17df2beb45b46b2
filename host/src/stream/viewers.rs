//! Who watches: viewer tokens, which variant of each segment a viewer gets,
//! what each marked frame carries, and putting a viewer's ID back together
//! from a clip (leak tracing, seed 004).
//!
//! The scheme is A/B segment variants (what forensic watermarking of live
//! video does): every frame is marked twice, once carrying bit 0 and once
//! bit 1, into two encodes whose segments are cut at the same frames.
//! Segment `n` of viewer `v` comes from variant `bit (n mod B)` of `v`, so
//! what a viewer receives spells their ID over any `B` consecutive seconds.
//! Each mark holds `(n, bit)`: the stego plugin's 32-bit payload is the
//! segment number shifted left once, plus the bit. The cost is two marks
//! and two encodes per stream, whatever the number of viewers; an encode per
//! viewer would cost one x264 each.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signs viewer tokens: `"{viewer}.{24 hex digits}"`, an HMAC-SHA-256 of the
/// stream and the viewer, so a viewer cannot claim another's ID.
pub struct Signer([u8; 32]);

impl Signer {
    pub fn random() -> Signer {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source");
        Signer(key)
    }

    fn mac(&self, stream: &str, viewer: u32) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(stream.as_bytes());
        mac.update(b"\0");
        mac.update(&viewer.to_be_bytes());
        mac.finalize().into_bytes()[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn token(&self, stream: &str, viewer: u32) -> String {
        format!("{viewer}.{}", self.mac(stream, viewer))
    }

    /// The viewer a token names, if it was signed for this stream.
    pub fn verify(&self, stream: &str, token: &str) -> Option<u32> {
        let (viewer, sig) = token.split_once('.')?;
        let viewer: u32 = viewer.parse().ok()?;
        crate::config::same_secret(sig, &self.mac(stream, viewer)).then_some(viewer)
    }
}

/// The stego payload of a frame of segment `segment` in variant `bit`.
pub fn payload(segment: u64, bit: u8) -> u32 {
    ((segment as u32 & 0x7FFF_FFFF) << 1) | u32::from(bit & 1)
}

/// The variant viewer `viewer` gets for segment `segment`, with `bits`-bit IDs.
pub fn variant(viewer: u32, segment: u64, bits: u32) -> u8 {
    ((viewer >> (segment % u64::from(bits))) & 1) as u8
}

/// A viewer's playlist made from variant 0's: each segment `v0_N.ts`
/// becomes `N.ts` (with the viewer's token), and segments that variant 1
/// has not finished yet are left for the next refresh.
pub fn playlist(v0: &str, ready: impl Fn(u64) -> bool, token: Option<&str>) -> String {
    let mut out = String::with_capacity(v0.len() + 256);
    let mut pending_info: Option<&str> = None;
    for line in v0.lines() {
        if let Some(n) = line.strip_prefix("v0_").and_then(|l| l.strip_suffix(".ts")).and_then(|n| n.parse::<u64>().ok()) {
            if !ready(n) {
                break;
            }
            if let Some(info) = pending_info.take() {
                out.push_str(info);
                out.push('\n');
            }
            match token {
                Some(t) => out.push_str(&format!("{n}.ts?viewer={t}\n")),
                None => out.push_str(&format!("{n}.ts\n")),
            }
        } else if line.starts_with("#EXTINF") {
            pending_info = Some(line);
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Marks found in a clip, voted into a viewer ID.
#[derive(Debug, Default)]
pub struct Votes {
    /// Segment → frames carrying bit 0 and bit 1.
    segments: BTreeMap<u64, (u32, u32)>,
}

#[derive(Debug, serde::Serialize, PartialEq)]
pub struct Traced {
    /// The ID, when every bit position was seen.
    pub viewer: Option<u32>,
    /// Bit positions seen, of `bits`.
    pub positions: u32,
    pub bits: u32,
    pub segments: usize,
    /// Segments whose frames disagreed on their bit (a sign of collusion or damage).
    pub conflicts: usize,
}

impl Votes {
    pub fn add(&mut self, payload: u32) {
        let (segment, bit) = (u64::from(payload >> 1), payload & 1);
        let votes = self.segments.entry(segment).or_default();
        if bit == 0 {
            votes.0 += 1;
        } else {
            votes.1 += 1;
        }
    }

    pub fn result(&self, bits: u32) -> Traced {
        let mut per_position: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
        let mut conflicts = 0;
        for (segment, (zeros, ones)) in &self.segments {
            conflicts += usize::from(*zeros > 0 && *ones > 0);
            let p = per_position.entry((*segment % u64::from(bits)) as u32).or_default();
            p.0 += zeros;
            p.1 += ones;
        }
        let positions = per_position.len() as u32;
        let viewer = (positions == bits).then(|| per_position.iter().fold(0u32, |id, (pos, (z, o))| if o > z { id | (1 << pos) } else { id }));
        Traced { viewer, positions, bits, segments: self.segments.len(), conflicts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_viewer_and_only_for_their_stream() {
        let s = Signer::random();
        let t = s.token("abc", 42);
        assert_eq!(s.verify("abc", &t), Some(42));
        assert_eq!(s.verify("abd", &t), None);
        let forged = t.replacen("42.", "43.", 1);
        assert_eq!(s.verify("abc", &forged), None);
        assert_eq!(s.verify("abc", "42"), None);
    }

    #[test]
    fn a_viewer_id_comes_back_from_any_run_of_bits_segments() {
        let bits = 8;
        for viewer in [0u32, 1, 0xA5, 200, 255] {
            for start in [0u64, 3, 1000] {
                let mut votes = Votes::default();
                for n in start..start + u64::from(bits) {
                    for _ in 0..5 {
                        votes.add(payload(n, variant(viewer, n, bits)));
                    }
                }
                let t = votes.result(bits);
                assert_eq!(t.viewer, Some(viewer), "viewer {viewer} from segment {start}");
                assert_eq!(t.conflicts, 0);
            }
        }
        let mut short = Votes::default();
        short.add(payload(5, 1));
        assert_eq!(short.result(8).viewer, None);
    }

    #[test]
    fn playlists_name_segments_for_the_viewer_and_wait_for_both_variants() {
        let v0 = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:1.000000,\nv0_4.ts\n#EXTINF:1.000000,\nv0_5.ts\n";
        let p = playlist(v0, |n| n < 5, Some("7.ab"));
        assert_eq!(p, "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:1.000000,\n4.ts?viewer=7.ab\n");
        assert!(playlist(v0, |_| true, None).ends_with("#EXTINF:1.000000,\n5.ts\n"));
    }
}
