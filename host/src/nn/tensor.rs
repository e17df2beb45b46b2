//! Tensors as the host keeps them: typed buffers behind wasi-nn `tensor`
//! handles, so a tensor made by one stage reaches the model (and the model's
//! output the next stage) without passing through guest memory.

use super::NnError;

#[cfg(not(target_endian = "little"))]
compile_error!("wasi-nn tensors are little-endian bytes; this host assumes a little-endian target");

/// Element buffer of a tensor. Typed (not raw bytes) so ONNX Runtime can read
/// it in place, with the alignment its element type needs.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// Element types, as wasi-nn names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    F64,
    U8,
    I32,
    I64,
}

impl ElemType {
    /// The Open Inference Protocol's name of the type (`FP32`, ...).
    pub fn protocol_name(self) -> &'static str {
        match self {
            ElemType::F32 => "FP32",
            ElemType::F64 => "FP64",
            ElemType::U8 => "UINT8",
            ElemType::I32 => "INT32",
            ElemType::I64 => "INT64",
        }
    }

    /// The type of an Open Inference Protocol datatype name, for those this host moves.
    pub fn from_protocol_name(name: &str) -> Option<Self> {
        Some(match name {
            "FP32" => ElemType::F32,
            "FP64" => ElemType::F64,
            "UINT8" => ElemType::U8,
            "INT32" => ElemType::I32,
            "INT64" => ElemType::I64,
            _ => return None,
        })
    }

    /// Bytes of one element.
    pub fn width(self) -> usize {
        match self {
            ElemType::U8 => 1,
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F64 | ElemType::I64 => 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<u32>,
    pub data: TensorData,
}

impl Tensor {
    /// A tensor from little-endian bytes, as a guest hands them over.
    pub fn from_bytes(dims: Vec<u32>, ty: ElemType, bytes: &[u8]) -> Result<Self, NnError> {
        let count = element_count(&dims)?;
        if bytes.len() != count * ty.width() {
            return Err(NnError::InvalidTensor(format!(
                "dimensions {dims:?} of {ty:?} need {} bytes, got {}",
                count * ty.width(),
                bytes.len()
            )));
        }
        // wasi-nn bytes are little-endian, as is every target we build for;
        // `pod_collect_to_vec` copies into a buffer aligned for the element type.
        let data = match ty {
            ElemType::U8 => TensorData::U8(bytes.to_vec()),
            ElemType::F32 => TensorData::F32(bytemuck::pod_collect_to_vec(bytes)),
            ElemType::F64 => TensorData::F64(bytemuck::pod_collect_to_vec(bytes)),
            ElemType::I32 => TensorData::I32(bytemuck::pod_collect_to_vec(bytes)),
            ElemType::I64 => TensorData::I64(bytemuck::pod_collect_to_vec(bytes)),
        };
        Ok(Tensor { dims, data })
    }

    /// Checks that the buffer holds exactly as many elements as the dimensions say.
    pub fn new(dims: Vec<u32>, data: TensorData) -> Result<Self, NnError> {
        let count = element_count(&dims)?;
        if data.len() != count {
            return Err(NnError::InvalidTensor(format!(
                "dimensions {dims:?} need {count} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor { dims, data })
    }

    pub fn ty(&self) -> ElemType {
        match &self.data {
            TensorData::F32(_) => ElemType::F32,
            TensorData::F64(_) => ElemType::F64,
            TensorData::U8(_) => ElemType::U8,
            TensorData::I32(_) => ElemType::I32,
            TensorData::I64(_) => ElemType::I64,
        }
    }

    /// The elements as little-endian bytes, borrowed (for the wire).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.data {
            TensorData::U8(v) => v,
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::F64(v) => bytemuck::cast_slice(v),
            TensorData::I32(v) => bytemuck::cast_slice(v),
            TensorData::I64(v) => bytemuck::cast_slice(v),
        }
    }

    /// Little-endian bytes, as wasi-nn's `tensor.data` returns them: one
    /// memcpy (a YOLO output is 8.5 MB, copied on every request).
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.data {
            TensorData::U8(v) => v.clone(),
            TensorData::F32(v) => bytemuck::cast_slice(v).to_vec(),
            TensorData::F64(v) => bytemuck::cast_slice(v).to_vec(),
            TensorData::I32(v) => bytemuck::cast_slice(v).to_vec(),
            TensorData::I64(v) => bytemuck::cast_slice(v).to_vec(),
        }
    }

    pub fn shape_i64(&self) -> Vec<i64> {
        self.dims.iter().map(|&d| i64::from(d)).collect()
    }
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `start..start + len`, copied.
    pub fn slice(&self, start: usize, len: usize) -> TensorData {
        let r = start..start + len;
        match self {
            TensorData::F32(v) => TensorData::F32(v[r].to_vec()),
            TensorData::F64(v) => TensorData::F64(v[r].to_vec()),
            TensorData::U8(v) => TensorData::U8(v[r].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[r].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[r].to_vec()),
        }
    }
}

fn element_count(dims: &[u32]) -> Result<usize, NnError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .filter(|&n| n <= 1 << 30)
        .ok_or_else(|| NnError::InvalidTensor(format!("dimensions {dims:?} are too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_f32() {
        let t = Tensor::new(vec![1, 2], TensorData::F32(vec![1.5, -2.0])).unwrap();
        let b = t.to_bytes();
        assert_eq!(Tensor::from_bytes(vec![1, 2], ElemType::F32, &b).unwrap(), t);
    }

    #[test]
    fn wrong_byte_count_is_refused() {
        let err = Tensor::from_bytes(vec![2, 2], ElemType::F32, &[0; 12]).unwrap_err();
        assert!(err.to_string().contains("need 16 bytes, got 12"), "{err}");
    }

    #[test]
    fn overflowing_dimensions_are_refused() {
        assert!(Tensor::from_bytes(vec![u32::MAX, u32::MAX, 4], ElemType::U8, &[]).is_err());
    }
}
