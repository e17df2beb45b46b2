//! How many scans a JPEG has, read from its markers before any decoder sees
//! it. A progressive decoder passes over every block of the image once per
//! scan, so a 30 KB file of 3,000 tiny scans on a 4096x4096 frame costs
//! seconds of CPU per request (the "scan bomb"), and native decoding cannot
//! be stopped by the route's deadline once started. Real encoders write 1
//! (baseline) to about 20 (mozjpeg's progressive scripts) scans.

/// More scans than any encoder writes; fewer than makes decoding a bomb.
pub const MAX_SCANS: usize = 100;

/// The start-of-scan markers of the JPEG's top level, walking segment by
/// segment (a thumbnail inside an APP1 segment is skipped with it), and
/// stopping once `stop_after` are counted. A damaged file counts what it
/// has: the decoder gives the precise error.
pub fn count(bytes: &[u8], stop_after: usize) -> usize {
    let mut at = 2; // after SOI
    let mut scans = 0;
    while scans < stop_after && at + 4 <= bytes.len() {
        if bytes[at] != 0xff {
            return scans;
        }
        let marker = bytes[at + 1];
        match marker {
            // Fill bytes, and markers without a length.
            0xff => at += 1,
            0x01 | 0xd0..=0xd7 => at += 2,
            0xd9 => return scans,
            _ => {
                let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
                at += 2 + len;
                if marker == 0xda {
                    scans += 1;
                    at = after_entropy_data(bytes, at);
                }
            }
        }
    }
    scans
}

/// The offset of the first marker after a scan's entropy-coded data, where
/// 0xFF is followed by 0x00 (a stuffed byte) or a restart marker.
fn after_entropy_data(bytes: &[u8], mut at: usize) -> usize {
    while at + 1 < bytes.len() {
        if bytes[at] == 0xff && !matches!(bytes[at + 1], 0x00 | 0xd0..=0xd7) {
            return at;
        }
        at += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, one segment with a length, then `n` scans of a few data bytes.
    fn jpeg_of(n: usize) -> Vec<u8> {
        let mut j = vec![0xff, 0xd8, 0xff, 0xe1, 0, 6, 0xff, 0xda, 0xff, 0xd9];
        for _ in 0..n {
            j.extend_from_slice(&[0xff, 0xda, 0, 8, 1, 1, 0, 0, 63, 0]);
            j.extend_from_slice(&[0x12, 0xff, 0x00, 0x34, 0xff, 0xd0, 0x56]);
        }
        j.extend_from_slice(&[0xff, 0xd9]);
        j
    }

    #[test]
    fn counts_scans_but_not_markers_inside_other_segments_or_data() {
        assert_eq!(count(&jpeg_of(0), 1000), 0);
        assert_eq!(count(&jpeg_of(10), 1000), 10);
    }

    #[test]
    fn stops_counting_at_the_bound() {
        assert_eq!(count(&jpeg_of(3000), MAX_SCANS + 1), MAX_SCANS + 1);
    }

    #[test]
    fn a_truncated_file_counts_what_it_has() {
        let mut j = jpeg_of(5);
        j.truncate(j.len() - 20);
        assert!(count(&j, 1000) <= 5);
    }
}
