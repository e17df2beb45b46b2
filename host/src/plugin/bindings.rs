//! Host-side bindings of the `osprey:plugin/plugin` world (`wit/`), with
//! every resource mapped to the host type that backs it.

wasmtime::component::bindgen!({
    world: "osprey:plugin/plugin",
    path: "../wit",
    with: {
        "wasi:nn/graph.graph": crate::plugin::wasi_nn::Graph,
        "wasi:nn/tensor.tensor": crate::nn::Tensor,
        "wasi:nn/inference.graph-execution-context": crate::plugin::wasi_nn::ExecContext,
        "wasi:nn/errors.error": crate::plugin::wasi_nn::ErrorRes,
        "osprey:plugin/types.blob": crate::plugin::Blob,
        "osprey:plugin/types.image": crate::imaging::Image,
    },
    imports: { default: trappable },
});
