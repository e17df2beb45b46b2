//! The stage's settings, in two steps: the JSON as written ([`Raw`], every
//! field optional, unknown ones refused), then [`Settings`], where the
//! method is an enum that carries only the settings it uses.
//!
//! ```json
//! {"method": "rule", "primary": "visible", "iou_thr": 0.75, "class_aware": false}
//! {"method": "wbf", "primary": "visible", "iou_thr": 0.55, "skip_box_thr": 0.0,
//!  "conf_type": "avg", "allows_overflow": false, "weights": {"visible": 2, "infrared": 1}}
//! ```
//!
//! A setting of the other method is an error rather than silently ignored:
//! `conf_type` on a rule route is a route that does not do what its author
//! thinks.

use std::collections::BTreeMap;

use osprey_plugin_sdk::settings::{check_range, parse};
use osprey_plugin_sdk::StageError;
use serde::Deserialize;

use crate::{rule, wbf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    method: MethodName,
    #[serde(default = "default_primary")]
    primary: String,
    iou_thr: Option<f64>,
    class_aware: Option<bool>,
    skip_box_thr: Option<f64>,
    conf_type: Option<wbf::ConfType>,
    allows_overflow: Option<bool>,
    weights: Option<BTreeMap<String, f64>>,
}

fn default_primary() -> String {
    "visible".into()
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum MethodName {
    /// The seed's rule (the seed is where this stage comes from).
    #[default]
    Rule,
    Wbf,
}

/// Validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The branch whose boxes the rule keeps, and whose pixels the answer is in.
    pub primary: String,
    pub method: Method,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Rule(rule::Params),
    Wbf {
        params: wbf::Params,
        /// Weights by branch name; a branch not named weighs 1.
        weights: BTreeMap<String, f64>,
    },
}

impl Method {
    /// The name used in settings and in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Rule(_) => "rule",
            Method::Wbf { .. } => "wbf",
        }
    }
}

impl Settings {
    pub fn parse(json: &str) -> Result<Self, StageError> {
        let raw: Raw = parse(json)?;
        if raw.primary.is_empty() {
            return Err(StageError::bad_settings(
                "settings: `primary` is empty: name the branch whose boxes lead (e.g. \"visible\")",
            ));
        }
        let method = match raw.method {
            MethodName::Rule => rule_params(&raw)?,
            MethodName::Wbf => wbf_params(&raw)?,
        };
        Ok(Settings {
            primary: raw.primary,
            method,
        })
    }
}

fn rule_params(raw: &Raw) -> Result<Method, StageError> {
    let foreign = [
        ("skip_box_thr", raw.skip_box_thr.is_some()),
        ("conf_type", raw.conf_type.is_some()),
        ("allows_overflow", raw.allows_overflow.is_some()),
        ("weights", raw.weights.is_some()),
    ];
    refuse_foreign("rule", "wbf", &foreign)?;
    let d = rule::Params::default();
    let iou_thr = check_range(
        "iou_thr",
        raw.iou_thr.unwrap_or(f64::from(d.iou_thr)),
        0.0,
        1.0,
    )?;
    Ok(Method::Rule(rule::Params {
        iou_thr: iou_thr as f32,
        class_aware: raw.class_aware.unwrap_or(d.class_aware),
    }))
}

fn wbf_params(raw: &Raw) -> Result<Method, StageError> {
    refuse_foreign("wbf", "rule", &[("class_aware", raw.class_aware.is_some())])?;
    let d = wbf::Params::default();
    let params = wbf::Params {
        iou_thr: check_range("iou_thr", raw.iou_thr.unwrap_or(d.iou_thr), 0.0, 1.0)?,
        skip_box_thr: check_range(
            "skip_box_thr",
            raw.skip_box_thr.unwrap_or(d.skip_box_thr),
            0.0,
            1.0,
        )?,
        conf_type: raw.conf_type.unwrap_or(d.conf_type),
        allows_overflow: raw.allows_overflow.unwrap_or(d.allows_overflow),
    };
    let weights = raw.weights.clone().unwrap_or_default();
    for (name, &w) in &weights {
        // Written so that NaN fails too; a weight of 0 would divide by 0.
        if !(w > 0.0 && w.is_finite()) {
            return Err(StageError::bad_settings(format!(
                "settings: `weights.{name}` = {w}: a weight must be a positive number"
            )));
        }
    }
    Ok(Method::Wbf { params, weights })
}

