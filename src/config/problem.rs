//! Configuration problems: what is wrong, where (file:line:col and field path) and how to fix it.

use std::fmt;

use serde_saphyr::Location;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based line and column in `file`, when known.
    pub position: Option<(u64, u64)>,
    /// Field path such as `ClusterConfiguration.networking.serviceSubnet`.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
    /// Warnings do not stop the run.
    pub warning: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        let kind = if self.warning { "warning" } else { "error" };
        write!(f, ": {kind}: ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Collects problems for one input file. Positions are shifted by the line offset of the
/// document being read, since each `---` document is parsed on its own.
#[derive(Debug)]
pub struct Problems {
    pub file: String,
    pub line_offset: u64,
    pub list: Vec<Problem>,
}

impl Problems {
    pub fn new(file: &str) -> Self {
        Problems { file: file.to_string(), line_offset: 0, list: Vec::new() }
    }

    pub fn position(&self, loc: &Location) -> Option<(u64, u64)> {
        (loc.line() > 0).then(|| (loc.line() + self.line_offset, loc.column()))
    }

    fn push(&mut self, loc: Option<&Location>, field: &str, message: String, hint: Option<&str>, warning: bool) {
        let position = loc.and_then(|l| self.position(l));
        self.list.push(Problem {
            file: self.file.clone(),
            position,
            field: field.to_string(),
            message,
            hint: hint.map(str::to_string),
            warning,
        });
    }

    /// An error at a position already in file lines (from another document than the current one).
    pub fn error_at(&mut self, position: Option<(u64, u64)>, field: &str, message: impl Into<String>, hint: Option<&str>) {
        self.list.push(Problem {
            file: self.file.clone(),
            position,
            field: field.to_string(),
            message: message.into(),
            hint: hint.map(str::to_string),
            warning: false,
        });
    }

    pub fn error(&mut self, loc: Option<&Location>, field: &str, message: impl Into<String>, hint: Option<&str>) {
        self.push(loc, field, message.into(), hint, false);
    }

    pub fn warn(&mut self, loc: Option<&Location>, field: &str, message: impl Into<String>, hint: Option<&str>) {
        self.push(loc, field, message.into(), hint, true);
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|p| !p.warning)
    }
}
