//! Constructors for [`StageError`], one per [`ErrorKind`].
//!
//! The host maps the kind to the HTTP status of the answer, so picking the
//! kind is picking who is to blame: the client (bad input), the route's
//! configuration (bad settings) or the model.

use crate::{ErrorKind, StageError};

impl StageError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StageError {
            kind,
            message: message.into(),
        }
    }

    /// The upload is not a decodable image (HTTP 400). `imaging.decode`
    /// already returns this; a stage that decodes on its own uses it.
    pub fn bad_image(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadImage, message)
    }

    /// The input cannot be used otherwise: missing, wrong tensor (HTTP 400).
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// The input is of a type this stage does not handle (HTTP 415).
    pub fn unsupported_type(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnsupportedType, message)
    }

    /// The input is larger than the stage allows (HTTP 413).
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    /// The stage's settings are wrong (HTTP 500: a configuration bug).
    pub fn bad_settings(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadSettings, message)
    }

    /// The model failed or gave outputs the stage cannot read (HTTP 500).
    pub fn model_failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ModelFailed, message)
    }

    /// Anything else (HTTP 500).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_the_kind() {
        let e = StageError::bad_settings("`conf`: out of range");
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert_eq!(e.message, "`conf`: out of range");
        assert_eq!(StageError::bad_input("x").kind, ErrorKind::BadInput);
        assert_eq!(StageError::bad_image("x").kind, ErrorKind::BadImage);
        assert_eq!(StageError::model_failed("x").kind, ErrorKind::ModelFailed);
    }
}
