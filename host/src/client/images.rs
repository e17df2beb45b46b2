//! `osprey client detect` and `classify`: each image uploaded in turn, its
//! answer printed as a table (or the server's JSON); one image failing does
//! not stop the others, but sets the exit code.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{content_type, read_file, Failure, Server};

/// A photo's answer comes in well under this, even on a busy CPU.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
pub enum Kind {
    Detect,
    Classify,
}

pub async fn run(server: &Server, path: &str, query: String, images: &[PathBuf], json: bool, kind: Kind) -> Result<(), Vec<Failure>> {
    let mut failures = Vec::new();
    for image in images {
        let name = image.display().to_string();
        let answer = match read_file(image).await {
            Ok(bytes) => server.post(&format!("{path}{query}"), content_type(image), bytes, TIMEOUT).await,
            Err(f) => Err(f),
        };
        match answer {
            Ok(mut answer) if json => {
                answer["file"] = Value::from(name);
                println!("{answer}");
            }
            Ok(answer) => match kind {
                Kind::Detect => print!("{}", detections_table(&name, &answer)),
                Kind::Classify => print!("{}", classes_table(&name, &answer)),
            },
            Err(Failure::Server(m)) => failures.push(Failure::Server(format!("{name}: {m}"))),
            Err(usage) => failures.push(usage),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// `dog.jpg: 3 objects (yolov5s, 98.2 ms)` then label, score and box per line.
pub fn detections_table(name: &str, answer: &Value) -> String {
    let dets = answer["detections"].as_array().map(Vec::as_slice).unwrap_or_default();
    let plural = if dets.len() == 1 { "object" } else { "objects" };
    let mut out = format!("{name}: {} {plural} ({})\n", dets.len(), model_and_time(answer));
    if dets.is_empty() {
        return out;
    }
    let width = label_width(dets);
    let _ = writeln!(out, "  {:<width$}  {:>5}  box (x1, y1, x2, y2)", "label", "score");
    for d in dets {
        let coords: Vec<String> = d["box"].as_array().map_or(Vec::new(), |b| b.iter().map(|v| format!("{:.0}", v.as_f64().unwrap_or(0.0))).collect());
        let _ = writeln!(out, "  {:<width$}  {:>5.3}  {}", label(d), d["score"].as_f64().unwrap_or(0.0), coords.join(", "));
    }
    out
}

/// `chelsea.png: efficientnet_lite3 (21.0 ms)` then label and score per class.
pub fn classes_table(name: &str, answer: &Value) -> String {
    let top = answer["top"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out = format!("{name}: {}\n", model_and_time(answer));
    let width = label_width(top);
    let _ = writeln!(out, "  {:<width$}  {:>5}", "label", "score");
    for c in top {
        let _ = writeln!(out, "  {:<width$}  {:>5.3}", label(c), c["score"].as_f64().unwrap_or(0.0));
    }
    out
}

fn label(v: &Value) -> &str {
    v["label"].as_str().unwrap_or("?")
}

fn label_width(rows: &[Value]) -> usize {
    rows.iter().map(|r| label(r).chars().count()).max().unwrap_or(0).max("label".len())
}

fn model_and_time(answer: &Value) -> String {
    let model = answer["model"].as_str().unwrap_or("model");
    match answer["timing_ms"]["total"].as_f64() {
        Some(ms) => format!("{model}, {ms:.1} ms"),
        None => model.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn detections_print_as_an_aligned_table() {
        let answer = json!({"model": "yolov5s", "timing_ms": {"total": 98.24},
            "detections": [{"label": "dog", "score": 0.9247, "box": [131.1, 224.3, 310.9, 546.1]},
                           {"label": "bicycle", "score": 0.5, "box": [1.0, 2.0, 3.0, 4.0]}]});
        let table = detections_table("dog.jpg", &answer);
        assert_eq!(
            table,
            "dog.jpg: 2 objects (yolov5s, 98.2 ms)\n  label    score  box (x1, y1, x2, y2)\n  dog      0.925  131, 224, 311, 546\n  bicycle  0.500  1, 2, 3, 4\n"
        );
    }

    #[test]
    fn classes_print_label_and_score() {
        let answer = json!({"model": "efficientnet_lite3", "top": [{"label": "Egyptian cat", "score": 0.8555}]});
        assert_eq!(classes_table("c.png", &answer), "c.png: efficientnet_lite3\n  label         score\n  Egyptian cat  0.856\n");
    }
}
