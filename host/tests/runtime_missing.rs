//! When the ONNX Runtime library is not where it is looked for, the error
//! says where it looked and how to get it. (Its own test binary: the runtime
//! is loaded once per process.)

#[test]
fn missing_runtime_library_says_how_to_get_it() {
    std::env::set_var("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so");
    let err = osprey::nn::runtime::environment().expect_err("no library there").to_string();
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    assert!(err.contains("make setup") && err.contains("ORT_DYLIB_PATH"), "{err}");
}
