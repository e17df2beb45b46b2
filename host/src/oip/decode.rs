//! An inference request, checked against the model it names: each input's
//! name, datatype and shape against the model's ports, its data (JSON or
//! binary) into a typed tensor, and which outputs to send back, and how.

use crate::nn::model::Port;
use crate::nn::{ElemType, Model, Tensor, TensorData};

use super::binary::Tail;
use super::error::OipError;
use super::wire::{self, FlatData, InferRequest, RequestInput, Scalar};

/// One output to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub name: String,
    /// Raw bytes after the JSON header, rather than a `data` array.
    pub binary: bool,
}

/// The model's inputs, in the request's order, and the outputs to return.
pub struct Decoded {
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: Vec<Wanted>,
}

pub fn decode(model: &Model, req: InferRequest, tail: Tail) -> Result<Decoded, OipError> {
    let inputs = inputs(model, req.inputs, tail)?;
    let outputs = wanted(model, req.outputs, req.parameters.binary_data_output)?;
    Ok(Decoded { inputs, outputs })
}

fn inputs(model: &Model, given: Vec<RequestInput>, mut tail: Tail) -> Result<Vec<(String, Tensor)>, OipError> {
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(given.len());
    for input in given {
        let port = model.inputs().iter().find(|p| p.name == input.name).ok_or_else(|| {
            OipError::input(&input.name, format!("model '{}' has no such input; it takes {}", model.name(), names(model.inputs())))
        })?;
        if out.iter().any(|(n, _)| n == &input.name) {
            return Err(OipError::input(&input.name, "given twice"));
        }
        let tensor = tensor(port, input, &mut tail)?;
        out.push((port.name.clone(), tensor));
    }
    tail.finish()?;
    if let Some(missing) = model.inputs().iter().find(|p| !out.iter().any(|(n, _)| n == &p.name)) {
        return Err(OipError::input(&missing.name, format!("model '{}' needs this input", model.name())));
    }
    Ok(out)
}

fn tensor(port: &Port, input: RequestInput, tail: &mut Tail) -> Result<Tensor, OipError> {
    let name = input.name.as_str();
    let ty = wire::elem_type(&input.datatype).ok_or_else(|| {
        OipError::input(name, format!("datatype '{}' is not supported; use FP32, FP64, UINT8, INT32 or INT64", input.datatype))
    })?;
    match port.ty {
        Some(want) if want != ty => {
            return Err(OipError::input(name, format!("datatype is {}, the model takes {}", input.datatype, wire::datatype(want))))
        }
        None => return Err(OipError::input(name, "the model's element type for this input is not one this server can send")),
        Some(_) => {}
    }
    let dims = dims(port, &input.shape).map_err(|why| OipError::input(name, why))?;
    let bad = |e: crate::nn::NnError| OipError::input(name, e.to_string());
    match (input.parameters.binary_data_size, input.data) {
        (Some(size), None) => Tensor::from_bytes(dims, ty, &tail.take(name, size)?).map_err(bad),
        (None, Some(data)) => Tensor::new(dims, typed(ty, data).map_err(|why| OipError::input(name, why))?).map_err(bad),
        (Some(_), Some(_)) => Err(OipError::input(name, "has both 'data' and parameters.binary_data_size; send one")),
        (None, None) => Err(OipError::input(name, "has neither 'data' nor parameters.binary_data_size")),
    }
}

/// The request's shape, checked against the port: same rank, and every fixed
/// dimension equal (-1 in the model takes any size, e.g. the batch).
fn dims(port: &Port, shape: &[i64]) -> Result<Vec<u32>, String> {
    let mismatch = || format!("shape {shape:?} does not fit the model's {:?} (-1: any size)", port.shape);
    if shape.len() != port.shape.len() {
        return Err(mismatch());
    }
    let mut dims = Vec::with_capacity(shape.len());
    for (&got, &want) in shape.iter().zip(&port.shape) {
        let d = u32::try_from(got).map_err(|_| format!("shape {shape:?} has a dimension that is negative or too large"))?;
        if want >= 0 && got != want {
            return Err(mismatch());
        }
        dims.push(d);
    }
    Ok(dims)
}

/// JSON numbers into the tensor's element type; a value the type cannot hold
/// exactly (a fraction for an integer type, 300 for UINT8) is refused.
fn typed(ty: ElemType, data: FlatData) -> Result<TensorData, String> {
    let v = data.0;
    Ok(match ty {
        ElemType::F32 => TensorData::F32(convert(&v, ty, |s| float(s).map(|f| f as f32))?),
        ElemType::F64 => TensorData::F64(convert(&v, ty, float)?),
        ElemType::U8 => TensorData::U8(convert(&v, ty, |s| int(s).and_then(|i| u8::try_from(i).ok()))?),
        ElemType::I32 => TensorData::I32(convert(&v, ty, |s| int(s).and_then(|i| i32::try_from(i).ok()))?),
        ElemType::I64 => TensorData::I64(convert(&v, ty, int)?),
    })
}

fn convert<T>(values: &[Scalar], ty: ElemType, f: impl Fn(Scalar) -> Option<T>) -> Result<Vec<T>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, &s)| f(s).ok_or_else(|| format!("data[{i}] = {s:?} is not a {} value", wire::datatype(ty))))
        .collect()
}

