//! `stego`: a stage that hides an ID invisibly in a photo, or reads it back.
//!
//! - [`mark`]: the watermark on RGB8 pixels: embedding and the blind check;
//! - [`pattern`]: the keyed +-1 pattern and which cells carry which bit;
//! - [`cells`]: the image on the mark's grid (cell means, texture, the
//!   content-removing high-pass, bilinear upsampling);
//! - [`ecc`]: the 32-bit ID's CRC-16 and convolutional code (soft Viterbi).
//!
//! The stage itself only moves pixels between the host and [`mark`]:
//!
//! - `embed` decodes the upload (or takes `frame.image`), marks it, and sets
//!   `frame.output` to the marked image, encoded as PNG or JPEG; it reports
//!   `"watermark": {"id": ..., "psnr_db": ...}`;
//! - `check` decodes the upload (or takes `frame.image`) and reports
//!   `"watermark": {"found": ..., "id": ..., "confidence": ..., ...}`.
//!
//! Settings: `{"mode": "embed"|"check", "id": 0..=4294967295 (embed only,
//! required; a missing or bad one is a `bad-input` error, as it comes from
//! the request's `?id=`), "format": "png"|"jpeg" (default png), "quality": 1..=100
//! (JPEG only, default 92), "strength": RMS amplitude in 8-bit levels
//! (default 2.9, PSNR about 38.8 dB), "key": a number or a text (default
//! [`mark::DEFAULT_KEY`]), "max_pixels": 40000000}`.

pub mod cells;
pub mod ecc;
pub mod mark;
pub mod pattern;

use osprey_plugin_sdk::settings::{check_range, parse, whole};
use osprey_plugin_sdk::{
    export_stage, imaging, take_image, Frame, Image, ImageFormat, Size, Stage, StageError,
};
use serde::Deserialize;

/// The name of the stage's field in the JSON answer.
const REPORT: &str = "watermark";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    mode: Mode,
    /// Checked by [`Settings::job`]: the ID comes from the request, so a bad
    /// one is the client's error, not the configuration's.
    #[serde(default)]
    id: Option<f64>,
    #[serde(default)]
    format: Format,
    #[serde(default = "Settings::default_quality", deserialize_with = "whole")]
    quality: u8,
    #[serde(default = "Settings::default_strength")]
    strength: f32,
    #[serde(default)]
    key: Option<Key>,
    #[serde(default = "Settings::default_max_pixels", deserialize_with = "whole")]
    max_pixels: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Embed,
    Check,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Png,
    Jpeg,
}

/// The pattern's key: a whole number (up to 2^53, what JSON carries
/// exactly) or any text, hashed to 64 bits.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Key {
    Number(#[serde(deserialize_with = "whole")] u64),
    Text(String),
}

impl Key {
    fn value(&self) -> u64 {
        match self {
            Key::Number(n) => *n,
            // FNV-1a: stable across builds and platforms.
            Key::Text(t) => t.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
            }),
        }
    }
}

impl Settings {
    fn default_quality() -> u8 {
        92
    }
    fn default_strength() -> f32 {
        mark::DEFAULT_STRENGTH
    }
    fn default_max_pixels() -> u64 {
        40_000_000
    }

    pub fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
        check_range("quality", s.quality, 1, 100)?;
        check_range("strength", s.strength, 0.1, 20.0)?;
        check_range("max_pixels", s.max_pixels, 1, u64::MAX)?;
        Ok(s)
    }

    fn key(&self) -> u64 {
        self.key.as_ref().map_or(mark::DEFAULT_KEY, Key::value)
    }

    /// What to do: embed needs a valid ID, check needs nothing more.
    fn job(&self) -> Result<Job, StageError> {
        match (self.mode, self.id) {
            (Mode::Check, _) => Ok(Job::Check),
            (Mode::Embed, None) => Err(StageError::bad_input(
                "watermark embed needs an `id`: a whole number 0..=4294967295 (e.g. ?id=1234)",
            )),
            (Mode::Embed, Some(v))
                if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) =>
            {
                Ok(Job::Embed { id: v as u32 })
            }
            (Mode::Embed, Some(v)) => Err(StageError::bad_input(format!(
                "watermark `id` = {v} is not a whole number in 0..=4294967295"
            ))),
        }
    }
}

