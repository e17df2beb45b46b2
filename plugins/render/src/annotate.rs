//! What goes on the picture: boxes with label tags for detections, a top-k
//! panel for classes; pure functions over an RGB buffer, so that tests and
//! benchmarks run them without a host.
//!
//! Every box is drawn in its class's palette colour between two thin halos,
//! black or white, whichever contrasts more with that colour: wherever the
//! colour melts into the photo (yellow on snow), the halo does not.
//! Line width and text size grow with the image, so a tag reads the same on
//! a 320-pixel thumbnail and on a 4K frame.

use osprey_plugin_sdk::{Bbox, ClassScore, Detection};

use crate::draw::{ink_on, Canvas, Rect, Rgb, SizeMismatch, BLACK, WHITE};
use crate::font::{self, CAP_H, GLYPH_H};

/// How to annotate, from the stage's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Style {
    /// Write tags (detections) and the class panel; `false` draws boxes only.
    pub labels: bool,
    /// Add the score to each tag or panel line.
    pub scores: bool,
    /// Box outline in pixels; 0 picks one from the image size.
    pub line_width: u32,
    /// Classes listed in the panel.
    pub top_k: usize,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            labels: true,
            scores: true,
            line_width: 0,
            top_k: 5,
        }
    }
}

/// Class colours, indexed by class id (modulo the length). Neighbours differ
/// in hue and alternate light and dark, as consecutive ids often share a
/// picture (person, bicycle, car).
pub const PALETTE: [Rgb; 20] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 200, 20],
    [0, 110, 210],
    [245, 130, 48],
    [145, 30, 180],
    [70, 220, 230],
    [170, 0, 90],
    [180, 235, 60],
    [150, 85, 30],
    [250, 160, 200],
    [0, 128, 128],
    [200, 170, 255],
    [128, 0, 0],
    [150, 255, 190],
    [110, 110, 0],
    [255, 215, 160],
    [0, 0, 128],
    [255, 90, 255],
    [90, 90, 90],
];

/// The colour of class `class_id`.
pub fn class_colour(class_id: u32) -> Rgb {
    PALETTE[class_id as usize % PALETTE.len()]
}

/// Outline width for an image: about 1/300 of its shorter side, at least 2.
pub fn auto_line_width(width: u32, height: u32) -> u32 {
    (width.min(height) / 300).max(2)
}

/// Font scale for an image: 1 up to ~600 pixels on the shorter side, then one
/// more per 400 (3 at 1080p, 5 at 4K), so text keeps its share of the image.
pub fn font_scale(width: u32, height: u32) -> u32 {
    ((width.min(height) + 200) / 400).max(1)
}

/// Sizes for one image, worked out once per call.
struct Metrics {
    line: i64,
    halo: i64,
    scale: u32,
    unit: i64,
}

impl Metrics {
    fn new(width: u32, height: u32, style: &Style) -> Self {
        let line = match style.line_width {
            0 => auto_line_width(width, height),
            w => w,
        };
        let scale = font_scale(width, height);
        Metrics {
            line: line.into(),
            // Thin: a separator, not a second outline.
            halo: (i64::from(line) / 4).clamp(1, 4),
            scale,
            unit: scale.into(),
        }
    }
}

/// Draws `dets` onto `rgb` (`width` x `height`, RGB8): boxes, then tags, so
/// that no outline crosses a tag. The highest score is drawn last, on top.
pub fn annotate(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    dets: &[Detection],
    style: &Style,
) -> Result<(), SizeMismatch> {
    let mut canvas = Canvas::new(rgb, width, height)?;
    let m = Metrics::new(width, height, style);
    let image = Rect::at(0, 0, width.into(), height.into());
    // Boxes that miss the image entirely (or have NaN corners) are left out:
    // a tag pinned to the border would point at nothing.
    let visible: Vec<(&Detection, Rect)> = dets
        .iter()
        .filter_map(|d| Some((d, pixel_box(&d.box_)?)))
        .filter(|(_, r)| overlaps(*r, image))
        .collect();
    for &(d, r) in visible.iter().rev() {
        draw_box(&mut canvas, r, class_colour(d.class_id), &m);
    }
    if style.labels {
        for &(d, r) in visible.iter().rev() {
            draw_tag(&mut canvas, r, d, style, &m);
        }
    }
    Ok(())
}

