//! Remote models over the Open Inference Protocol v2: the `nn` floor's
//! `Connector` and `RemoteModel`, implemented with this floor's pools. A
//! model's metadata (`GET /v2/models/{name}[/versions/{v}]`) gives its ports
//! at load; a run is `POST .../infer` with Triton's binary tensor extension
//! (a JSON header, then the raw little-endian tensors), through `forward`:
//! the least busy healthy node below its cap, one retry on another node when
//! the first never answered or answered 503, the time left in
//! `x-osprey-deadline-ms`.
//!
//! Both block on the async runtime through its `Handle`: they are called
//! from the thread that builds a snapshot and from the chain's blocking
//! threads, never from an async worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::forward::{forward, Forwarded, Outgoing};
use super::pool::Pool;
use super::{Pools, UpstreamError};
use crate::config::UpstreamDef;
use crate::nn::model::Port;
use crate::nn::{Connector, ElemType, NnError, Opened, RemoteModel, RemoteSpec, Tensor};

/// Where the JSON header of a binary body ends.
const HEADER_LENGTH: &str = "inference-header-content-length";
/// How long a load waits for a model's metadata.
const METADATA_DEADLINE: Duration = Duration::from_secs(10);

/// Opens the remote models of a snapshot being built, with the pools of its
/// config: the running pool when its settings did not change, else a pool of
/// the new settings made for the load alone (the reload's `sync` makes the
/// lasting one once the snapshot is swapped in).
pub struct Remotes {
    pools: Arc<Pools>,
    defs: Vec<UpstreamDef>,
}

impl Remotes {
    pub fn new(pools: Arc<Pools>, defs: &[UpstreamDef]) -> Self {
        Remotes { pools, defs: defs.to_vec() }
    }

    fn pool(&self, name: &str) -> Result<Arc<Pool>, UpstreamError> {
        let def = self.defs.iter().find(|d| d.name == name).ok_or_else(|| UpstreamError::Unknown(name.into()))?;
        match self.pools.get(name) {
            Ok(p) if &p.def == def => Ok(p),
            _ => Ok(Arc::new(Pool::new(def.clone()))),
        }
    }
}

impl Connector for Remotes {
    fn open(&self, name: &str, spec: &RemoteSpec) -> Result<Opened, NnError> {
        let fail = |why: String| NnError::Load { model: name.into(), file: spec.location().into(), why };
        let runtime = self.pools.runtime().ok_or_else(|| fail("no async runtime to reach the upstream pool on".into()))?;
        let pool = self.pool(&spec.upstream).map_err(|e| fail(e.to_string()))?;
        let path = model_path(spec);
        let out = Outgoing { method: Method::GET, path_and_query: path.clone(), content_type: "application/json".into(), accept: None, headers: HeaderMap::new(), body: Bytes::new() };
        let answer = runtime.block_on(forward(&pool, &out, Instant::now() + METADATA_DEADLINE)).map_err(|e| fail(format!("GET {path}: {e}")))?;
        if answer.status != StatusCode::OK {
            return Err(fail(format!("GET {path} on {} answered {}: {}", answer.node, answer.status, message(&answer.body))));
        }
        let meta: Metadata = serde_json::from_slice(&answer.body).map_err(|e| fail(format!("GET {path}: not model metadata of the v2 protocol: {e}")))?;
        let version = spec.version.clone().or_else(|| meta.versions.last().cloned()).unwrap_or_else(|| "1".into());
        let outputs: Vec<Port> = meta.outputs.into_iter().map(Port::from).collect();
        let backend = OipModel {
            pools: self.pools.clone(),
            runtime: runtime.clone(),
            name: name.to_string(),
            spec: spec.clone(),
            outputs: outputs.iter().map(|p| p.name.clone()).collect(),
        };
        Ok(Opened {
            version,
            inputs: meta.inputs.into_iter().map(Port::from).collect(),
            outputs,
            digest: crate::plugin::engine::hex(&Sha256::digest(&answer.body)),
            backend: Arc::new(backend),
        })
    }
}

/// `/v2/models/{model}[/versions/{version}]`; the config refused names that
/// are not one path segment.
fn model_path(spec: &RemoteSpec) -> String {
    match &spec.version {
        Some(v) => format!("/v2/models/{}/versions/{v}", spec.model),
        None => format!("/v2/models/{}", spec.model),
    }
}

/// `$metadata_model_response`.
#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    versions: Vec<String>,
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
}

