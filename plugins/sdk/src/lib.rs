//! Guest-side SDK for Osprey stage plugins.
//!
//! A plugin is one stage of a route's chain: it receives a [`Frame`] and the
//! stage's settings (JSON), and returns the frame for the next stage. This
//! crate holds the WIT bindings of the `osprey:plugin/plugin` world and the
//! logic every stage would otherwise repeat:
//!
//! - [`error`]: short constructors for [`StageError`], one per kind;
//! - [`settings`]: JSON settings into a serde struct, errors naming the field;
//! - [`geometry`]: `iou`, class-aware `nms`, `unplace` back to source pixels;
//! - [`nn`]: run a model through wasi-nn, read its outputs as `f32`/`u8`;
//! - [`labels`]: class names from the host's label files;
//! - [`testing`]: frames for a plugin's native unit tests (`FrameBuilder`);
//! - [`take_image`]: the image a stage works on, kept by an earlier stage or
//!   decoded from the upload.
//!
//! A plugin implements [`Stage`] and calls [`export_stage!`]:
//!
//! ```ignore
//! use osprey_plugin_sdk::{export_stage, Frame, Stage, StageError};
//!
//! struct Noop;
//! impl Stage for Noop {
//!     fn run(frame: Frame, _settings: String) -> Result<Frame, StageError> {
//!         Ok(frame)
//!     }
//!     // Optional: the host asks before serving a route, so a misspelt
//!     // setting fails `osprey check` and the reload, not a request.
//!     fn check(settings: &str) -> Result<(), StageError> {
//!         osprey_plugin_sdk::settings::parse::<serde_json::Map<_, _>>(settings).map(drop)
//!     }
//! }
//! export_stage!(Noop);
//! ```

// The generated code names this crate by its path (`runtime_path` and
// `default_bindings_module` below), so that plugins need no direct dependency
// on wit-bindgen; this alias makes the same path resolve inside the SDK.
extern crate self as osprey_plugin_sdk;

pub mod error;
pub mod geometry;
pub mod labels;
pub mod nn;
pub mod settings;
pub mod testing;

/// The raw bindings of the world, for what the re-exports below leave out.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "osprey:plugin/plugin",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "osprey_plugin_sdk::bindings",
        runtime_path: "osprey_plugin_sdk::__rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

/// A stage: what a plugin implements, and [`export_stage!`] exports.
pub trait Stage {
    /// Runs the stage on `frame` with the route's `settings` (a JSON object,
    /// overrides applied): the frame for the next stage, or why not.
    fn run(frame: Frame, settings: String) -> Result<Frame, StageError>;

    /// Whether `settings` (the route's, no overrides) suit this stage; the
    /// host asks at `osprey check` and before serving a config or a reload,
    /// and reports a refusal with the config's line and column. Parse them
    /// as `run` does (`settings::parse` and the range checks); the default
    /// accepts anything. No models can be loaded here.
    fn check(settings: &str) -> Result<(), StageError> {
        let _ = settings;
        Ok(())
    }
}
pub use bindings::osprey::plugin::host::{self, Level};
pub use bindings::osprey::plugin::imaging::{
    self, Channels, DecodeLimits, Fit, ImageFormat, Layout, TensorSpec,
};
pub use bindings::osprey::plugin::types::{
    Bbox, Blob, Branch, ClassScore, Detection, ErrorKind, Frame, Image, NamedTensor, Placement,
    Size, StageError,
};
pub use bindings::wasi::nn::tensor::{Tensor, TensorType};

/// The image a stage works on: `frame.image` when an earlier stage kept one
/// (taken out of the frame: `true`, hand it back), else the upload decoded
/// natively within `max_pixels` (the upload stays in the frame: `false`).
/// `missing` is the `bad-input` message when the frame has neither.
pub fn take_image(
    frame: &mut Frame,
    max_pixels: u64,
    missing: &str,
) -> Result<(Image, bool), StageError> {
    if let Some(image) = frame.image.take() {
        return Ok((image, true));
    }
    let blob = frame
        .input
        .as_ref()
        .ok_or_else(|| StageError::bad_input(missing))?;
    Ok((imaging::decode(blob, DecodeLimits { max_pixels })?, false))
}

/// A frame with nothing in it: for tests, and for stages that start one.
pub fn empty_frame() -> Frame {
    Frame {
        input: None,
        image: None,
        source: None,
        placement: None,
        tensors: Vec::new(),
        model: None,
        detections: None,
        classes: None,
        branches: Vec::new(),
        report: Vec::new(),
        output: None,
    }
}

/// Exports a type implementing [`Stage`] as the plugin's one stage.
///
/// Call it once, at the root of the plugin crate.
///
/// Only wasm builds export anything: a native build of a plugin (its unit
/// tests, or its `rlib` used by the host's benchmark) has no component host,
/// and the export names (`osprey:plugin/stage@0.1.1#run`) are not valid
/// native linker symbols.
#[macro_export]
macro_rules! export_stage {
    ($ty:ident) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            impl $crate::bindings::exports::osprey::plugin::stage::Guest for $ty {
                fn run(frame: $crate::Frame, settings: String) -> Result<$crate::Frame, $crate::StageError> {
                    <$ty as $crate::Stage>::run(frame, settings)
                }
            }
            impl $crate::bindings::exports::osprey::plugin::settings::Guest for $ty {
                fn check(settings: String) -> Result<(), String> {
                    <$ty as $crate::Stage>::check(&settings).map_err(|e| e.message)
                }
            }
            $crate::bindings::__export_world!($ty with_types_in $crate::bindings);
        };
        // Keeps the stage type "used" natively, where nothing exports it.
        #[cfg(not(target_family = "wasm"))]
        const _: (
            fn($crate::Frame, String) -> Result<$crate::Frame, $crate::StageError>,
            fn(&str) -> Result<(), $crate::StageError>,
        ) = (<$ty as $crate::Stage>::run, <$ty as $crate::Stage>::check);
    };
}
