//! `[workflow.NAME]`: a state machine in Amazon States Language, read from
//! a definition file beside the manifest, that runs as a standard
//! workflow (durable: journalled, resumed after a crash) or an express
//! one (in memory, answered with its result).
//!
//! This section checks the table; the definition itself is read and
//! validated where the app's files are (the CLI, then the deploy), since
//! parsing a manifest reads no files.

use toml_edit::{Item, Table};

use crate::Manifest;
use crate::names::Names;
use crate::parse::{Checker, Kind};
use crate::section::Section;

/// The tag of express workflows among the declared names.
pub(crate) const EXPRESS: &str = "express";

/// `[workflow.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub name: String,
    /// The definition's path, relative to the app directory.
    pub definition: String,
    pub kind: WorkflowKind,
}

/// How a workflow's executions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowKind {
    /// Journalled step by step in the storage, and resumed after a crash.
    Standard,
    /// In memory, started and answered synchronously.
    Express,
}

impl WorkflowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowKind::Standard => "standard",
            WorkflowKind::Express => "express",
        }
    }
}

const WORKFLOW: Kind = Kind {
    name: "workflow",
    keys: &["definition", "type"],
    example: "order",
    help: "write the workflow as `[workflow.NAME]` with its `definition` file",
};

pub(crate) struct Workflows;

impl Section for Workflows {
    fn keys(&self) -> &[&str] {
        &["workflow"]
    }

    fn declare(&self, root: &Table, names: &mut Names) {
        let Some(workflows) = root.get("workflow").and_then(Item::as_table_like) else {
            return;
        };
        for (name, workflow) in workflows.iter() {
            names.declare("workflow", name);
            if workflow.get("type").and_then(Item::as_str) == Some("express") {
                names.tag("workflow", name, EXPRESS);
            }
        }
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        c.each_named(root, &WORKFLOW, |c, named| {
            let (key, w, place) = (named.key, named.table, &named.place);
            let definition = c
                .required(
                    w,
                    "definition",
                    place,
                    "\"order.asl.json\"",
                    key.span(),
                    "add `definition = \"FILE.asl.json\"`, the Amazon States Language definition beside weft.toml",
                )
                .and_then(|(path, span)| {
                    if [".json", ".yaml", ".yml"].iter().any(|ext| path.ends_with(ext)) {
                        return Some(path.to_string());
                    }
                    c.error(
                        span,
                        format!("`definition` of {place} is `{path}`, not a .json, .yaml or .yml file"),
                        "name the definition's file, in JSON or YAML, e.g. `definition = \"order.asl.json\"`",
                    );
                    None
                });
            let kind = match c.string(w, "type", place, "\"standard\"") {
                Some(("standard", _)) => Some(WorkflowKind::Standard),
                Some(("express", _)) => Some(WorkflowKind::Express),
                Some((other, span)) => {
                    c.error(
                        span,
                        format!("`type` of {place} is `{other}`"),
                        "use `standard` (durable, the default) or `express` (in memory, answered with its result)",
                    );
                    None
                }
                None if w.contains_key("type") => None,
                None => Some(WorkflowKind::Standard),
            };
            if let (true, Some(definition), Some(kind)) = (named.name_ok, definition, kind) {
                manifest.workflows.push(Workflow {
                    name: named.name.to_string(),
                    definition,
                    kind,
                });
            }
        });
    }
}
