//! `[[route]]`: which function answers which HTTP requests. Routes are
//! checked with the same [`RouteTable`] the gateway routes with, so a
//! collision is found here.

use std::ops::Range;

use toml_edit::{Table, TableLike};

use crate::names::Wording;
use crate::parse::Checker;
use crate::route::{RoutePath, RouteTable};
use crate::section::Section;
use crate::{Diagnostic, Manifest, Method};

const ROUTE_KEYS: &[&str] = &["method", "path", "function"];

/// `[[route]]`: requests matching `method` and `path` go to `function`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `None` matches any method.
    pub method: Option<Method>,
    pub path: RoutePath,
    pub function: String,
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
        let function = self
            .required(
                table,
                "function",
                place,
                "\"my-function\"",
                None,
                "add `function = \"NAME\"` naming a [function.NAME]",
            )
            .and_then(|(f, span)| {
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
                self.declared("function", f, span, wording).then(|| f.to_string())
            });
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
        let (Some((path, span)), Some(function)) = (path, function) else {
            return None;
        };
        match table_of_routes.insert(method, path.clone(), span.clone()) {
            Ok(()) => Some(Route { method, path, function }),
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

fn method_name(method: Option<Method>) -> &'static str {
    method.map_or("ANY", Method::as_str)
}
