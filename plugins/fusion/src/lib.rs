//! `fusion`: a stage that merges what a route's branches detected (e.g. a
//! visible-light and an infrared photo of one scene, `POST /v1/fuse`) into
//! one list of detections.
//!
//! The host runs each branch through its own chain and hands the results
//! over in `frame.branches`, each with its source size and its detections in
//! that source's pixels. This stage fuses them by one of two methods:
//!
//! - [`rule`]: seed 002's rule: keep the primary branch's boxes, add another
//!   branch's box when it overlaps every primary box at most `iou_thr`;
//! - [`wbf`]: Weighted Boxes Fusion, computed as `ensemble-boxes` 1.0.9 does;
//!
//! with [`settings`] choosing and checking them. The answer is in the
//! primary branch's pixels (a branch of another size is scaled to it, so the
//! branches must show the same field of view), sorted by score, and each box
//! names the branches it came from in `sources`. `frame.branches` is passed
//! on untouched, for a later stage that shows each view.

pub mod rule;
pub mod settings;
pub mod wbf;

use std::collections::BTreeMap;

use osprey_plugin_sdk::{export_stage, Bbox, Branch, Detection, Frame, Size, Stage, StageError};

pub use settings::{Method, Settings};

struct Fusion;

impl Stage for Fusion {
    fn check(settings: &str) -> Result<(), StageError> {
        Settings::parse(settings).map(drop)
    }

    fn run(frame: Frame, settings: String) -> Result<Frame, StageError> {
        fuse_frame(frame, &Settings::parse(&settings)?)
    }
}

export_stage!(Fusion);

/// Fuses `frame.branches` into `frame.detections`; sets `source` to the
/// primary branch's size, `model` to the branches' models, and adds a
/// `fusion` report (method, primary, boxes in and out).
pub fn fuse_frame(mut frame: Frame, s: &Settings) -> Result<Frame, StageError> {
    let branches = &frame.branches;
    let primary = find_primary(branches, &s.primary)?;
    let target = source_of(&branches[primary])?;
    let dets = match &s.method {
        Method::Rule(p) => fuse_rule(branches, primary, target, p)?,
        Method::Wbf { params, weights } => fuse_wbf(
            branches,
            target,
            &branch_weights(branches, weights)?,
            params,
        )?,
    };
    let report = report(branches, s, dets.len());
    frame.model = Some(model_name(branches));
    frame.source = Some(target);
    frame.detections = Some(dets);
    frame.report.push(("fusion".into(), report));
    Ok(frame)
}

/// The index of the primary branch, once the route is known to have at
/// least two branches. The host builds the branches from the route's
/// configuration, so what is wrong here is the configuration.
fn find_primary(branches: &[Branch], primary: &str) -> Result<usize, StageError> {
    match branches {
        [] => {
            return Err(StageError::bad_settings(
                "fusion: this route has no branches: give it some, e.g. \
                 `branches = { visible = \"/v1/detect\", infrared = \"/v1/detect\" }`",
            ))
        }
        [only] => {
            return Err(StageError::bad_settings(format!(
                "fusion: needs at least two branches to fuse, and this route has one (\"{}\"): \
                 add another to its `branches`",
                only.name
            )))
        }
        _ => {}
    }
    branches
        .iter()
        .position(|b| b.name == primary)
        .ok_or_else(|| {
            StageError::bad_settings(format!(
            "settings: `primary` = \"{primary}\" names no branch of this route (its branches: {}): \
             set `primary` to one of them",
            names(branches)
        ))
        })
}

/// Seed 002's rule on every branch scaled to the primary's pixels.
fn fuse_rule(
    branches: &[Branch],
    primary: usize,
    target: Size,
    p: &rule::Params,
) -> Result<Vec<Detection>, StageError> {
    let scaled = branches
        .iter()
        .map(|b| to_pixels_of(b, target))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs: Vec<rule::Input<'_>> = branches
        .iter()
        .zip(&scaled)
        .map(|(b, dets)| rule::Input {
            name: &b.name,
            detections: dets,
        })
        .collect();
    Ok(rule::fuse(&inputs, primary, p))
}

