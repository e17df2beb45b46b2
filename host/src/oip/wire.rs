//! The JSON of the protocol: the inference request and response objects, the
//! datatype names, and tensor `data` read flat whether the client nested it
//! by dimension or not (the spec allows both).

use std::fmt;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::nn::{ElemType, TensorData};

/// `$inference_request`. Unknown fields and parameters are ignored, as the
/// spec lets clients add their own.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: RequestParameters,
    pub inputs: Vec<RequestInput>,
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RequestParameters {
    /// Every output in binary unless an output says otherwise (Triton's extension).
    #[serde(default)]
    pub binary_data_output: bool,
}

#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: InputParameters,
    pub data: Option<FlatData>,
}

#[derive(Debug, Default, Deserialize)]
pub struct InputParameters {
    /// Set when the tensor's bytes follow the JSON header instead of `data`.
    pub binary_data_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: OutputParameters,
}

#[derive(Debug, Default, Deserialize)]
pub struct OutputParameters {
    pub binary_data: Option<bool>,
    /// Triton's classification extension, which this server does not offer.
    pub classification: Option<u64>,
}

/// `$inference_response`, borrowing the output tensors it describes.
#[derive(Debug, Serialize)]
pub struct InferResponse<'a> {
    pub model_name: &'a str,
    pub model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub outputs: Vec<ResponseOutput<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ResponseOutput<'a> {
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<OutputSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRef<'a>>,
}

#[derive(Debug, Serialize)]
pub struct OutputSize {
    pub binary_data_size: usize,
}

/// An output's elements for the JSON `data` field, written straight from the
/// tensor (a YOLO output is 2 M numbers: no intermediate `Value` tree).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum DataRef<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    U8(&'a [u8]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl<'a> From<&'a TensorData> for DataRef<'a> {
    fn from(d: &'a TensorData) -> Self {
        match d {
            TensorData::F32(v) => DataRef::F32(v),
            TensorData::F64(v) => DataRef::F64(v),
            TensorData::U8(v) => DataRef::U8(v),
            TensorData::I32(v) => DataRef::I32(v),
            TensorData::I64(v) => DataRef::I64(v),
        }
    }
}

/// The protocol's name of an element type.
pub fn datatype(t: ElemType) -> &'static str {
    t.protocol_name()
}

/// The element type of a protocol datatype name, for those ONNX Runtime runs here.
pub fn elem_type(datatype: &str) -> Option<ElemType> {
    ElemType::from_protocol_name(datatype)
}

/// One JSON number, kept as the parser found it so integers keep every bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
}

/// A tensor's `data`, flattened in row-major order from any nesting.
#[derive(Debug, Default, PartialEq)]
pub struct FlatData(pub Vec<Scalar>);

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        Flatten(&mut out).deserialize(d)?;
        Ok(FlatData(out))
    }
}

/// Appends every number of a (possibly nested) array to one vector; serde_json's
/// recursion limit bounds the nesting.
struct Flatten<'a>(&'a mut Vec<Scalar>);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a boolean, or an array of them (nested or flat)")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Scalar::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Scalar::Uint(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Scalar::Float(v));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.0.reserve(n);
        }
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_read_the_same() {
        let flat: FlatData = serde_json::from_str("[1, 2, 3, 4]").unwrap();
        let nested: FlatData = serde_json::from_str("[[1, 2], [3, 4]]").unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.0, vec![Scalar::Uint(1), Scalar::Uint(2), Scalar::Uint(3), Scalar::Uint(4)]);
    }

    #[test]
    fn data_keeps_floats_negatives_and_booleans() {
        let d: FlatData = serde_json::from_str("[[0.5], [-3], [true]]").unwrap();
        assert_eq!(d.0, vec![Scalar::Float(0.5), Scalar::Int(-3), Scalar::Bool(true)]);
    }

    #[test]
    fn strings_in_data_are_refused() {
        assert!(serde_json::from_str::<FlatData>(r#"[1, "two"]"#).is_err());
    }

    #[test]
    fn a_tritonclient_request_parses() {
        let text = r#"{"id":"7","inputs":[{"name":"images","shape":[1,2],"datatype":"UINT8",
            "parameters":{"binary_data_size":2}}],"outputs":[{"name":"Softmax","parameters":{"binary_data":true}}]}"#;
        let r: InferRequest = serde_json::from_str(text).unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.inputs[0].parameters.binary_data_size, Some(2));
        assert!(r.inputs[0].data.is_none());
        assert_eq!(r.outputs.unwrap()[0].parameters.binary_data, Some(true));
        assert!(!r.parameters.binary_data_output);
    }

    #[test]
    fn response_writes_data_or_binary_size() {
        let t = TensorData::F32(vec![0.5, 1.0]);
        let r = InferResponse {
            model_name: "m",
            model_version: "1",
            id: None,
            outputs: vec![
                ResponseOutput { name: "a", datatype: "FP32", shape: vec![2], parameters: None, data: Some((&t).into()) },
                ResponseOutput { name: "b", datatype: "FP32", shape: vec![2], parameters: Some(OutputSize { binary_data_size: 8 }), data: None },
            ],
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([0.5, 1.0]));
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert!(v.get("id").is_none());
    }
}