/// A request's work, once its settings are checked.
#[derive(Debug, PartialEq)]
enum Job {
    Embed { id: u32 },
    Check,
}

struct Stego;

impl Stage for Stego {
    fn check(settings: &str) -> Result<(), StageError> {
        Settings::parse(settings).map(drop)
    }

    fn run(mut frame: Frame, settings: String) -> Result<Frame, StageError> {
        let s = Settings::parse(&settings)?;
        // Refuse a missing or bad ID before decoding anything.
        let job = s.job()?;
        let (image, kept) = source_image(&mut frame, s.max_pixels)?;
        let (width, height) = (image.width(), image.height());
        let mut rgb = imaging::pixels(&image);
        if rgb.len() as u64 != u64::from(width) * u64::from(height) * 3 {
            return Err(StageError::internal(format!(
                "imaging.pixels gave {} bytes for a {width}x{height} image",
                rgb.len()
            )));
        }
        frame.source = Some(Size { width, height });
        match job {
            Job::Embed { id } => {
                let done = mark::embed(&mut rgb, width, height, id, s.strength, s.key());
                let marked = imaging::from_pixels(width, height, &rgb)?;
                let format = match s.format {
                    Format::Png => ImageFormat::Png,
                    Format::Jpeg => ImageFormat::Jpeg,
                };
                frame.output = Some(imaging::encode(&marked, format, s.quality)?);
                frame.report.push((REPORT.into(), embed_report(id, &done)));
                // A later stage that reads the image sees the marked one.
                frame.image = kept.then_some(marked);
            }
            Job::Check => {
                let found = mark::check(&rgb, width, height, s.key());
                frame.report.push((REPORT.into(), check_report(&found)));
                frame.image = kept.then_some(image);
            }
        }
        Ok(frame)
    }
}

export_stage!(Stego);

/// The image to work on, and whether it came from (and goes back to)
/// `frame.image`; otherwise the upload is decoded and stays in the frame.
/// A kept image is held to `max_pixels` too.
fn source_image(frame: &mut Frame, max_pixels: u64) -> Result<(Image, bool), StageError> {
    let (image, kept) = take_image(frame, max_pixels, "no image in the request: upload one")?;
    let pixels = u64::from(image.width()) * u64::from(image.height());
    if kept && pixels > max_pixels {
        return Err(StageError::too_large(format!(
            "image of {pixels} pixels is over the stage's `max_pixels` ({max_pixels})"
        )));
    }
    Ok((image, kept))
}

pub fn embed_report(id: u32, done: &mark::Embedded) -> String {
    format!(
        "{{\"id\": {id}, \"psnr_db\": {}, \"grid\": {}}}",
        json_number(done.psnr_db, 2),
        done.grid
    )
}

/// `{"found": true, "id": 1234, "confidence": 0.93, "score": 0.87,
/// "bit_errors": 0.04}` (`"id": null` when nothing was found).
pub fn check_report(c: &mark::Check) -> String {
    let id = c.id.map_or_else(|| "null".to_string(), |id| id.to_string());
    format!(
        "{{\"found\": {}, \"id\": {id}, \"confidence\": {}, \"score\": {}, \"bit_errors\": {}}}",
        c.found,
        json_number(c.confidence.into(), 3),
        json_number(c.score.into(), 3),
        json_number(c.bit_errors.into(), 3),
    )
}