/// The pixels a box covers: corners rounded, ordered, at least one pixel
/// wide and high; `None` when a corner is NaN.
fn pixel_box(b: &Bbox) -> Option<Rect> {
    // Far enough outside any image, and far from overflowing an i64.
    const FAR: f32 = (1u32 << 30) as f32;
    let px = |v: f32| (!v.is_nan()).then(|| v.round().clamp(-FAR, FAR) as i64);
    let (x1, y1, x2, y2) = (px(b.x1)?, px(b.y1)?, px(b.x2)?, px(b.y2)?);
    let (x0, y0) = (x1.min(x2), y1.min(y2));
    Some(Rect {
        x0,
        y0,
        x1: x1.max(x2).max(x0 + 1),
        y1: y1.max(y2).max(y0 + 1),
    })
}

fn overlaps(a: Rect, b: Rect) -> bool {
    a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1
}

/// The outline inside the box's edges, with a halo ring on either side.
fn draw_box(canvas: &mut Canvas, r: Rect, colour: Rgb, m: &Metrics) {
    let halo = ink_on(colour);
    canvas.outline(r.grow(m.halo), m.halo, halo);
    canvas.outline(r.grow(-m.line), m.halo, halo);
    canvas.outline(r, m.line, colour);
}

/// The tag's text: label and score, as the style asks.
fn tag_text(label: &str, class_id: u32, score: f32, style: &Style) -> String {
    let name = if label.is_empty() {
        format!("class {class_id}")
    } else {
        label.to_owned()
    };
    if style.scores {
        format!("{name} {score:.2}")
    } else {
        name
    }
}

/// The label tag: on the box's top edge, outside it, or inside it where the
/// box touches the top of the image; kept within the image. Its halo ring
/// lies on the box's halo, so the two read as one shape.
fn draw_tag(canvas: &mut Canvas, r: Rect, d: &Detection, style: &Style, m: &Metrics) {
    let text = tag_text(&d.label, d.class_id, d.score, style);
    let (w, h) = (
        (i64::from(font::text_width(&text)) + 4) * m.unit,
        i64::from(GLYPH_H + 2) * m.unit,
    );
    let (img_w, img_h) = (i64::from(canvas.width()), i64::from(canvas.height()));
    let above = r.y0 - m.halo - h;
    let y = if above >= 0 {
        above
    } else {
        r.y0 + m.line + m.halo
    };
    // `max` after `min`: a tag wider than the image starts at its left edge.
    let tag = Rect::at(r.x0.min(img_w - w).max(0), y.min(img_h - h).max(0), w, h);
    let fill = class_colour(d.class_id);
    let ink = ink_on(fill);
    canvas.outline(tag.grow(m.halo), m.halo, ink);
    canvas.fill(tag, fill);
    canvas.text(tag.x0 + 2 * m.unit, tag.y0 + m.unit, &text, m.scale, ink);
}

/// Opacity of the panel's black backing: white text over it keeps at least
/// 7:1 contrast even on a white photo.
const PANEL_ALPHA: u8 = 170;

