//! The protocol's GET answers: server metadata, health, model metadata and
//! model readiness. A model is ready as soon as it is in the snapshot: a
//! snapshot is only served once all its models are loaded.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::wire;
use crate::nn::model::Port;
use crate::nn::{Model, Registry};
use crate::http::respond::{json_response, Body};

/// The extensions of the protocol this server implements.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// What ONNX Runtime runs, in Triton's platform naming.
const PLATFORM: &str = "onnxruntime_onnx";

pub fn server() -> Response<Body> {
    ok(json!({ "name": "osprey", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS }))
}

pub fn live() -> Response<Body> {
    ok(json!({ "live": true }))
}

pub fn ready() -> Response<Body> {
    ok(json!({ "ready": true }))
}

pub fn model_ready(model: &Model) -> Response<Body> {
    let id = model.identity();
    ok(json!({ "name": id.name, "version": id.version, "ready": true }))
}

pub fn model(registry: &Registry, model: &Model) -> Response<Body> {
    ok(json!({
        "name": model.name(),
        "versions": versions(registry, model.name()),
        "platform": PLATFORM,
        "inputs": ports(model.inputs()),
        "outputs": ports(model.outputs()),
    }))
}

/// Every loaded version of the model, oldest first.
pub fn versions(registry: &Registry, name: &str) -> Vec<String> {
    registry.iter().filter(|m| m.name() == name).map(|m| m.identity().version.clone()).collect()
}

fn ports(ports: &[Port]) -> Vec<Value> {
    ports
        .iter()
        .map(|p| {
            // An element type outside the five this host moves: still shown, so
            // the client sees why its requests for that port are refused.
            let datatype = p.ty.map_or("UNSUPPORTED", wire::datatype);
            json!({ "name": p.name, "datatype": datatype, "shape": p.shape })
        })
        .collect()
}

fn ok(v: Value) -> Response<Body> {
    json_response(StatusCode::OK, &v)
}
