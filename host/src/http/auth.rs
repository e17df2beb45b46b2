//! The bearer token that guards the admin API and the streams API.

use hyper::header::{HeaderMap, AUTHORIZATION};

use super::ServeError;

/// Whether `headers` carry `Authorization: Bearer <token>`; no token
/// configured: the guarded API is off (404), as if it did not exist.
pub fn bearer(token: &Option<String>, headers: &HeaderMap) -> Result<(), ServeError> {
    let Some(token) = token else { return Err(ServeError::NotFound) };
    let given = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if crate::config::same_secret(given, token) {
        Ok(())
    } else {
        Err(ServeError::Unauthorized)
    }
}
