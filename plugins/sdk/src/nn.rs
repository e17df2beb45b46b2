//! Running a model through wasi-nn, and reading what it gave back.
//!
//! Models are loaded by the host from its configuration; a plugin names one
//! (`load-by-name`) and never sees its file. Input and output tensors stay in
//! the host until a stage reads one: [`Output::read`] copies an output into
//! guest memory once, and [`F32s`] reads floats from those bytes in place,
//! so a 25200x85 YOLO output is not copied a second time.

use crate::bindings::wasi::nn::errors::{Error as NnError, ErrorCode};
use crate::bindings::wasi::nn::graph;
use crate::{Frame, NamedTensor, StageError, Tensor, TensorType};

/// Runs `model` on `inputs` and returns its outputs, named, in the model's
/// output order.
///
/// The host matches input names to the model's input names; a model with a
/// single input accepts any name.
pub fn infer(model: &str, inputs: Vec<NamedTensor>) -> Result<Vec<(String, Tensor)>, StageError> {
    let graph = graph::load_by_name(model).map_err(|e| nn_error(model, "load", e))?;
    let ctx = graph
        .init_execution_context()
        .map_err(|e| nn_error(model, "prepare", e))?;
    let inputs = inputs.into_iter().map(|t| (t.name, t.tensor)).collect();
    ctx.compute(inputs).map_err(|e| nn_error(model, "run", e))
}

/// Takes the frame's tensors as the inputs of a model, leaving none behind:
/// they are consumed by the model.
pub fn take_inputs(frame: &mut Frame) -> Result<Vec<NamedTensor>, StageError> {
    if frame.tensors.is_empty() {
        return Err(StageError::bad_input(
            "no tensors in the frame: put a stage that makes the model input \
             (such as image-prep) before this one",
        ));
    }
    Ok(std::mem::take(&mut frame.tensors))
}

fn nn_error(model: &str, step: &str, e: NnError) -> StageError {
    let code = e.code();
    let message = format!(
        "model '{model}': {step} failed ({}): {}",
        code_name(code),
        e.data()
    );
    // A name the host does not know is a mistake in the route, not the model.
    if code == ErrorCode::NotFound && step == "load" {
        StageError::bad_settings(format!("{message} (is '{model}' in the host's models?)"))
    } else {
        StageError::model_failed(message)
    }
}

fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "invalid-argument",
        ErrorCode::InvalidEncoding => "invalid-encoding",
        ErrorCode::Timeout => "timeout",
        ErrorCode::RuntimeError => "runtime-error",
        ErrorCode::UnsupportedOperation => "unsupported-operation",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Security => "security",
        ErrorCode::Unknown => "unknown",
    }
}

/// The WIT name of a tensor type, for messages.
pub fn type_name(ty: TensorType) -> &'static str {
    match ty {
        TensorType::Fp16 => "FP16",
        TensorType::Fp32 => "FP32",
        TensorType::Fp64 => "FP64",
        TensorType::Bf16 => "BF16",
        TensorType::U8 => "U8",
        TensorType::I32 => "I32",
        TensorType::I64 => "I64",
    }
}

fn type_size(ty: TensorType) -> usize {
    match ty {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
    }
}

/// A model output copied into guest memory.
#[derive(Debug, Clone)]
pub struct Output {
    /// Which output this is, for messages: "model 'yolov5s' output 0 (output0)".
    pub what: String,
    pub dims: Vec<u32>,
    pub ty: TensorType,
    /// The elements, row-major, little-endian.
    pub bytes: Vec<u8>,
}

impl Output {
    /// Copies output `index` of `model`'s `outputs` into the guest.
    pub fn read(
        model: &str,
        outputs: &[(String, Tensor)],
        index: usize,
    ) -> Result<Self, StageError> {
        let Some((name, tensor)) = outputs.get(index) else {
            return Err(StageError::model_failed(format!(
                "model '{model}' gave {} outputs, output {index} expected",
                outputs.len()
            )));
        };
        let what = format!("model '{model}' output {index} ({name})");
        Self::new(what, tensor.dimensions(), tensor.ty(), tensor.data())
    }

