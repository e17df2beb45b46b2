//! Triton's binary tensor extension: a body is a JSON header followed by raw
//! little-endian tensor bytes, and `Inference-Header-Content-Length` says
//! where the header ends. Inputs take their bytes from the tail in the order
//! they are listed; binary outputs are appended in the order of the response.

use bytes::{Bytes, BytesMut};

use super::error::OipError;
use crate::nn::TensorData;

/// The header that tells where the JSON ends and the tensor bytes begin.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a request body into its JSON header and its binary tail (empty
/// when the client sent no `Inference-Header-Content-Length`).
pub fn split(body: Bytes, header_length: Option<&str>) -> Result<(Bytes, Bytes), OipError> {
    let Some(value) = header_length else { return Ok((body, Bytes::new())) };
    let n: usize = value
        .trim()
        .parse()
        .map_err(|_| OipError::bad(format!("Inference-Header-Content-Length '{value}' is not a byte count")))?;
    if n > body.len() {
        return Err(OipError::bad(format!(
            "Inference-Header-Content-Length is {n}, but the body has only {} bytes",
            body.len()
        )));
    }
    let mut json = body;
    let tail = json.split_off(n);
    Ok((json, tail))
}

/// Hands out the binary tail to the inputs that declared `binary_data_size`.
pub struct Tail {
    rest: Bytes,
}

impl Tail {
    pub fn new(rest: Bytes) -> Self {
        Tail { rest }
    }

    /// The next `size` bytes, for input `name`.
    pub fn take(&mut self, name: &str, size: u64) -> Result<Bytes, OipError> {
        match usize::try_from(size) {
            Ok(n) if n <= self.rest.len() => Ok(self.rest.split_to(n)),
            _ => Err(OipError::input(
                name,
                format!("binary_data_size is {size}, but only {} bytes of binary data are left in the body", self.rest.len()),
            )),
        }
    }

    /// Bytes no input claimed mean the client and server disagree on the
    /// layout: refuse rather than compute on misaligned tensors.
    pub fn finish(self) -> Result<(), OipError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(OipError::bad(format!(
                "{} bytes of binary data follow the JSON header but no input's binary_data_size claims them",
                self.rest.len()
            )))
        }
    }
}

/// A tensor's elements as little-endian bytes, borrowed (the host is
/// little-endian, see `nn::tensor`).
pub fn raw(data: &TensorData) -> &[u8] {
    match data {
        TensorData::U8(v) => v,
        TensorData::F32(v) => bytemuck::cast_slice(v),
        TensorData::F64(v) => bytemuck::cast_slice(v),
        TensorData::I32(v) => bytemuck::cast_slice(v),
        TensorData::I64(v) => bytemuck::cast_slice(v),
    }
}

/// A response body: the JSON header, then each binary output's bytes.
/// Returns the body and the header's length, `None` when nothing is binary
/// (then the body is plain JSON and the length header must be left out).
pub fn encode(json: Vec<u8>, binaries: &[&TensorData]) -> (Bytes, Option<usize>) {
    if binaries.is_empty() {
        return (Bytes::from(json), None);
    }
    let header = json.len();
    let total = header + binaries.iter().map(|d| raw(d).len()).sum::<usize>();
    let mut body = BytesMut::with_capacity(total);
    body.extend_from_slice(&json);
    for d in binaries {
        body.extend_from_slice(raw(d));
    }
    (body.freeze(), Some(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_without_header_is_all_json() {
        let (json, tail) = split(Bytes::from_static(b"{}"), None).unwrap();
        assert_eq!(&json[..], b"{}");
        assert!(tail.is_empty());
    }

    #[test]
    fn split_cuts_at_the_header_length() {
        let (json, tail) = split(Bytes::from_static(b"{\"a\":1}\x01\x02\x03"), Some("7")).unwrap();
        assert_eq!(&json[..], b"{\"a\":1}");
        assert_eq!(&tail[..], &[1, 2, 3]);
    }

    #[test]
    fn header_length_past_the_body_or_not_a_number_is_refused() {
        assert!(split(Bytes::from_static(b"{}"), Some("3")).is_err());
        assert!(split(Bytes::from_static(b"{}"), Some("two")).is_err());
        assert!(split(Bytes::from_static(b"{}"), Some("-1")).is_err());
    }

    #[test]
    fn tail_hands_out_bytes_in_order() {
        let mut tail = Tail::new(Bytes::from_static(&[1, 2, 3, 4, 5]));
        assert_eq!(&tail.take("a", 2).unwrap()[..], &[1, 2]);
        assert_eq!(&tail.take("b", 3).unwrap()[..], &[3, 4, 5]);
        tail.finish().unwrap();
    }

    #[test]
    fn tail_refuses_overdraw_and_leftovers() {
        let mut tail = Tail::new(Bytes::from_static(&[1, 2, 3]));
        let err = tail.take("a", 4).unwrap_err();
        assert!(err.to_string().contains("input 'a'"), "{err}");
        tail.take("a", 2).unwrap();
        assert!(tail.finish().unwrap_err().to_string().contains("1 bytes"));
        assert!(Tail::new(Bytes::new()).take("big", u64::MAX).is_err());
    }

    #[test]
    fn encode_appends_little_endian_outputs_after_the_header() {
        let a = TensorData::F32(vec![1.0]);
        let b = TensorData::U8(vec![7, 8]);
        let (body, header) = encode(b"{}".to_vec(), &[&a, &b]);
        assert_eq!(header, Some(2));
        assert_eq!(&body[..], &[b'{', b'}', 0, 0, 0x80, 0x3f, 7, 8]);
    }

    #[test]
    fn encode_without_binary_outputs_is_plain_json() {
        let (body, header) = encode(b"{}".to_vec(), &[]);
        assert_eq!(header, None);
        assert_eq!(&body[..], b"{}");
    }

    #[test]
    fn raw_is_little_endian() {
        assert_eq!(raw(&TensorData::I64(vec![-2])), &(-2i64).to_le_bytes());
        assert_eq!(raw(&TensorData::F64(vec![0.25])), &0.25f64.to_le_bytes());
    }
}
