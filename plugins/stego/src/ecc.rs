//! The mark's error-correcting code: a 32-bit ID and its CRC-16, protected by
//! a rate-1/3 convolutional code decoded with soft-decision Viterbi.
//!
//! The CRC does two jobs: it rejects a wrongly decoded ID, and it is most of
//! the guard against false positives. Viterbi always returns *some* message,
//! even for an unmarked image; a random message passes a 16-bit CRC with
//! probability 2^-16.
//!
//! The code is the constraint-length-7 code with generators 133, 171, 165
//! (octal; the LTE set), free distance 15, terminated with six zero bits so
//! the decoder knows both its start and end state.

/// Bits of the message: the ID, then its CRC.
pub const MESSAGE_BITS: usize = 32 + 16;
/// Coded bits per message bit.
const RATE: usize = 3;
/// Constraint length - 1: the encoder's memory, and the zero tail's length.
const MEMORY: usize = 6;
const STATES: usize = 1 << MEMORY;
const GENERATORS: [u32; RATE] = [0o133, 0o171, 0o165];
/// Coded bits carried by the image.
pub const CODED_BITS: usize = (MESSAGE_BITS + MEMORY) * RATE;

/// CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The message bits of `id`, most significant first: the ID, then its CRC.
fn message(id: u32) -> [bool; MESSAGE_BITS] {
    let word = (u64::from(id) << 16) | u64::from(crc16(&id.to_be_bytes()));
    std::array::from_fn(|i| (word >> (MESSAGE_BITS - 1 - i)) & 1 == 1)
}

/// The coded bits of one encoder step: the register holds the new bit in bit
/// 0 and the six before it above.
fn outputs(register: u32) -> [bool; RATE] {
    GENERATORS.map(|g| (register & g).count_ones() % 2 == 1)
}

/// Encodes `id` (with its CRC and the zero tail) into [`CODED_BITS`] bits.
pub fn encode(id: u32) -> Vec<bool> {
    encode_message(&message(id))
}

/// Encodes message bits as they are (CRC or not), with the zero tail.
pub fn encode_message(message: &[bool; MESSAGE_BITS]) -> Vec<bool> {
    let mut coded = Vec::with_capacity(CODED_BITS);
    let mut register = 0u32;
    let tail = [false; MEMORY];
    for &bit in message.iter().chain(&tail) {
        register = ((register << 1) | u32::from(bit)) & ((1 << (MEMORY + 1)) - 1);
        coded.extend(outputs(register));
    }
    coded
}

/// Decodes soft coded bits (positive: more likely 1, larger: surer) into the
/// most likely message, returning the ID when its CRC matches.
///
/// Maximum-likelihood for Gaussian noise: the path metric is the correlation
/// of the soft values with the path's coded bits (as +-1), so the soft
/// values' scale does not matter.
pub fn decode(soft: &[f32]) -> Option<u32> {
    let bits = viterbi(soft);
    let word = bits.iter().fold(0u64, |acc, &b| (acc << 1) | u64::from(b));
    let id = (word >> 16) as u32;
    (crc16(&id.to_be_bytes()) == word as u16).then_some(id)
}