/// Each branch's weight (1 unless the settings name it); a weight for a
/// branch the route does not have is a mistake worth reporting.
fn branch_weights(
    branches: &[Branch],
    weights: &BTreeMap<String, f64>,
) -> Result<Vec<f64>, StageError> {
    if let Some(name) = weights
        .keys()
        .find(|n| !branches.iter().any(|b| b.name == **n))
    {
        return Err(StageError::bad_settings(format!(
            "settings: `weights.{name}` names no branch of this route (its branches: {})",
            names(branches)
        )));
    }
    Ok(branches
        .iter()
        .map(|b| weights.get(&b.name).copied().unwrap_or(1.0))
        .collect())
}

/// The branch's source size; a branch without one (or of zero size) cannot
/// be placed on the others.
fn source_of(b: &Branch) -> Result<Size, StageError> {
    match b.source {
        Some(s) if s.width > 0 && s.height > 0 => Ok(s),
        Some(s) => Err(StageError::bad_input(format!(
            "fusion: branch \"{}\" has an empty source image ({}x{})",
            b.name, s.width, s.height
        ))),
        None => Err(StageError::bad_settings(format!(
            "fusion: branch \"{}\" has no source size: its chain must prepare the image and \
             detect (e.g. image-prep, then yolo)",
            b.name
        ))),
    }
}

/// The branch's detections in pixels of a source of size `to`.
fn to_pixels_of(b: &Branch, to: Size) -> Result<Vec<Detection>, StageError> {
    if b.detections.is_empty() {
        return Ok(Vec::new());
    }
    let from = source_of(b)?;
    check_finite(b)?;
    if (from.width, from.height) == (to.width, to.height) {
        return Ok(b.detections.clone());
    }
    let sx = to.width as f32 / from.width as f32;
    let sy = to.height as f32 / from.height as f32;
    Ok(b.detections
        .iter()
        .map(|d| Detection {
            box_: Bbox {
                x1: d.box_.x1 * sx,
                y1: d.box_.y1 * sy,
                x2: d.box_.x2 * sx,
                y2: d.box_.y2 * sy,
            },
            ..d.clone()
        })
        .collect())
}

/// WBF on boxes normalised by each branch's own size, mapped back onto the
/// primary's pixels.
fn fuse_wbf(
    branches: &[Branch],
    target: Size,
    weights: &[f64],
    p: &wbf::Params,
) -> Result<Vec<Detection>, StageError> {
    let mut models = Vec::with_capacity(branches.len());
    for b in branches {
        if b.detections.is_empty() {
            models.push(Vec::new());
            continue;
        }
        let Size { width, height } = source_of(b)?;
        check_finite(b)?;
        let (w, h) = (f64::from(width), f64::from(height));
        models.push(
            b.detections
                .iter()
                .map(|d| wbf::InBox {
                    label: d.class_id,
                    score: f64::from(d.score),
                    coords: [
                        f64::from(d.box_.x1) / w,
                        f64::from(d.box_.y1) / h,
                        f64::from(d.box_.x2) / w,
                        f64::from(d.box_.y2) / h,
                    ],
                })
                .collect::<Vec<_>>(),
        );
    }
    let (tw, th) = (f64::from(target.width), f64::from(target.height));
    let fused = wbf::fuse(&models, weights, p);
    Ok(fused
        .into_iter()
        .map(|f| {
            let lead = f.members[0];
            let mut from: Vec<usize> = f.members.iter().map(|m| m.model).collect();
            from.sort_unstable();
            from.dedup();
            let [x1, y1, x2, y2] = f.coords;
            Detection {
                class_id: f.label,
                label: branches[lead.model].detections[lead.index].label.clone(),
                score: f.score as f32,
                box_: Bbox {
                    x1: (x1 * tw) as f32,
                    y1: (y1 * th) as f32,
                    x2: (x2 * tw) as f32,
                    y2: (y2 * th) as f32,
                },
                sources: from.into_iter().map(|i| branches[i].name.clone()).collect(),
            }
        })
        .collect())
}

