//! The wasi-nn interface (`wasi:nn@0.2.0-rc-2024-10-28`) as plugins see it:
//! the plugin floor's side of it, over the models of `crate::nn` below.
//!
//! Our own host implementation rather than wasmtime-wasi-nn's: tensors stay
//! host objects that stages hand to each other, models are the snapshot's
//! preloaded pools (`load-by-name`), and `compute` runs without a global lock.
//! Guests may not load model bytes of their own (`load` is refused): what a
//! route runs is what the operator configured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Resource, ResourceTable};

use super::bindings::wasi::nn::{errors, graph, inference, tensor};
use crate::nn::{ElemType, Model, NnError, Registry, Tensor};

/// A graph handle: a model of the snapshot.
pub struct Graph(Arc<Model>);

/// An execution context: the model plus the inputs of one `compute`.
pub struct ExecContext(Arc<Model>);

/// A wasi-nn error handed to the guest.
pub struct ErrorRes {
    code: errors::ErrorCode,
    message: String,
}

/// Per-store wasi-nn state: the models this request may reach, and the time
/// spent inside them (reported as `timing_ms.inference`).
pub struct NnCtx {
    registry: Arc<Registry>,
    pub inference: Duration,
    /// `(name, version)` of the last model computed, for the answer.
    pub last_model: Option<(String, String)>,
    /// The request's deadline: a request still queued then is dropped unrun.
    pub deadline: Option<Instant>,
    /// Set when a model refused the request for load (full queue, deadline in
    /// the queue) or a remote model's server could not run it: the host
    /// answers 429/504/503/502 whatever the plugin made of it.
    pub refused: Option<NnError>,
    /// The running stage's plugin and the models its policy lets it load by
    /// name; `None`: any model of the snapshot.
    pub allowed: Option<(String, Vec<String>)>,
}

impl NnCtx {
    pub fn new(registry: Arc<Registry>, deadline: Option<Instant>) -> Self {
        NnCtx { registry, inference: Duration::ZERO, last_model: None, deadline, refused: None, allowed: None }
    }
}

/// What the wasi-nn host functions borrow from the store.
pub struct NnView<'a> {
    pub ctx: &'a mut NnCtx,
    pub table: &'a mut ResourceTable,
}

pub struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

type Fallible<T> = wasmtime::Result<Result<T, Resource<ErrorRes>>>;