fn float(s: Scalar) -> Option<f64> {
    match s {
        Scalar::Float(f) => Some(f),
        Scalar::Int(i) => Some(i as f64),
        Scalar::Uint(u) => Some(u as f64),
        Scalar::Bool(_) => None,
    }
}

fn int(s: Scalar) -> Option<i64> {
    match s {
        Scalar::Int(i) => Some(i),
        Scalar::Uint(u) => i64::try_from(u).ok(),
        Scalar::Float(_) | Scalar::Bool(_) => None,
    }
}

/// The outputs to send: those asked for, in the asked order, else all of the
/// model's; binary where the output says so, else as the request-level default.
fn wanted(model: &Model, asked: Option<Vec<wire::RequestOutput>>, binary_default: bool) -> Result<Vec<Wanted>, OipError> {
    let asked = asked.unwrap_or_default();
    if asked.is_empty() {
        return Ok(model.outputs().iter().map(|p| Wanted { name: p.name.clone(), binary: binary_default }).collect());
    }
    let mut out: Vec<Wanted> = Vec::with_capacity(asked.len());
    for o in asked {
        if !model.outputs().iter().any(|p| p.name == o.name) {
            return Err(OipError::bad(format!(
                "model '{}' has no output named '{}'; it has {}",
                model.name(),
                o.name,
                names(model.outputs())
            )));
        }
        if o.parameters.classification.is_some_and(|n| n > 0) {
            return Err(OipError::bad(format!("output '{}': the classification extension is not supported", o.name)));
        }
        if out.iter().any(|w| w.name == o.name) {
            return Err(OipError::bad(format!("output '{}' is asked for twice", o.name)));
        }
        out.push(Wanted { name: o.name, binary: o.parameters.binary_data.unwrap_or(binary_default) });
    }
    Ok(out)
}

fn names(ports: &[Port]) -> String {
    ports.iter().map(|p| format!("'{}'", p.name)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(shape: &[i64]) -> Port {
        Port { name: "x".into(), ty: Some(ElemType::U8), shape: shape.to_vec() }
    }

    #[test]
    fn dynamic_dimensions_take_any_size_fixed_ones_must_match() {
        assert_eq!(dims(&port(&[-1, 2, 3]), &[4, 2, 3]).unwrap(), vec![4, 2, 3]);
        assert!(dims(&port(&[-1, 2, 3]), &[4, 3, 2]).unwrap_err().contains("does not fit"));
        assert!(dims(&port(&[-1, 2, 3]), &[2, 3]).is_err());
        assert!(dims(&port(&[-1, 2]), &[-1, 2]).unwrap_err().contains("negative"));
    }

    #[test]
    fn json_numbers_convert_exactly_or_not_at_all() {
        let data = |s: &str| serde_json::from_str::<FlatData>(s).unwrap();
        assert_eq!(typed(ElemType::U8, data("[[0, 255]]")).unwrap(), TensorData::U8(vec![0, 255]));
        assert!(typed(ElemType::U8, data("[256]")).unwrap_err().contains("data[0]"));
        assert!(typed(ElemType::U8, data("[1.5]")).is_err());
        assert!(typed(ElemType::I32, data("[-1, 1e3]")).is_err());
        assert_eq!(typed(ElemType::F32, data("[1, -0.5]")).unwrap(), TensorData::F32(vec![1.0, -0.5]));
        assert_eq!(typed(ElemType::I64, data("[-9007199254740993]")).unwrap(), TensorData::I64(vec![-9007199254740993]));
        assert!(typed(ElemType::F64, data("[true]")).is_err());
    }

    #[test]
    fn binary_inputs_read_their_bytes_from_the_tail() {
        let input = RequestInput {
            name: "x".into(),
            shape: vec![1, 2, 1],
            datatype: "UINT8".into(),
            parameters: wire::InputParameters { binary_data_size: Some(2) },
            data: None,
        };
        let mut tail = Tail::new(bytes::Bytes::from_static(&[9, 8]));
        let t = tensor(&port(&[-1, 2, 1]), input, &mut tail).unwrap();
        assert_eq!(t.data, TensorData::U8(vec![9, 8]));
        tail.finish().unwrap();
    }

    #[test]
    fn a_wrong_datatype_or_byte_count_names_the_input() {
        let input = |datatype: &str, size| RequestInput {
            name: "x".into(),
            shape: vec![1, 2, 1],
            datatype: datatype.into(),
            parameters: wire::InputParameters { binary_data_size: Some(size) },
            data: None,
        };
        let mut tail = Tail::new(bytes::Bytes::from_static(&[0; 16]));
        let err = tensor(&port(&[-1, 2, 1]), input("FP32", 8), &mut tail).unwrap_err();
        assert!(err.to_string().contains("input 'x': datatype is FP32, the model takes UINT8"), "{err}");
        let err = tensor(&port(&[-1, 2, 1]), input("UINT8", 3), &mut tail).unwrap_err();
        assert!(err.to_string().contains("need 2 bytes, got 3"), "{err}");
    }
}
