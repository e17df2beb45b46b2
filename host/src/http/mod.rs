//! The floor of the HTTP side, under every entry point (server, oip, video):
//! what an answer's body is, the errors a request can end in, the one map from
//! results and errors to HTTP, and reading an upload. Nothing here imports a room above.
//!
//! - `respond`: the response body type and the one place that turns results and errors into HTTP.
//! - `error`: `ServeError` (and `VideoError`), what a request can end in.
//! - `auth`: the bearer token of the admin API and the streams.
//! - `body`: request body → the upload a chain starts from, within a limit.

pub mod auth;
pub mod body;
pub mod error;
pub mod respond;

pub use error::{ServeError, StreamError, VideoError};
pub use respond::Body;
