//! A stage's settings: the JSON object the host passes to `run`.
//!
//! Settings are the route's configuration (with per-request overrides the
//! route allows already applied), so a mistake in them is a configuration
//! bug: every error here is of kind `bad-settings`, and names the field, so
//! that whoever wrote the route can find it.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::StageError;

/// Parses `json` into `T`. An empty string counts as `{}`, so a stage whose
/// fields all have defaults runs without any settings.
///
/// Declare `T` with `#[serde(deny_unknown_fields)]`: a misspelt setting is
/// then an error instead of a silently ignored line.
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, StageError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json ends with where in the JSON text it stopped ("at line 1
        // column 34"): text the author never wrote, beside the config's own
        // line and column the host reports.
        let inner = inner.rsplit_once(" at line ").map_or(inner.as_str(), |(message, _)| message);
        // At the top level the path is "." and serde's message already says
        // what is wrong (e.g. "unknown field `cof`, expected one of ...").
        if path == "." {
            StageError::bad_settings(format!("settings: {inner}"))
        } else {
            StageError::bad_settings(format!("settings: `{path}`: {inner}"))
        }
    })
}

/// Checks that setting `field` lies in `lo..=hi`.
pub fn check_range<T>(field: &str, value: T, lo: T, hi: T) -> Result<T, StageError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    // Written so that NaN fails too.
    if value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(StageError::bad_settings(format!(
            "settings: `{field}` = {value} is out of range {lo}..={hi}"
        )))
    }
}

/// Deserializes a whole number that may arrive written as a float.
///
/// Serde refuses `50.0` for an integer field, yet a float is what a route's
/// config holds when it says `max_det = 50.0`, or what an override carries
/// when the config's value is a float. Use it on every integer setting:
/// `#[serde(deserialize_with = "osprey_plugin_sdk::settings::whole")]`.
pub fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    // Integers beyond 2^53 would already have lost precision as floats.
    const EXACT: f64 = (1u64 << 53) as f64;
    let v = f64::deserialize(d)?;
    if !(v.fract() == 0.0 && (0.0..=EXACT).contains(&v)) {
        return Err(D::Error::custom(format!(
            "expected a whole number, found {v}"
        )));
    }
    T::try_from(v as u64)
        .map_err(|_| D::Error::custom(format!("{v} is too large for this setting")))
}

/// [`whole`] for an optional setting (`null` or absent: `None`); use with
/// `#[serde(default, deserialize_with = "...")]`.
pub fn whole_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct Whole<T: TryFrom<u64>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<Whole<T>>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(default = "half")]
        conf: f32,
        #[serde(default)]
        outputs: Outputs,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outputs {
        #[serde(default, deserialize_with = "whole")]
        boxes: usize,
        #[serde(default, deserialize_with = "whole_opt")]
        cap: Option<u8>,
    }

    fn half() -> f32 {
        0.5
    }

    #[test]
    fn empty_settings_take_the_defaults() {
        let want = Demo {
            conf: 0.5,
            outputs: Outputs::default(),
        };
        assert_eq!(parse::<Demo>("").unwrap(), want);
        assert_eq!(parse::<Demo>("{}").unwrap(), want);
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let e = parse::<Demo>(r#"{"conf": "high"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert!(e.message.contains("`conf`"), "{}", e.message);
    }

    #[test]
    fn a_nested_field_is_named_by_its_path() {
        let e = parse::<Demo>(r#"{"outputs": {"boxes": -1}}"#).unwrap_err();
        assert!(e.message.contains("`outputs.boxes`"), "{}", e.message);
    }

    #[test]
    fn an_unknown_field_is_named() {
        let e = parse::<Demo>(r#"{"cof": 0.3}"#).unwrap_err();
        assert!(e.message.contains("`cof`"), "{}", e.message);
    }

    #[test]
    fn whole_numbers_may_come_as_floats() {
        let d: Demo = parse(r#"{"outputs": {"boxes": 3.0, "cap": 7}}"#).unwrap();
        assert_eq!(
            d.outputs,
            Outputs {
                boxes: 3,
                cap: Some(7)
            }
        );
        let d: Demo = parse(r#"{"outputs": {"cap": null}}"#).unwrap();
        assert_eq!(d.outputs.cap, None);
        for (json, why) in [
            (
                r#"{"outputs": {"boxes": 2.5}}"#,
                "expected a whole number, found 2.5",
            ),
            (
                r#"{"outputs": {"boxes": -1}}"#,
                "expected a whole number, found -1",
            ),
            (r#"{"outputs": {"cap": 300}}"#, "300 is too large"),
        ] {
            let e = parse::<Demo>(json).unwrap_err();
            assert!(
                e.message.contains("`outputs.") && e.message.contains(why),
                "{json}: {}",
                e.message
            );
        }
    }

    #[test]
    fn ranges_are_checked_and_nan_refused() {
        assert_eq!(check_range("conf", 0.25, 0.0, 1.0).unwrap(), 0.25);
        let e = check_range("conf", 1.5, 0.0, 1.0).unwrap_err();
        assert_eq!(e.message, "settings: `conf` = 1.5 is out of range 0..=1");
        assert!(check_range("conf", f32::NAN, 0.0, 1.0).is_err());
    }
}