/// Refuses NaN or infinite boxes and scores, which no ordering or overlap
/// can make sense of.
fn check_finite(b: &Branch) -> Result<(), StageError> {
    let bad = b.detections.iter().position(|d| {
        let v = [d.score, d.box_.x1, d.box_.y1, d.box_.x2, d.box_.y2];
        !v.iter().all(|x| x.is_finite())
    });
    match bad {
        Some(i) => Err(StageError::bad_input(format!(
            "fusion: branch \"{}\": detection {i} has a box or score that is not a finite number",
            b.name
        ))),
        None => Ok(()),
    }
}

/// `fusion(yolov5s+yolov5s)`: each branch's model, or its name if unknown.
fn model_name(branches: &[Branch]) -> String {
    let parts: Vec<&str> = branches
        .iter()
        .map(|b| b.model.as_deref().unwrap_or(&b.name))
        .collect();
    format!("fusion({})", parts.join("+"))
}

/// `"visible", "infrared"`, for messages.
fn names(branches: &[Branch]) -> String {
    let quoted: Vec<String> = branches.iter().map(|b| format!("\"{}\"", b.name)).collect();
    quoted.join(", ")
}

/// The `fusion` report: `{"method": "wbf", "primary": "visible",
/// "inputs": {"visible": 5, "infrared": 3}, "detections": 6}`, the inputs in
/// branch order.
fn report(branches: &[Branch], s: &Settings, out: usize) -> String {
    let json = |v: &str| serde_json::to_string(v).expect("a string always serialises");
    let inputs: Vec<String> = branches
        .iter()
        .map(|b| format!("{}: {}", json(&b.name), b.detections.len()))
        .collect();
    format!(
        "{{\"method\": \"{}\", \"primary\": {}, \"inputs\": {{{}}}, \"detections\": {out}}}",
        s.method.name(),
        json(&s.primary),
        inputs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::ErrorKind;

    fn det(class_id: u32, label: &str, score: f32, [x1, y1, x2, y2]: [f32; 4]) -> Detection {
        Detection {
            class_id,
            label: label.into(),
            score,
            box_: Bbox { x1, y1, x2, y2 },
            sources: Vec::new(),
        }
    }

    fn branch(name: &str, size: Option<(u32, u32)>, detections: Vec<Detection>) -> Branch {
        Branch {
            name: name.into(),
            source: size.map(|(width, height)| Size { width, height }),
            model: Some("yolov5s".into()),
            detections,
        }
    }

    fn frame(branches: Vec<Branch>) -> Frame {
        Frame {
            branches,
            ..osprey_plugin_sdk::empty_frame()
        }
    }

    fn run(branches: Vec<Branch>, settings: &str) -> Result<Frame, StageError> {
        <Fusion as Stage>::run(frame(branches), settings.into())
    }

    /// A visible 640x480 photo and an infrared 320x240 one of the same scene.
    fn scene() -> Vec<Branch> {
        vec![
            branch(
                "visible",
                Some((640, 480)),
                vec![det(0, "person", 0.9, [100.0, 100.0, 200.0, 300.0])],
            ),
            branch(
                "infrared",
                Some((320, 240)),
                vec![
                    // The same person, at half the resolution.
                    det(0, "person", 0.6, [50.0, 50.0, 100.0, 150.0]),
                    // Someone only the infrared camera sees.
                    det(0, "person", 0.8, [250.0, 20.0, 300.0, 120.0]),
                ],
            ),
        ]
    }

    fn boxes(f: &Frame) -> Vec<(f32, [f32; 4], Vec<&str>)> {
        let dets = f.detections.as_ref().unwrap();
        dets.iter()
            .map(|d| {
                let b = d.box_;
                let r = |v: f32| (v * 1000.0).round() / 1000.0;
                let srcs = d.sources.iter().map(String::as_str).collect();
                (r(d.score), [r(b.x1), r(b.y1), r(b.x2), r(b.y2)], srcs)
            })
            .collect()
    }

    #[test]
    fn the_rule_adds_what_the_primary_missed_in_its_pixels() {
        let f = run(scene(), r#"{"method": "rule"}"#).unwrap();
        assert_eq!(
            boxes(&f),
            vec![
                (
                    0.9,
                    [100.0, 100.0, 200.0, 300.0],
                    vec!["visible", "infrared"]
                ),
                (0.8, [500.0, 40.0, 600.0, 240.0], vec!["infrared"]),
            ]
        );
        assert_eq!(f.source.map(|s| (s.width, s.height)), Some((640, 480)));
        assert_eq!(f.model.as_deref(), Some("fusion(yolov5s+yolov5s)"));
        assert_eq!(f.branches.len(), 2, "branches are passed on");
        assert_eq!(
            f.report,
            vec![(
                "fusion".to_string(),
                r#"{"method": "rule", "primary": "visible", "inputs": {"visible": 1, "infrared": 2}, "detections": 2}"#
                    .to_string()
            )]
        );
        let v: serde_json::Value = serde_json::from_str(&f.report[0].1).unwrap();
        assert_eq!(v["inputs"]["infrared"], 2);
    }

    #[test]
    fn wbf_fuses_across_sizes_and_weights_by_branch_name() {
        let f = run(
            scene(),
            r#"{"method": "wbf", "weights": {"visible": 3}, "conf_type": "max"}"#,
        )
        .unwrap();
        // The person both see: identical boxes once normalised, so the
        // fused box is theirs; max: 0.9 * 3 / 3. The other: 0.8 * 1 / 3.
        assert_eq!(
            boxes(&f),
            vec![
                (
                    0.9,
                    [100.0, 100.0, 200.0, 300.0],
                    vec!["visible", "infrared"]
                ),
                (0.267, [500.0, 40.0, 600.0, 240.0], vec!["infrared"]),
            ]
        );
        assert_eq!(f.detections.as_ref().unwrap()[0].label, "person");
        assert!(f.report[0].1.starts_with(r#"{"method": "wbf""#));
    }

    #[test]
    fn the_primary_sets_the_pixels_of_the_answer() {
        let f = run(scene(), r#"{"method": "wbf", "primary": "infrared"}"#).unwrap();
        assert_eq!(f.source.map(|s| (s.width, s.height)), Some((320, 240)));
        // avg: (0.9 + 0.6) / 2 for the pair, 0.8 / 2 for the lone box.
        assert_eq!(
            boxes(&f),
            vec![
                (
                    0.75,
                    [50.0, 50.0, 100.0, 150.0],
                    vec!["visible", "infrared"]
                ),
                (0.4, [250.0, 20.0, 300.0, 120.0], vec!["infrared"]),
            ]
        );
    }

    #[test]
    fn a_route_without_two_branches_is_a_configuration_error() {
        let e = run(Vec::new(), "").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert!(e.message.contains("no branches"), "{}", e.message);
        let e = run(scene()[..1].to_vec(), "").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert!(e.message.contains("at least two branches"), "{}", e.message);
        assert!(e.message.contains("\"visible\""), "{}", e.message);
    }

    #[test]
    fn a_missing_primary_or_weighted_branch_is_named() {
        let e = run(scene(), r#"{"primary": "thermal"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert!(
            e.message.contains("`primary` = \"thermal\"")
                && e.message.contains("\"visible\", \"infrared\""),
            "{}",
            e.message
        );
        let e = run(scene(), r#"{"method": "wbf", "weights": {"thermal": 2}}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert!(e.message.contains("`weights.thermal`"), "{}", e.message);
    }

    #[test]
    fn branches_without_a_size_or_with_bad_numbers_are_refused() {
        let mut b = scene();
        b[1].source = None;
        let e = run(b, "").unwrap_err();
        assert!(
            e.message.contains("branch \"infrared\" has no source size"),
            "{}",
            e.message
        );
        // A branch that found nothing needs no size.
        let mut b = scene();
        b[1] = branch("infrared", None, Vec::new());
        assert_eq!(run(b, "").unwrap().detections.unwrap().len(), 1);
        let mut b = scene();
        b[1].detections[0].score = f32::NAN;
        let e = run(b, r#"{"method": "wbf"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
        assert!(e.message.contains("detection 0"), "{}", e.message);
    }
}