#[derive(Deserialize)]
struct TensorMeta {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

impl From<TensorMeta> for Port {
    /// A datatype this host does not move (FP16, BYTES...) leaves `ty` unset,
    /// as a local model's would: a tensor for it is refused when it is set.
    fn from(t: TensorMeta) -> Self {
        Port { name: t.name, ty: ElemType::from_protocol_name(&t.datatype), shape: t.shape }
    }
}

/// A model on the nodes of a pool. The pool is looked up on every run, so a
/// reload that changed the pool's nodes is followed at once.
struct OipModel {
    pools: Arc<Pools>,
    runtime: tokio::runtime::Handle,
    /// The model's name in this host's config, for errors.
    name: String,
    spec: RemoteSpec,
    /// Every output of the model, asked for in binary.
    outputs: Vec<String>,
}

impl RemoteModel for OipModel {
    fn infer(&self, inputs: Vec<(String, Tensor)>, deadline: Instant) -> Result<Vec<(String, Tensor)>, NnError> {
        let pool = self.pools.get(&self.spec.upstream).map_err(|e| self.unavailable(e.to_string()))?;
        let (body, header) = encode(&inputs, &self.outputs).map_err(|e| self.failed(e))?;
        drop(inputs);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, HeaderValue::from(header));
        let path = format!("{}/infer", model_path(&self.spec));
        let out = Outgoing { method: Method::POST, path_and_query: path, content_type: "application/octet-stream".into(), accept: None, headers, body };
        match self.runtime.block_on(forward(&pool, &out, deadline)) {
            Ok(answer) => self.answer(answer),
            Err(e @ (UpstreamError::NoHealthyNode { .. } | UpstreamError::Unknown(_))) => Err(self.unavailable(e.to_string())),
            Err(UpstreamError::Deadline { .. }) => Err(NnError::Deadline { model: self.name.clone() }),
            // (The tunnel errors refuse a node dialling in; a forward never returns them.)
            Err(e @ (UpstreamError::NodeFailed { .. } | UpstreamError::TunnelRequest(_) | UpstreamError::TunnelPool(_) | UpstreamError::TunnelToken(_))) => {
                Err(self.failed(e.to_string()))
            }
        }
    }
}

impl OipModel {
    fn unavailable(&self, why: String) -> NnError {
        NnError::Unavailable { model: self.name.clone(), why }
    }

    fn failed(&self, why: String) -> NnError {
        NnError::RemoteFailed { model: self.name.clone(), why }
    }

    /// The node's answer as outputs, or as the error its status means.
    fn answer(&self, a: Forwarded) -> Result<Vec<(String, Tensor)>, NnError> {
        let why = || format!("node {} answered {}: {}", a.node, a.status, message(&a.body));
        match a.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => return Err(self.unavailable(why())),
            StatusCode::GATEWAY_TIMEOUT => return Err(NnError::Deadline { model: self.name.clone() }),
            // The server refused the tensors: the plugin's to fix, as a local model's refusal.
            s if s.is_client_error() => return Err(NnError::InvalidTensor(why())),
            _ => return Err(self.failed(why())),
        }
        let header = a.headers.get(HEADER_LENGTH).map(|v| v.to_str().unwrap_or("").to_string());
        decode(a.body, header.as_deref()).map_err(|e| self.failed(format!("node {}: {e}", a.node)))
    }
}

/// The text of a node's error answer: `{"error": "..."}` (the protocol's, or
/// osprey's `{"error": {"message": ...}}`), else the body as it is, cut short.
fn message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match v.get("error") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(e) => e.get("message").and_then(|m| m.as_str()).map_or_else(|| e.to_string(), str::to_string),
        None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

#[derive(Serialize)]
struct InferRequest<'a> {
    inputs: Vec<InputHeader<'a>>,
    outputs: Vec<OutputWanted<'a>>,
    parameters: RequestParameters,
}

#[derive(Serialize)]
struct InputHeader<'a> {
    name: &'a str,
    shape: &'a [u32],
    datatype: &'static str,
    parameters: BinarySize,
}

#[derive(Serialize, Deserialize, Default)]
struct BinarySize {
    binary_data_size: Option<usize>,
}

#[derive(Serialize)]
struct OutputWanted<'a> {
    name: &'a str,
    parameters: BinaryData,
}

#[derive(Serialize)]
struct BinaryData {
    binary_data: bool,
}

#[derive(Serialize)]
struct RequestParameters {
    binary_data_output: bool,
}

/// The request body: the JSON header, then each input's bytes in order.
/// Returns the body and the header's length.
fn encode(inputs: &[(String, Tensor)], outputs: &[String]) -> Result<(Bytes, usize), String> {
    let header = InferRequest {
        inputs: inputs
            .iter()
            .map(|(name, t)| InputHeader { name, shape: &t.dims, datatype: t.ty().protocol_name(), parameters: BinarySize { binary_data_size: Some(t.as_bytes().len()) } })
            .collect(),
        outputs: outputs.iter().map(|name| OutputWanted { name, parameters: BinaryData { binary_data: true } }).collect(),
        parameters: RequestParameters { binary_data_output: true },
    };
    let json = serde_json::to_vec(&header).map_err(|e| format!("encoding the request: {e}"))?;
    let mut body = BytesMut::with_capacity(json.len() + inputs.iter().map(|(_, t)| t.as_bytes().len()).sum::<usize>());
    body.extend_from_slice(&json);
    for (_, t) in inputs {
        body.extend_from_slice(t.as_bytes());
    }
    Ok((body.freeze(), json.len()))
}

