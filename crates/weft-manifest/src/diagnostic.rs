//! Located, human-readable manifest errors.
//!
//! A [`Diagnostic`] points at a byte range of the manifest; [`Diagnostics`]
//! renders each one as `file:line:column`, the message, the offending line
//! with a caret under the range, and a `help:` line that says how to fix it.

use std::fmt;
use std::ops::Range;

/// One mistake in a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Byte range in the manifest text; `None` when the mistake has no place.
    pub span: Option<Range<usize>>,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every mistake found in one manifest, with the text needed to show them.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics {
    pub file: String,
    source: String,
    pub items: Vec<Diagnostic>,
}

impl std::error::Error for Diagnostics {}

impl Diagnostics {
    pub fn new(file: &str, source: &str) -> Self {
        Diagnostics {
            file: file.to_string(),
            source: source.to_string(),
            items: Vec::new(),
        }
    }

    pub fn single(file: &str, source: &str, item: Diagnostic) -> Self {
        let mut d = Diagnostics::new(file, source);
        d.push(item);
        d
    }

    pub fn push(&mut self, item: Diagnostic) {
        self.items.push(item);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `Ok(value)` when nothing was found, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.items.is_empty() { Ok(value) } else { Err(self) }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let before = &self.source[..floor_char_boundary(&self.source, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// `file:line:column` of a diagnostic, or just `file`.
    pub fn location(&self, item: &Diagnostic) -> String {
        match &item.span {
            Some(span) => {
                let (line, col) = self.line_col(span.start);
                format!("{}:{line}:{col}", self.file)
            }
            None => self.file.clone(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, item) in self.items.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", item.message)?;
            writeln!(f, "  --> {}", self.location(item))?;
            if let Some(span) = &item.span {
                let (line, col) = self.line_col(span.start);
                if let Some(text) = self.source.lines().nth(line - 1) {
                    let gutter = line.to_string().len();
                    let width = self.source[floor_char_boundary(&self.source, span.start)
                        ..floor_char_boundary(&self.source, span.end.min(self.source.len()))]
                        .lines()
                        .next()
                        .map_or(1, |s| s.chars().count().max(1));
                    writeln!(f, "{:gutter$} |", "")?;
                    writeln!(f, "{line} | {text}")?;
                    writeln!(f, "{:gutter$} | {}{}", "", " ".repeat(col - 1), "^".repeat(width))?;
                }
            }
            if let Some(help) = &item.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        if self.items.len() > 1 {
            writeln!(f, "\n{} errors in {}", self.items.len(), self.file)?;
        }
        Ok(())
    }
}
