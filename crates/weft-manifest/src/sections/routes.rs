//! `[[route]]`: which function answers which HTTP requests. Routes are
//! checked with the same [`RouteTable`] the gateway routes with, so a
//! collision is found here.

use std::ops::Range;

use toml_edit::{Table, TableLike};

use crate::Target;
use crate::names::Wording;
use crate::parse::Checker;
use crate::route::{RoutePath, RouteTable};
use crate::section::Section;
use crate::sections::workflows::EXPRESS;
use crate::{Diagnostic, Manifest, Method};

const ROUTE_KEYS: &[&str] = &["method", "path", "function", "workflow"];

/// `[[route]]`: requests matching `method` and `path` go to `function`, or
/// start an express execution of `workflow` whose result is the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `None` matches any method.
    pub method: Option<Method>,
    pub path: RoutePath,
    /// A [`Target::Function`] or a [`Target::Workflow`].
    pub to: Target,
}

impl Route {
    /// The function or workflow it names.
    pub fn name(&self) -> &str {
        self.to.name()
    }
}

pub(crate) struct Routes;

impl Section for Routes {
    fn keys(&self) -> &[&str] {
        &["route"]
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        let mut table = RouteTable::default();
        c.each_listed(
            root,
            "route",
            ROUTE_KEYS,
            "write each route as `[[route]]` with `path` and `function`",
            |c, t, place| {
                if let Some(route) = c.route(t, place, &mut table, &manifest.routes) {
                    manifest.routes.push(route);
                }
            },
        );
    }
}

impl Checker {
    /// One `[[route]]`, which must not collide with `routes`, the routes
    /// before it (in `table_of_routes`, with the spans of their paths).
    fn route(
        &mut self,
        table: &dyn TableLike,
        place: &str,
        table_of_routes: &mut RouteTable<Option<Range<usize>>>,
        routes: &[Route],
    ) -> Option<Route> {
        let method = match self.string(table, "method", place, "\"GET\"") {
            Some((m, span)) => match Method::parse(m) {
                Ok(m) => m,
                Err(why) => {
                    self.error(
                        span,
                        format!("{place}: {why}"),
                        "leave `method` out to match any method",
                    );
                    return None;
                }
            },
            None if table.contains_key("method") => return None,
            None => None,
        };
        let path = self
            .required(
                table,
                "path",
                place,
                "\"/users/{id}\"",
                None,
                "add `path = \"/...\"` to the [[route]]",
            )
            .and_then(|(p, span)| match RoutePath::parse(p) {
                Ok(p) => Some((p, span)),
                Err(e) => {
                    self.error(span, format!("{place}: {}", e.message), &e.help);
                    None
                }
            });
        let function = self.route_target(table, place);
        if let Some((p, span)) = &path
            && (p.as_str() == "/events" || p.as_str().starts_with("/events/"))
        {
            self.error(
                span.clone(),
                format!(
                    "{place}: paths under `/events/` are reserved for the CloudEvents ingress (POST /events/TOPIC)"
                ),
                "choose another path for this route",
            );
            return None;
        }
        let (Some((path, span)), Some(to)) = (path, function) else {
            return None;
        };
        match table_of_routes.insert(method, path.clone(), span.clone()) {
            Ok(()) => Some(Route { method, path, to }),
            Err(other) => {
                let with = match other.and_then(|i| routes.get(i).zip(table_of_routes.entries().nth(i))) {
                    Some((r, (_, _, earlier))) => {
                        let at = earlier
                            .as_ref()
                            .map_or(String::new(), |s| format!(" on line {}", self.line_col(s.start).0));
                        format!(" `{} {}`{at}", method_name(r.method), r.path)
                    }
                    None => String::new(),
                };
                self.push(
                    Diagnostic::new(span, format!("{place} (`{} {path}`) collides with the route{with}", method_name(method)))
                        .with_help("two routes with the same method cannot have the same path shape: change the path, the method, or remove one"),
                );
                None
            }
        }
    }
}

impl Checker {
    /// The function, or the express workflow, a route names.
    fn route_target(&mut self, table: &dyn TableLike, place: &str) -> Option<Target> {
        let given = (table.contains_key("function"), table.contains_key("workflow"));
        if given == (true, true) {
            self.error(
                None,
                format!("{place} names both a `function` and a `workflow`"),
                "a route answers with one of them: keep `function` or `workflow`",
            );
            return None;
        }
        if given.1 {
            let (name, span) = self.string(table, "workflow", place, "\"checkout\"")?;
            let wording = Wording::new(format!(
                "{place} starts workflow `{name}`, which is not a workflow of this app"
            ))
            .after_near(" Workflows are declared as [workflow.NAME]")
            .otherwise(format!("declare it with [workflow.{name}] and a `definition`"));
            if !self.declared("workflow", name, span.clone(), wording) {
                return None;
            }
            if !self.names().has_tag("workflow", name, EXPRESS) {
                self.error(
                    span,
                    format!("{place} starts workflow `{name}`, which is a standard workflow"),
                    format!(
                        "a route waits for its workflow's result, so it must be express: add `type = \"express\"` to [workflow.{name}]"
                    ),
                );
                return None;
            }
            return Some(Target::Workflow(name.to_string()));
        }
        let (f, span) = self.required(
            table,
            "function",
            place,
            "\"my-function\"",
            None,
            "add `function = \"NAME\"` naming a [function.NAME] (or `workflow = \"NAME\"` naming an express workflow)",
        )?;
        let functions = self.names.of("function");
        let otherwise = match functions.is_empty() {
            true => "declare it with `[function.NAME]` and a `source`".to_string(),
            false => format!(
                "declare it with [function.{f}], or use one of: {}",
                functions.join(", ")
            ),
        };
        let wording = Wording::new(format!(
            "{place} sends requests to `{f}`, which is not a function of this app"
        ))
        .after_near(" Functions are declared as [function.NAME]")
        .otherwise(otherwise);
        self.declared("function", f, span, wording)
            .then(|| Target::Function(f.to_string()))
    }
}

fn method_name(method: Option<Method>) -> &'static str {
    method.map_or("ANY", Method::as_str)
}