/// `$inference_response`, the part read here.
#[derive(Deserialize)]
struct InferResponse {
    outputs: Vec<OutputHeader>,
}

#[derive(Deserialize)]
struct OutputHeader {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: BinarySize,
}

/// The outputs of an answer: each binary output takes its bytes from the
/// tail, in the order listed. An output sent as JSON `data` means the server
/// ignored the binary extension this host asked for.
fn decode(body: Bytes, header_length: Option<&str>) -> Result<Vec<(String, Tensor)>, String> {
    let split = match header_length {
        None => body.len(),
        Some(v) => v.trim().parse::<usize>().ok().filter(|&n| n <= body.len()).ok_or_else(|| format!("Inference-Header-Content-Length '{v}' does not fit a body of {} bytes", body.len()))?,
    };
    let mut tail = body.slice(split..);
    let header: InferResponse = serde_json::from_slice(&body[..split]).map_err(|e| format!("not an inference response of the v2 protocol: {e}"))?;
    let mut out = Vec::with_capacity(header.outputs.len());
    for o in header.outputs {
        let ty = ElemType::from_protocol_name(&o.datatype).ok_or_else(|| format!("output '{}' is {}, which this host does not move", o.name, o.datatype))?;
        let dims = o.shape.iter().map(|&d| u32::try_from(d).map_err(|_| format!("output '{}' has shape {:?}", o.name, o.shape))).collect::<Result<Vec<_>, _>>()?;
        let size = o.parameters.binary_data_size.ok_or_else(|| format!("output '{}' came as JSON data, not binary; the server must support the binary tensor extension", o.name))?;
        if size > tail.len() {
            return Err(format!("output '{}' claims {size} bytes, {} are left", o.name, tail.len()));
        }
        let bytes = tail.split_to(size);
        let tensor = Tensor::from_bytes(dims, ty, &bytes).map_err(|e| format!("output '{}': {e}", o.name))?;
        out.push((o.name, tensor));
    }
    if !tail.is_empty() {
        return Err(format!("{} bytes after the outputs belong to none of them", tail.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::TensorData;

    #[test]
    fn a_request_is_a_json_header_then_the_raw_inputs() {
        let t = Tensor::new(vec![1, 2], TensorData::F32(vec![1.0, -2.0])).unwrap();
        let (body, header) = encode(&[("images".into(), t)], &["output0".into()]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(json["inputs"][0]["datatype"], "FP32");
        assert_eq!(json["inputs"][0]["shape"], serde_json::json!([1, 2]));
        assert_eq!(json["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(json["outputs"][0]["parameters"]["binary_data"], true);
        assert_eq!(json["parameters"]["binary_data_output"], true);
        assert_eq!(&body[header..], &[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
    }

    #[test]
    fn an_answer_gives_its_binary_outputs_in_order() {
        let json = br#"{"model_name":"m","outputs":[{"name":"a","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":2}},{"name":"b","datatype":"INT32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[7, 8, 5, 0, 0, 0]);
        let out = decode(Bytes::from(body), Some(&json.len().to_string())).unwrap();
        assert_eq!(out[0], ("a".to_string(), Tensor::new(vec![2], TensorData::U8(vec![7, 8])).unwrap()));
        assert_eq!(out[1].1.data, TensorData::I32(vec![5]));
    }

    #[test]
    fn answers_that_do_not_add_up_are_refused() {
        let json = br#"{"outputs":[{"name":"a","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":2}}]}"#;
        let short = [json.as_slice(), &[1]].concat();
        assert!(decode(Bytes::from(short), Some(&json.len().to_string())).unwrap_err().contains("claims 2 bytes"));
        let long = [json.as_slice(), &[1, 2, 3]].concat();
        assert!(decode(Bytes::from(long), Some(&json.len().to_string())).unwrap_err().contains("belong to none"));
        let as_json = br#"{"outputs":[{"name":"a","datatype":"UINT8","shape":[1],"data":[1]}]}"#;
        assert!(decode(Bytes::from_static(as_json), None).unwrap_err().contains("binary tensor extension"));
    }

    #[test]
    fn error_answers_are_read_in_either_shape() {
        assert_eq!(message(br#"{"error":"unknown model 'x'"}"#), "unknown model 'x'");
        assert_eq!(message(br#"{"error":{"code":"overloaded","message":"busy"}}"#), "busy");
        assert_eq!(message(b"plain"), "plain");
    }
}
