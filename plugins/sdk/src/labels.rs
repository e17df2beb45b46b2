//! Class names, from the label files the host loaded with each model.
//!
//! The host owns the labels so that a model and its names are configured in
//! one place; a class without a name still gets one ("class_<id>") so that
//! clients always have a string to show.

use crate::{host, Detection};

/// The label of `class_id` of `model`, or "class_<id>" when it has none.
pub fn label(model: &str, class_id: u32) -> String {
    host::label(model, class_id).unwrap_or_else(|| fallback(class_id))
}

/// Fills in the labels of `dets`, asking the host once per distinct class.
pub fn label_detections(model: &str, dets: &mut [Detection]) {
    let mut known: Vec<(u32, String)> = Vec::new();
    for d in dets {
        let name = match known.iter().find(|(id, _)| *id == d.class_id) {
            Some((_, name)) => name.clone(),
            None => {
                let name = label(model, d.class_id);
                known.push((d.class_id, name.clone()));
                name
            }
        };
        d.label = name;
    }
}

/// The label given to a class the model's labels file does not name.
pub fn fallback(class_id: u32) -> String {
    format!("class_{class_id}")
}