    /// An output from its parts; checks that the data fills the shape.
    pub fn new(
        what: String,
        dims: Vec<u32>,
        ty: TensorType,
        bytes: Vec<u8>,
    ) -> Result<Self, StageError> {
        let want = dims.iter().map(|&d| d as usize).product::<usize>() * type_size(ty);
        if bytes.len() != want {
            return Err(StageError::model_failed(format!(
                "{what}: {} bytes of data for shape {dims:?} of {}, expected {want}",
                bytes.len(),
                type_name(ty)
            )));
        }
        Ok(Output {
            what,
            dims,
            ty,
            bytes,
        })
    }

    /// An FP32 output holding `values` (for tests and for stages that make tensors).
    pub fn from_f32(what: &str, dims: &[u32], values: &[f32]) -> Result<Self, StageError> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(what.to_string(), dims.to_vec(), TensorType::Fp32, bytes)
    }

    /// A U8 output holding `values`.
    pub fn from_u8(what: &str, dims: &[u32], values: &[u8]) -> Result<Self, StageError> {
        Self::new(
            what.to_string(),
            dims.to_vec(),
            TensorType::U8,
            values.to_vec(),
        )
    }

    /// The elements of an FP32 output, read in place.
    pub fn f32s(&self) -> Result<F32s<'_>, StageError> {
        self.expect_type(TensorType::Fp32)?;
        Ok(F32s(&self.bytes))
    }

    /// The elements of a U8 output.
    pub fn u8s(&self) -> Result<&[u8], StageError> {
        self.expect_type(TensorType::U8)?;
        Ok(&self.bytes)
    }

    fn expect_type(&self, ty: TensorType) -> Result<(), StageError> {
        if self.ty == ty {
            Ok(())
        } else {
            Err(StageError::model_failed(format!(
                "{}: type {} seen, expected {}",
                self.what,
                type_name(self.ty),
                type_name(ty)
            )))
        }
    }

    /// The error for an output whose shape the stage cannot read; `expected`
    /// describes the shape wanted, e.g. "[1, N, 5 + classes]".
    pub fn shape_error(&self, expected: &str) -> StageError {
        StageError::model_failed(format!(
            "{}: shape {:?} seen, expected {expected}",
            self.what, self.dims
        ))
    }
}

/// FP32 elements read from little-endian bytes without copying them into a
/// `Vec<f32>` (the bytes need no alignment).
#[derive(Debug, Clone, Copy)]
pub struct F32s<'a>(&'a [u8]);

impl<'a> F32s<'a> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Element `i`. Panics when out of range, like slice indexing.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        let b = &self.0[i * 4..i * 4 + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Elements `start..start + len`.
    #[inline]
    pub fn slice(&self, start: usize, len: usize) -> F32s<'a> {
        F32s(&self.0[start * 4..(start + len) * 4])
    }

    pub fn iter(&self) -> impl Iterator<Item = f32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn to_vec(&self) -> Vec<f32> {
        self.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn f32s_read_little_endian_values() {
        let out = Output::from_f32("t", &[2, 3], &[0.0, 1.5, -2.0, 3.25, 4.0, 1e-3]).unwrap();
        let v = out.f32s().unwrap();
        assert_eq!(v.len(), 6);
        assert_eq!(v.get(1), 1.5);
        assert_eq!(v.slice(3, 2).to_vec(), vec![3.25, 4.0]);
        assert_eq!(v.to_vec(), vec![0.0, 1.5, -2.0, 3.25, 4.0, 1e-3]);
    }

    #[test]
    fn reading_the_wrong_type_is_a_model_error() {
        let out = Output::from_u8("model 'm' output 0 (probs)", &[1, 3], &[1, 2, 3]).unwrap();
        assert_eq!(out.u8s().unwrap(), &[1, 2, 3]);
        let e = out.f32s().unwrap_err();
        assert_eq!(e.kind, ErrorKind::ModelFailed);
        assert_eq!(
            e.message,
            "model 'm' output 0 (probs): type U8 seen, expected FP32"
        );
    }

    #[test]
    fn data_must_fill_the_shape() {
        let e = Output::new("o".into(), vec![1, 4], TensorType::Fp32, vec![0; 12]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ModelFailed);
        assert!(e.message.contains("expected 16"), "{}", e.message);
    }

    #[test]
    fn shape_errors_give_seen_and_expected() {
        let out = Output::from_f32("o", &[1, 2], &[0.0, 0.0]).unwrap();
        assert_eq!(
            out.shape_error("[1, N, 85]").message,
            "o: shape [1, 2] seen, expected [1, N, 85]"
        );
    }
}
