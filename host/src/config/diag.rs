//! Config errors: each with file, line, column and a hint, all reported at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// Errors of the config layer.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("{}", render(path, diagnostics))]
    Invalid { path: PathBuf, diagnostics: Vec<Diagnostic> },
}

impl ConfigError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn render(path: &std::path::Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{}:{}:{}: {}", path.display(), d.line, d.column, d.message));
        if let Some(h) = &d.hint {
            out.push_str(&format!("\n  hint: {h}"));
        }
    }
    out
}

/// Collects diagnostics while validating, turning byte spans into line:column.
pub struct Diagnostics<'a> {
    text: &'a str,
    path: &'a Path,
    pub list: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(text: &'a str, path: &'a Path) -> Self {
        Diagnostics { text, path, list: Vec::new() }
    }

    /// `PATH:LINE:COLUMN` of a span: where a value checked later (a stage's
    /// settings, by its plugin) is reported from.
    pub fn place(&self, span: Range<usize>) -> String {
        let (line, column) = line_col(self.text, span.start);
        format!("{}:{line}:{column}", self.path.display())
    }

    pub fn error(&mut self, span: Range<usize>, message: impl fmt::Display, hint: Option<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.list.push(Diagnostic { line, column, message: message.to_string(), hint });
    }

    /// Resolves a path relative to the config file and checks that it exists.
    pub fn existing(&mut self, base: &Path, p: &Spanned<String>, what: &str, fix: &str) -> Option<PathBuf> {
        let path = base.join(p.get_ref());
        if path.is_file() {
            Some(path)
        } else {
            self.error(p.span(), format!("{what}: file {} not found", path.display()), Some(fix.into()));
            None
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