/// The most likely message bits for `soft` (length [`CODED_BITS`]).
pub fn viterbi(soft: &[f32]) -> [bool; MESSAGE_BITS] {
    assert_eq!(soft.len(), CODED_BITS, "soft bits of a whole codeword");
    // The +-1 coded outputs of each full 7-bit register value.
    let signs: Vec<[f32; RATE]> = (0..1u32 << (MEMORY + 1))
        .map(|r| outputs(r).map(|b| if b { 1.0 } else { -1.0 }))
        .collect();
    let steps = MESSAGE_BITS + MEMORY;
    let mut metric = [f32::NEG_INFINITY; STATES];
    metric[0] = 0.0;
    // Bit `s` of `decisions[t]`: which predecessor won for state `s` at step t.
    let mut decisions = vec![0u64; steps];
    for (t, step) in soft.chunks_exact(RATE).enumerate() {
        let mut next = [f32::NEG_INFINITY; STATES];
        for (state, slot) in next.iter_mut().enumerate() {
            // The state is the last six bits; its predecessors differ only in
            // the bit that leaves the register.
            for high in 0..2 {
                let prev = (state >> 1) | (high << (MEMORY - 1));
                let register = (prev << 1) | (state & 1);
                let branch: f32 = signs[register].iter().zip(step).map(|(s, v)| s * v).sum();
                let m = metric[prev] + branch;
                if m > *slot {
                    *slot = m;
                    decisions[t] = (decisions[t] & !(1 << state)) | ((high as u64) << state);
                }
            }
        }
        metric = next;
    }
    // The zero tail ends the path in state 0; trace back from there.
    let mut state = 0usize;
    let mut bits = [false; MESSAGE_BITS];
    for t in (0..steps).rev() {
        if t < MESSAGE_BITS {
            bits[t] = state & 1 == 1;
        }
        let high = ((decisions[t] >> state) & 1) as usize;
        state = (state >> 1) | (high << (MEMORY - 1));
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soft(coded: &[bool]) -> Vec<f32> {
        coded.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect()
    }

    /// A small deterministic generator for the tests' noise.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn clean_codewords_decode() {
        for id in [0, 1, 0xDEAD_BEEF, u32::MAX, 1_234_567] {
            let coded = encode(id);
            assert_eq!(coded.len(), CODED_BITS);
            assert_eq!(decode(&soft(&coded)), Some(id));
        }
    }

    #[test]
    fn hard_bit_errors_are_corrected() {
        // Free distance 15: any 7 flipped bits are corrected; spread ones
        // far beyond that are too, as long as no window gets too many.
        let id = 0xC0FF_EE42;
        let coded = encode(id);
        let mut rng = 7;
        for trial in 0..200 {
            let mut s = soft(&coded);
            let flips = if trial < 100 { 7 } else { 12 };
            let mut flipped = 0;
            while flipped < flips {
                let i = (lcg(&mut rng) as usize) % CODED_BITS;
                if s[i] == s[i].abs() * if coded[i] { 1.0 } else { -1.0 } {
                    s[i] = -s[i];
                    flipped += 1;
                }
            }
            if trial < 100 {
                assert_eq!(decode(&s), Some(id), "7 errors, trial {trial}");
            } else {
                // 12 random errors in 162 bits are corrected nearly always.
                assert!(decode(&s).is_none_or(|d| d == id));
            }
        }
    }

    #[test]
    fn soft_decoding_survives_heavy_noise() {
        // Unit-amplitude bits in Gaussian-like noise of sigma 0.9: about 13 %
        // of the hard decisions are wrong, which soft Viterbi still corrects.
        let id = 987_654_321;
        let coded = encode(id);
        let mut rng = 11;
        let mut ok = 0;
        let mut raw_errors = 0;
        for _ in 0..100 {
            let s: Vec<f32> = soft(&coded)
                .iter()
                .map(|v| {
                    // Sum of 12 uniforms - 6: approximately N(0, 1).
                    let n: f32 = (0..12)
                        .map(|_| lcg(&mut rng) as f32 / (1u64 << 31) as f32)
                        .sum();
                    v + 0.9 * (n - 6.0)
                })
                .collect();
            raw_errors += s
                .iter()
                .zip(&coded)
                .filter(|(v, &b)| (**v > 0.0) != b)
                .count();
            ok += usize::from(decode(&s) == Some(id));
        }
        let ber = raw_errors as f64 / (100 * CODED_BITS) as f64;
        assert!(ber > 0.08, "the noise should be heavy: raw BER {ber}");
        assert!(ok >= 95, "{ok}/100 decoded at raw BER {ber}");
    }

    #[test]
    fn noise_rarely_passes_the_crc() {
        let mut rng = 3;
        let passed = (0..2000)
            .filter(|_| {
                let s: Vec<f32> = (0..CODED_BITS)
                    .map(|_| lcg(&mut rng) as f32 / (1u64 << 30) as f32 - 1.0)
                    .collect();
                decode(&s).is_some()
            })
            .count();
        // Expected 2000 / 65536 = 0.03.
        assert!(passed <= 1, "{passed} of 2000 noise vectors passed the CRC");
    }
}