/// `v` rounded to `decimals`, or `null` where JSON has no number for it
/// (an unmarked image's PSNR is infinite).
fn json_number(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::ErrorKind;

    #[test]
    fn settings_take_defaults_and_check_ranges() {
        let s = Settings::parse(r#"{"mode": "embed", "id": 4294967295}"#).unwrap();
        assert_eq!(s.job().unwrap(), Job::Embed { id: u32::MAX });
        assert_eq!(s.format, Format::Png);
        assert_eq!(s.quality, 92);
        assert_eq!(s.strength, mark::DEFAULT_STRENGTH);
        assert_eq!(s.key(), mark::DEFAULT_KEY);
        assert_eq!(s.max_pixels, 40_000_000);
        let s = Settings::parse(r#"{"mode": "check", "format": "jpeg", "quality": 50.0}"#).unwrap();
        assert_eq!(
            (s.job().unwrap(), s.format, s.quality),
            (Job::Check, Format::Jpeg, 50)
        );
        for (json, field) in [
            (r#"{"mode": "check", "quality": 0}"#, "`quality`"),
            (r#"{"mode": "check", "strength": 0}"#, "`strength`"),
            (r#"{"mode": "check", "max_pixels": 0}"#, "`max_pixels`"),
            (r#"{"mode": "mark"}"#, "`mode`"),
            (r#"{"mode": "check", "format": "gif"}"#, "`format`"),
            (r#"{"mode": "check", "ids": 1}"#, "`ids`"),
            (r#"{"mode": "check", "key": -3}"#, "`key`"),
            ("{}", "`mode`"),
        ] {
            let e = Settings::parse(json).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadSettings, "{json}");
            assert!(e.message.contains(field), "{json}: {}", e.message);
        }
    }

    #[test]
    fn a_missing_or_bad_id_is_the_clients_error() {
        let job = |json: &str| Settings::parse(json).unwrap().job();
        assert_eq!(
            job(r#"{"mode": "embed", "id": 0}"#).unwrap(),
            Job::Embed { id: 0 }
        );
        assert_eq!(
            job(r#"{"mode": "embed", "id": 7.0}"#).unwrap(),
            Job::Embed { id: 7 }
        );
        for (json, why) in [
            (r#"{"mode": "embed"}"#, "needs an `id`"),
            (r#"{"mode": "embed", "id": null}"#, "needs an `id`"),
            (
                r#"{"mode": "embed", "id": 4294967296}"#,
                "4294967296 is not a whole number",
            ),
            (r#"{"mode": "embed", "id": -1}"#, "-1 is not a whole number"),
            (
                r#"{"mode": "embed", "id": 1.5}"#,
                "1.5 is not a whole number",
            ),
        ] {
            let e = job(json).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadInput, "{json}");
            assert!(e.message.contains(why), "{json}: {}", e.message);
        }
        // Check ignores an ID.
        assert_eq!(job(r#"{"mode": "check", "id": -1}"#).unwrap(), Job::Check);
    }

    #[test]
    fn keys_may_be_numbers_or_texts() {
        let key = |json: &str| Settings::parse(json).unwrap().key();
        assert_eq!(key(r#"{"mode": "check", "key": 42}"#), 42);
        let a = key(r#"{"mode": "check", "key": "secret"}"#);
        assert_eq!(a, key(r#"{"mode": "check", "key": "secret"}"#));
        assert_ne!(a, key(r#"{"mode": "check", "key": "Secret"}"#));
        assert_ne!(a, mark::DEFAULT_KEY);
    }

    #[test]
    fn reports_are_json() {
        let found = mark::Check {
            found: true,
            id: Some(1_234_567),
            score: 0.8765,
            confidence: 0.93,
            bit_errors: 0.041,
            grid: 96,
        };
        assert_eq!(
            check_report(&found),
            r#"{"found": true, "id": 1234567, "confidence": 0.930, "score": 0.877, "bit_errors": 0.041}"#
        );
        let absent = mark::Check {
            found: false,
            id: None,
            ..found
        };
        assert!(check_report(&absent).starts_with(r#"{"found": false, "id": null,"#));
        let done = mark::Embedded {
            psnr_db: 38.912,
            grid: 96,
        };
        assert_eq!(
            embed_report(7, &done),
            r#"{"id": 7, "psnr_db": 38.91, "grid": 96}"#
        );
        let untouched = mark::Embedded {
            psnr_db: f64::INFINITY,
            grid: 96,
        };
        assert!(embed_report(7, &untouched).contains(r#""psnr_db": null"#));
    }
}