/// Draws the top `style.top_k` of `classes` as a panel in the top-left
/// corner: a colour swatch and "label score" per line, white on darkened
/// photo. Nothing without labels (it is all text).
pub fn class_panel(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    classes: &[ClassScore],
    style: &Style,
) -> Result<(), SizeMismatch> {
    let mut canvas = Canvas::new(rgb, width, height)?;
    let shown = &classes[..classes.len().min(style.top_k)];
    if !style.labels || shown.is_empty() {
        return Ok(());
    }
    let m = Metrics::new(width, height, style);
    let u = m.unit;
    let lines: Vec<String> = shown
        .iter()
        .map(|c| tag_text(&c.label, c.class_id, c.score, style))
        .collect();
    let text_w = lines.iter().map(|l| font::text_width(l)).max().unwrap_or(0);
    let (pad, line_h, swatch) = (2 * u, i64::from(GLYPH_H + 2) * u, i64::from(CAP_H) * u);
    let text_x = pad + swatch + 2 * u;
    let panel = Rect::at(
        pad,
        pad,
        text_x + i64::from(text_w) * u + pad,
        2 * pad + line_h * lines.len() as i64 - 2 * u,
    );
    canvas.blend(panel, BLACK, PANEL_ALPHA);
    for ((i, line), class) in (0..).zip(&lines).zip(shown) {
        let y = panel.y0 + pad + i * line_h;
        canvas.fill(
            Rect::at(panel.x0 + pad, y, swatch, swatch),
            class_colour(class.class_id),
        );
        canvas.text(panel.x0 + text_x, y, line, m.scale, WHITE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draw::contrast;

    const GREY: Rgb = [128, 128, 128];

    fn det(class_id: u32, label: &str, score: f32, [x1, y1, x2, y2]: [f32; 4]) -> Detection {
        Detection {
            class_id,
            label: label.into(),
            score,
            box_: Bbox { x1, y1, x2, y2 },
            sources: Vec::new(),
        }
    }

    fn style(labels: bool, scores: bool, line_width: u32) -> Style {
        Style {
            labels,
            scores,
            line_width,
            ..Style::default()
        }
    }

    /// A `w` x `h` image of `colour` with `dets` drawn on it.
    fn drawn(w: u32, h: u32, colour: Rgb, dets: &[Detection], style: &Style) -> Vec<u8> {
        let mut rgb = colour.repeat((w * h) as usize);
        annotate(&mut rgb, w, h, dets, style).unwrap();
        rgb
    }

    fn at(rgb: &[u8], w: u32, x: u32, y: u32) -> Rgb {
        let i = ((y * w + x) * 3) as usize;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    }

    /// The pixels that differ from `background`, as (x, y).
    fn changed(rgb: &[u8], w: u32, background: Rgb) -> Vec<(u32, u32)> {
        (0..(rgb.len() / 3) as u32)
            .filter(|&i| at(rgb, w, i % w, i / w) != background)
            .map(|i| (i % w, i / w))
            .collect()
    }

    /// The columns of row `y` painted in `colour`, as a range.
    fn run_of(rgb: &[u8], w: u32, y: u32, colour: Rgb) -> std::ops::Range<u32> {
        let xs: Vec<u32> = (0..w).filter(|&x| at(rgb, w, x, y) == colour).collect();
        xs[0]..xs[xs.len() - 1] + 1
    }

    #[test]
    fn the_outline_and_its_halos_sit_on_the_box_edges() {
        let d = det(3, "car", 0.5, [20.0, 30.0, 80.0, 70.0]);
        let rgb = drawn(200, 100, GREY, &[d], &style(false, true, 3));
        let (colour, halo) = (class_colour(3), ink_on(class_colour(3)));
        let row: Vec<Rgb> = (17..26).map(|x| at(&rgb, 200, x, 50)).collect();
        // grey, outer halo at 19, outline 20..23, inner halo at 23, grey.
        assert_eq!(
            row,
            [GREY, GREY, halo, colour, colour, colour, halo, GREY, GREY]
        );
        let row: Vec<Rgb> = (75..83).map(|x| at(&rgb, 200, x, 50)).collect();
        assert_eq!(row, [GREY, halo, colour, colour, colour, halo, GREY, GREY]);
        let col: Vec<Rgb> = (28..35).map(|y| at(&rgb, 200, 50, y)).collect();
        assert_eq!(col, [GREY, halo, colour, colour, colour, halo, GREY]);
        let col: Vec<Rgb> = (66..72).map(|y| at(&rgb, 200, 50, y)).collect();
        assert_eq!(col, [halo, colour, colour, colour, halo, GREY]);
        // Nothing beyond the halos.
        assert!(changed(&rgb, 200, GREY)
            .iter()
            .all(|&(x, y)| (19..81).contains(&x) && (29..71).contains(&y)));
    }

    #[test]
    fn boxes_stand_out_on_white_and_on_black() {
        for background in [WHITE, BLACK] {
            for class_id in 0..PALETTE.len() as u32 {
                let d = det(class_id, "x", 0.5, [50.0, 50.0, 150.0, 150.0]);
                let rgb = drawn(200, 200, background, &[d], &style(false, true, 0));
                // Across the left edge: outer halo, outline, inner halo.
                let best = (45..56)
                    .map(|x| contrast(at(&rgb, 200, x, 100), background))
                    .fold(0.0, f64::max);
                assert!(
                    best >= 4.5,
                    "class {class_id} on {background:?}: {best:.2}:1"
                );
            }
        }
    }

    #[test]
    fn tag_text_contrasts_with_every_palette_colour() {
        for class_id in 0..PALETTE.len() as u32 {
            let d = det(class_id, "person", 0.87, [100.0, 100.0, 200.0, 200.0]);
            let rgb = drawn(320, 240, GREY, &[d], &style(true, true, 0));
            // Scale 1: the tag is 11 rows tall, on the box's outer halo.
            let mut inside: Vec<Rgb> = (88..99)
                .flat_map(|y| (100..160).map(move |x| (x, y)))
                .map(|(x, y)| at(&rgb, 320, x, y))
                .collect();
            inside.sort();
            inside.dedup();
            let fill = class_colour(class_id);
            assert_eq!(inside.len(), 2, "class {class_id}: fill and ink only");
            assert!(inside.contains(&fill), "class {class_id}");
            let ink = inside.iter().find(|&&c| c != fill).copied().unwrap();
            assert!(
                contrast(ink, fill) >= 4.5,
                "class {class_id}: {ink:?} on {fill:?}"
            );
        }
    }

    #[test]
    fn palette_colours_are_distinct() {
        for (i, a) in PALETTE.iter().enumerate() {
            for b in &PALETTE[i + 1..] {
                let d: i32 = a
                    .iter()
                    .zip(b)
                    .map(|(&p, &q)| (p as i32 - q as i32).abs())
                    .sum();
                assert!(d >= 90, "{a:?} and {b:?} are too alike");
            }
        }
        assert_eq!(class_colour(PALETTE.len() as u32 + 2), class_colour(2));
    }

    #[test]
    fn without_labels_only_the_box_is_drawn() {
        let d = det(0, "person", 0.9, [100.0, 100.0, 200.0, 200.0]);
        let rgb = drawn(
            320,
            240,
            GREY,
            std::slice::from_ref(&d),
            &style(false, true, 0),
        );
        let (colour, halo) = (class_colour(0), ink_on(class_colour(0)));
        for (x, y) in changed(&rgb, 320, GREY) {
            assert!(
                (99..201).contains(&x) && (99..201).contains(&y),
                "({x}, {y})"
            );
            assert!([colour, halo].contains(&at(&rgb, 320, x, y)));
        }
        // With labels, the tag appears above the box.
        let rgb = drawn(320, 240, GREY, &[d], &style(true, true, 0));
        assert!(changed(&rgb, 320, GREY).iter().any(|&(_, y)| y < 95));
    }

    #[test]
    fn without_scores_the_tag_holds_the_label_only() {
        let s = |scores| style(true, scores, 0);
        assert_eq!(tag_text("person", 0, 0.866, &s(true)), "person 0.87");
        assert_eq!(tag_text("person", 0, 0.866, &s(false)), "person");
        assert_eq!(tag_text("", 7, 0.5, &s(true)), "class 7 0.50");
        // Measured on the picture: the tag's fill spans the text plus 4 units.
        let d = det(1, "person", 0.87, [100.0, 100.0, 200.0, 200.0]);
        for (scores, chars) in [(true, 11), (false, 6)] {
            let rgb = drawn(320, 240, GREY, std::slice::from_ref(&d), &s(scores));
            let tag = run_of(&rgb, 320, 88, class_colour(1));
            assert_eq!(tag, 100..100 + chars * 6 - 1 + 4, "scores: {scores}");
        }
    }

    #[test]
    fn tags_stay_inside_the_image() {
        // At the top edge: the tag goes inside the box. At the right edge:
        // it moves left to fit.
        let d = det(1, "person", 0.87, [290.0, 0.0, 320.0, 50.0]);
        let rgb = drawn(320, 240, GREY, &[d], &style(true, true, 0));
        let tag = run_of(&rgb, 320, 5, class_colour(1));
        assert_eq!(tag, 320 - 69..320);
        assert!(changed(&rgb, 320, GREY).iter().all(|&(_, y)| y <= 51));
    }

    #[test]
    fn text_grows_with_the_image() {
        let sizes = [
            (320, 240),
            (640, 480),
            (1280, 720),
            (1920, 1080),
            (3840, 2160),
        ];
        let scales: Vec<u32> = sizes.iter().map(|&(w, h)| font_scale(w, h)).collect();
        assert_eq!(scales, [1, 1, 2, 3, 5]);
        assert_eq!(auto_line_width(320, 240), 2);
        assert_eq!(auto_line_width(3840, 2160), 7);
        // On the picture: the tag's height follows the scale.
        let tag_height = |w: u32, h: u32| {
            let d = det(
                2,
                "dog",
                0.5,
                [w as f32 / 2.0, h as f32 / 2.0, w as f32, h as f32],
            );
            let rgb = drawn(w, h, GREY, &[d], &style(true, true, 1));
            let x = w / 2 + 1;
            (0..h)
                .filter(|&y| at(&rgb, w, x, y) == class_colour(2))
                .count() as u32
        };
        // Tag rows plus the box's top and bottom edges (1 px each).
        assert_eq!(tag_height(320, 240), 11 + 2);
        assert_eq!(tag_height(3840, 2160), 11 * 5 + 2);
    }

    #[test]
    fn odd_boxes_never_panic_nor_write_outside() {
        let (w, h) = (64u32, 48u32);
        let boxes = [
            [-100.0, -100.0, -10.0, -10.0],
            [70.0, 0.0, 90.0, 48.0],
            [0.0, 0.0, 64.0, 48.0],
            [-1e30, -1e30, 1e30, 1e30],
            [f32::NEG_INFINITY, 10.0, f32::INFINITY, 20.0],
            [f32::NAN, 1.0, 2.0, 3.0],
            [10.0, 10.0, 10.0, 10.0],
            [40.0, 30.0, 20.0, 5.0],
            [63.2, 47.2, 63.4, 47.4],
            [-0.4, -0.4, 0.4, 0.4],
        ];
        let dets: Vec<Detection> = (0..)
            .zip(&boxes)
            .map(|(i, &b)| det(i, "thing", 0.5, b))
            .collect();
        let mut buf = vec![7u8; (w * h * 3) as usize + 64];
        let (image, guard) = buf.split_at_mut((w * h * 3) as usize);
        annotate(image, w, h, &dets, &style(true, true, 0)).unwrap();
        assert!(guard.iter().all(|&b| b == 7));
        // Each box alone: the ones wholly outside, or NaN, draw nothing.
        for (i, d) in dets.iter().enumerate() {
            let rgb = drawn(w, h, GREY, std::slice::from_ref(d), &style(true, true, 0));
            assert_eq!(
                changed(&rgb, w, GREY).is_empty(),
                [0, 1, 5].contains(&i),
                "box {i}"
            );
        }
        // A box on the image's edges keeps its outline there.
        let rgb = drawn(w, h, GREY, &dets[2..3], &style(false, true, 0));
        assert_eq!(at(&rgb, w, 0, 24), class_colour(2));
        assert_eq!(at(&rgb, w, 63, 24), class_colour(2));
        // Degenerate images.
        annotate(&mut [], 0, 0, &dets, &Style::default()).unwrap();
        annotate(&mut [0; 3], 1, 1, &dets, &Style::default()).unwrap();
        assert!(annotate(&mut [0; 5], 1, 1, &dets, &Style::default()).is_err());
    }

    #[test]
    fn a_crowded_1080p_frame_is_drawn() {
        let dets: Vec<Detection> = (0..200)
            .map(|i| {
                let (x, y) = ((i % 20) as f32 * 96.0, (i / 20) as f32 * 108.0);
                det(i, "traffic light", 0.5, [x, y, x + 120.0, y + 150.0])
            })
            .collect();
        let rgb = drawn(1920, 1080, GREY, &dets, &Style::default());
        assert!(changed(&rgb, 1920, GREY).len() > 100_000);
    }

    fn classes(n: u32) -> Vec<ClassScore> {
        (0..n)
            .map(|i| ClassScore {
                class_id: i,
                label: format!("class{i}"),
                score: 1.0 / (i + 2) as f32,
            })
            .collect()
    }

    #[test]
    fn the_class_panel_lists_the_top_k_readably() {
        let (w, h) = (320u32, 240u32);
        let panel_rows = |top_k: usize, background: Rgb| {
            let mut rgb = background.repeat((w * h) as usize);
            let s = Style {
                top_k,
                ..Style::default()
            };
            class_panel(&mut rgb, w, h, &classes(8), &s).unwrap();
            // Column 2 is the panel's left padding: darkened, no text.
            let rows: Vec<u32> = (0..h)
                .filter(|&y| at(&rgb, w, 2, y) != background)
                .collect();
            // White inside the panel is text (the panel is 78 pixels wide).
            let white_text = rows
                .iter()
                .flat_map(|&y| (2..80).map(move |x| (x, y)))
                .filter(|&(x, y)| at(&rgb, w, x, y) == WHITE)
                .count();
            (rows, at(&rgb, w, 2, 2), white_text)
        };
        let (rows, backing, text) = panel_rows(3, WHITE);
        assert_eq!(rows, (2..2 + 2 + 3 * 11).collect::<Vec<_>>());
        assert!(contrast(WHITE, backing) >= 7.0, "{backing:?}");
        assert!(text > 0);
        assert_eq!(panel_rows(5, BLACK).0.len(), 0, "black stays black");
        assert_eq!(panel_rows(5, GREY).0.len(), 2 + 5 * 11);
        assert_eq!(panel_rows(20, GREY).0.len(), 2 + 8 * 11);
    }

    #[test]
    fn the_class_panel_is_text_so_labels_false_hides_it() {
        let mut rgb = GREY.repeat(100 * 100);
        class_panel(&mut rgb, 100, 100, &classes(3), &style(false, true, 0)).unwrap();
        class_panel(&mut rgb, 100, 100, &[], &Style::default()).unwrap();
        assert!(changed(&rgb, 100, GREY).is_empty());
    }
}
