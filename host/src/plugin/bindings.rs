//! Host-side bindings of the `osprey:plugin/stage-only` world (`wit/`): what
//! every plugin of this line exports (`stage`), with every resource mapped
//! to the host type that backs it. The `settings` export of plugins built
//! for 0.1.1 and later is looked up by name (`check_settings`).

wasmtime::component::bindgen!({
    world: "osprey:plugin/stage-only",
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