impl NnView<'_> {
    fn fail<T>(&mut self, code: errors::ErrorCode, message: String) -> Fallible<T> {
        Ok(Err(self.table.push(ErrorRes { code, message })?))
    }
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        _builder: Vec<graph::GraphBuilder>,
        _encoding: graph::GraphEncoding,
        _target: graph::ExecutionTarget,
    ) -> Fallible<Resource<Graph>> {
        let msg = "plugins cannot load model bytes; use load-by-name with a model from the host config";
        self.fail(errors::ErrorCode::Security, msg.into())
    }

    fn load_by_name(&mut self, name: String) -> Fallible<Resource<Graph>> {
        // `name@N` pins a version of `name`: the policy names models, not versions.
        let base = name.split_once('@').map_or(name.as_str(), |(n, _)| n);
        if let Some((plugin, models)) = self.ctx.allowed.as_ref().filter(|(_, models)| !models.iter().any(|m| m == base)) {
            let msg = format!("plugin '{plugin}' may not load model '{name}': [plugins.{plugin}] models = [{}]", models.join(", "));
            return self.fail(errors::ErrorCode::Security, msg);
        }
        match self.ctx.registry.get(&name) {
            Some(model) => Ok(Ok(self.table.push(Graph(model.clone()))?)),
            None => self.fail(errors::ErrorCode::NotFound, NnError::NotFound(name).to_string()),
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(&mut self, g: Resource<Graph>) -> Fallible<Resource<ExecContext>> {
        let model = self.table.get(&g)?.0.clone();
        Ok(Ok(self.table.push(ExecContext(model))?))
    }

    fn drop(&mut self, g: Resource<Graph>) -> wasmtime::Result<()> {
        self.table.delete(g)?;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    fn compute(
        &mut self,
        ctx: Resource<ExecContext>,
        inputs: Vec<inference::NamedTensor>,
    ) -> Fallible<Vec<inference::NamedTensor>> {
        let model = self.table.get(&ctx)?.0.clone();
        let mut named = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            named.push((name, self.table.delete(t)?));
        }
        let started = Instant::now();
        let result = model.run_until(named, self.ctx.deadline);
        self.ctx.inference += started.elapsed();
        let id = model.identity();
        self.ctx.last_model = Some((id.name.clone(), id.version.clone()));
        match result {
            Ok(outputs) => {
                let mut out = Vec::with_capacity(outputs.len());
                for (name, t) in outputs {
                    out.push((name, self.table.push(t)?));
                }
                Ok(Ok(out))
            }
            Err(e @ NnError::InvalidTensor(_)) => self.fail(errors::ErrorCode::InvalidArgument, e.to_string()),
            Err(e @ (NnError::QueueFull { .. } | NnError::Deadline { .. } | NnError::Unavailable { .. } | NnError::RemoteFailed { .. })) => {
                let code = if matches!(e, NnError::Deadline { .. }) { errors::ErrorCode::Timeout } else { errors::ErrorCode::RuntimeError };
                self.ctx.refused = Some(e.clone());
                self.fail(code, e.to_string())
            }
            Err(e) => self.fail(errors::ErrorCode::RuntimeError, e.to_string()),
        }
    }

    fn drop(&mut self, ctx: Resource<ExecContext>) -> wasmtime::Result<()> {
        self.table.delete(ctx)?;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dims: tensor::TensorDimensions,
        ty: tensor::TensorType,
        data: tensor::TensorData,
    ) -> wasmtime::Result<Resource<Tensor>> {
        // The constructor cannot return an error: a malformed tensor traps the
        // guest with the reason, which the host reports as a plugin failure.
        let elem = elem_of(ty).ok_or_else(|| wasmtime::format_err!("tensor type {ty:?} is not supported"))?;
        let t = Tensor::from_bytes(dims, elem, &data).map_err(|e| wasmtime::format_err!("{e}"))?;
        Ok(self.table.push(t)?)
    }

    fn dimensions(&mut self, t: Resource<Tensor>) -> wasmtime::Result<tensor::TensorDimensions> {
        Ok(self.table.get(&t)?.dims.clone())
    }

    fn ty(&mut self, t: Resource<Tensor>) -> wasmtime::Result<tensor::TensorType> {
        Ok(type_of(self.table.get(&t)?.ty()))
    }

    fn data(&mut self, t: Resource<Tensor>) -> wasmtime::Result<tensor::TensorData> {
        Ok(self.table.get(&t)?.to_bytes())
    }

    fn drop(&mut self, t: Resource<Tensor>) -> wasmtime::Result<()> {
        self.table.delete(t)?;
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, e: Resource<ErrorRes>) -> wasmtime::Result<errors::ErrorCode> {
        Ok(self.table.get(&e)?.code)
    }

    fn data(&mut self, e: Resource<ErrorRes>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.message.clone())
    }

    fn drop(&mut self, e: Resource<ErrorRes>) -> wasmtime::Result<()> {
        self.table.delete(e)?;
        Ok(())
    }
}

pub fn elem_of(ty: tensor::TensorType) -> Option<ElemType> {
    use tensor::TensorType as T;
    Some(match ty {
        T::Fp32 => ElemType::F32,
        T::Fp64 => ElemType::F64,
        T::U8 => ElemType::U8,
        T::I32 => ElemType::I32,
        T::I64 => ElemType::I64,
        T::Fp16 | T::Bf16 => return None,
    })
}

pub fn type_of(ty: ElemType) -> tensor::TensorType {
    use tensor::TensorType as T;
    match ty {
        ElemType::F32 => T::Fp32,
        ElemType::F64 => T::Fp64,
        ElemType::U8 => T::U8,
        ElemType::I32 => T::I32,
        ElemType::I64 => T::I64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::Host as _;

    /// What the guest reads from a refused `load-by-name`: the code and message.
    fn load(allowed: Option<(&str, &[&str])>, name: &str) -> (errors::ErrorCode, String) {
        let mut ctx = NnCtx::new(Arc::new(Registry::default()), None);
        ctx.allowed = allowed.map(|(p, models)| (p.to_string(), models.iter().map(|m| m.to_string()).collect()));
        let mut table = ResourceTable::new();
        let mut view = NnView { ctx: &mut ctx, table: &mut table };
        let err = view.load_by_name(name.into()).unwrap().expect_err("the registry is empty: every load fails");
        let e = table.get(&err).unwrap();
        (e.code, e.message.clone())
    }

    #[test]
    fn a_plugin_may_load_only_the_models_its_policy_names() {
        let policy = Some(("zone", &["yolov5s"][..]));
        let (code, message) = load(policy, "ssd_mobilenet_v2");
        assert_eq!(code, errors::ErrorCode::Security);
        assert_eq!(message, "plugin 'zone' may not load model 'ssd_mobilenet_v2': [plugins.zone] models = [yolov5s]");
        // Allowed names (and pinned versions of them) pass the policy and reach
        // the registry, which has no such model here: not-found, not security.
        for allowed in ["yolov5s", "yolov5s@2"] {
            assert_eq!(load(policy, allowed).0, errors::ErrorCode::NotFound, "{allowed}");
        }
        assert_eq!(load(None, "ssd_mobilenet_v2").0, errors::ErrorCode::NotFound, "no policy: any model");
    }
}