/// Refuses the settings of `other` on a route whose method is `method`.
fn refuse_foreign(method: &str, other: &str, fields: &[(&str, bool)]) -> Result<(), StageError> {
    match fields.iter().find(|(_, given)| *given) {
        Some((field, _)) => Err(StageError::bad_settings(format!(
            "settings: `{field}` is a setting of method \"{other}\", and this stage's method \
             is \"{method}\": remove it, or set `method = \"{other}\"`"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::ErrorKind;

    fn err(json: &str) -> String {
        let e = Settings::parse(json).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings, "{json}");
        e.message
    }

    #[test]
    fn defaults_are_the_seeds_rule() {
        let s = Settings::parse("").unwrap();
        assert_eq!(s.primary, "visible");
        assert_eq!(
            s.method,
            Method::Rule(rule::Params {
                iou_thr: 0.75,
                class_aware: false
            })
        );
    }

    #[test]
    fn wbf_takes_the_reference_defaults_and_its_own_settings() {
        let s = Settings::parse(r#"{"method": "wbf"}"#).unwrap();
        assert_eq!(
            s.method,
            Method::Wbf {
                params: wbf::Params::default(),
                weights: BTreeMap::new()
            }
        );
        let s = Settings::parse(
            r#"{"method": "wbf", "primary": "ir", "iou_thr": 0.6, "skip_box_thr": 0.1,
                "conf_type": "box_and_model_avg", "weights": {"visible": 2, "ir": 0.5}}"#,
        )
        .unwrap();
        let Method::Wbf { params, weights } = s.method else {
            panic!("not wbf")
        };
        assert_eq!(s.primary, "ir");
        assert_eq!((params.iou_thr, params.skip_box_thr), (0.6, 0.1));
        assert_eq!(params.conf_type, wbf::ConfType::BoxAndModelAvg);
        assert_eq!(weights["visible"], 2.0);
        assert_eq!(weights["ir"], 0.5);
    }

    #[test]
    fn the_routes_of_config_osprey_toml_parse() {
        let rule = r#"{"method": "rule", "primary": "visible", "iou_thr": 0.75}"#;
        assert!(matches!(
            Settings::parse(rule).unwrap().method,
            Method::Rule(_)
        ));
        let wbf = r#"{"method": "wbf", "primary": "visible", "iou_thr": 0.55, "skip_box_thr": 0.0,
                      "conf_type": "avg", "weights": {"visible": 2.0, "infrared": 1.0}}"#;
        assert!(matches!(
            Settings::parse(wbf).unwrap().method,
            Method::Wbf { .. }
        ));
    }

    #[test]
    fn settings_of_the_other_method_are_refused() {
        let m = err(r#"{"method": "rule", "conf_type": "max"}"#);
        assert!(
            m.contains("`conf_type` is a setting of method \"wbf\""),
            "{m}"
        );
        let m = err(r#"{"weights": {"visible": 2}}"#);
        assert!(m.contains("`weights`"), "{m}");
        let m = err(r#"{"method": "wbf", "class_aware": true}"#);
        assert!(
            m.contains("`class_aware` is a setting of method \"rule\""),
            "{m}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        assert!(err(r#"{"method": "nms"}"#).contains("`method`"));
        assert!(err(r#"{"iou_thr": 1.5}"#).contains("`iou_thr` = 1.5"));
        assert!(err(r#"{"method": "wbf", "skip_box_thr": -0.1}"#).contains("`skip_box_thr`"));
        assert!(err(r#"{"method": "wbf", "conf_type": "mean"}"#).contains("`conf_type`"));
        let m = err(r#"{"method": "wbf", "weights": {"infrared": 0}}"#);
        assert!(m.contains("`weights.infrared` = 0"), "{m}");
        assert!(err(r#"{"primary": ""}"#).contains("`primary` is empty"));
        assert!(err(r#"{"iou": 0.5}"#).contains("`iou`"));
    }
}
