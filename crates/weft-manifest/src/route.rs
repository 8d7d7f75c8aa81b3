//! Route paths (`/users/{id}/files/{*rest}`), methods, and the table that
//! matches requests to routes.
//!
//! The same [`RouteTable`] finds collisions when a manifest is checked and
//! routes requests in the gateway, so what the checker accepts is exactly
//! what the gateway can route.

use std::fmt;

/// An HTTP method a route can name. A route without one matches any method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
    Options,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Head,
        Method::Options,
    ];

    /// `Ok(None)` for `ANY` or `*`.
    pub fn parse(text: &str) -> Result<Option<Method>, String> {
        let upper = text.trim().to_ascii_uppercase();
        if upper == "ANY" || upper == "*" {
            return Ok(None);
        }
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == upper)
            .map(Some)
            .ok_or_else(|| {
                format!("`{text}` is not a method: use one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS or ANY")
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath {
    text: String,
    params: Vec<String>,
}

/// Why a route path is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouteSyntaxError {
    pub message: String,
    pub help: String,
}

impl RoutePath {
    pub fn parse(text: &str) -> Result<RoutePath, RouteSyntaxError> {
        let err = |message: String, help: &str| RouteSyntaxError {
            message,
            help: help.to_string(),
        };
        if !text.starts_with('/') {
            return Err(err(
                format!("route path `{text}` must start with `/`"),
                "write it as `/` followed by the path",
            ));
        }
        let mut params: Vec<String> = Vec::new();
        let segments: Vec<&str> = text[1..].split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if segment.is_empty() && !last {
                return Err(err(
                    format!("route path `{text}` has an empty segment (`//`)"),
                    "remove the doubled `/`",
                ));
            }
            let opens = segment.matches('{').count();
            let closes = segment.matches('}').count();
            if opens == 0 && closes == 0 {
                if segment.contains(['?', '#', '*']) {
                    return Err(err(
                        format!("route path `{text}`: segment `{segment}` has `?`, `#` or `*` outside a parameter"),
                        "query strings are not part of routes; use `{*rest}` at the end for a wildcard",
                    ));
                }
                continue;
            }
            let inner = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
            let Some(inner) = inner.filter(|_| opens == 1 && closes == 1) else {
                return Err(err(
                    format!("route path `{text}`: segment `{segment}` mixes text and a parameter"),
                    "a parameter takes a whole segment: `/files/{name}`, not `/files/{name}.txt`",
                ));
            };
            let (name, catch_all) = match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if catch_all && !last {
                return Err(err(
                    format!("route path `{text}`: `{{*{name}}}` must be the last segment"),
                    "move the catch-all to the end, e.g. `/static/{*path}`",
                ));
            }
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(err(
                    format!("route path `{text}`: `{name}` is not a parameter name"),
                    "use letters, digits and `_`, starting with a letter, e.g. `{user_id}`",
                ));
            }
            if params.iter().any(|p| p == name) {
                return Err(err(
                    format!("route path `{text}`: parameter `{name}` appears twice"),
                    "give each parameter its own name",
                ));
            }
            params.push(name.to_string());
        }
        Ok(RoutePath {
            text: text.to_string(),
            params,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Parameter names in order, the catch-all (without `*`) last.
    pub fn params(&self) -> &[String] {
        &self.params
    }
}

impl fmt::Display for RoutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Matches `(method, path)` to a value: routes for a named method first,
/// then routes for any method.
#[derive(Clone)]
pub struct RouteTable<T> {
    by_method: Vec<matchit::Router<usize>>,
    any: matchit::Router<usize>,
    entries: Vec<(Option<Method>, RoutePath, T)>,
}

/// A request that matched a route.
pub struct RouteMatch<'t, 'p, T> {
    pub value: &'t T,
    pub route: &'t RoutePath,
    pub params: Vec<(&'t str, &'p str)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            by_method: Method::ALL.iter().map(|_| matchit::Router::new()).collect(),
            any: matchit::Router::new(),
            entries: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// Adds a route. On a collision, returns the index (in insertion order)
    /// of the route it collides with, when known.
    pub fn insert(&mut self, method: Option<Method>, path: RoutePath, value: T) -> Result<(), Option<usize>> {
        let index = self.entries.len();
        let router = match method {
            Some(m) => &mut self.by_method[m.index()],
            None => &mut self.any,
        };
        match router.insert(path.as_str(), index) {
            Ok(()) => {
                self.entries.push((method, path, value));
                Ok(())
            }
            Err(matchit::InsertError::Conflict { with }) => {
                let shape = shape_of(&with);
                Err(self
                    .entries
                    .iter()
                    .position(|(m, p, _)| *m == method && shape_of(p.as_str()) == shape))
            }
            Err(_) => Err(None),
        }
    }

    pub fn lookup<'t, 'p>(&'t self, method: &str, path: &'p str) -> Option<RouteMatch<'t, 'p, T>> {
        let specific = Method::ALL
            .iter()
            .find(|m| m.as_str() == method)
            .and_then(|m| self.by_method[m.index()].at(path).ok());
        let found = specific.or_else(|| self.any.at(path).ok())?;
        let (_, route, value) = &self.entries[*found.value];
        let params = route
            .params()
            .iter()
            .zip(found.params.iter())
            .map(|(name, (_, v))| (name.as_str(), v))
            .collect();
        Some(RouteMatch { value, route, params })
    }

    pub fn entries(&self) -> impl Iterator<Item = (Option<Method>, &RoutePath, &T)> {
        self.entries.iter().map(|(m, p, v)| (*m, p, v))
    }
}

/// A path with parameter names erased, so `/a/{x}` and `/a/{y}` compare equal.
fn shape_of(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with("{*") {
                "{*}"
            } else if s.starts_with('{') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> RouteTable<&'static str> {
        let mut t = RouteTable::default();
        for (i, (m, p)) in routes.iter().enumerate() {
            let name: &'static str = ["a", "b", "c", "d"][i];
            t.insert(Method::parse(m).unwrap(), RoutePath::parse(p).unwrap(), name)
                .unwrap();
        }
        t
    }

    #[test]
    fn specific_method_wins_over_any() {
        let t = table(&[("ANY", "/users/{id}"), ("GET", "/users/{id}")]);
        assert_eq!(*t.lookup("GET", "/users/7").unwrap().value, "b");
        assert_eq!(*t.lookup("POST", "/users/7").unwrap().value, "a");
        let m = t.lookup("GET", "/users/7").unwrap();
        assert_eq!(m.params, vec![("id", "7")]);
    }

    #[test]
    fn catch_all_takes_the_rest() {
        let t = table(&[("GET", "/static/{*path}")]);
        let m = t.lookup("GET", "/static/css/site.css").unwrap();
        assert_eq!(m.params, vec![("path", "css/site.css")]);
        assert!(t.lookup("GET", "/other").is_none());
    }

    #[test]
    fn same_shape_same_method_collides() {
        let mut t = table(&[("GET", "/users/{id}")]);
        let err = t.insert(Some(Method::Get), RoutePath::parse("/users/{name}").unwrap(), "x");
        assert_eq!(err, Err(Some(0)));
        assert!(
            t.insert(Some(Method::Post), RoutePath::parse("/users/{name}").unwrap(), "y")
                .is_ok()
        );
    }

    #[test]
    fn bad_paths() {
        for bad in [
            "users",
            "/a//b",
            "/a/{*rest}/b",
            "/a/{1x}",
            "/a/x{y}",
            "/a/{x}/{x}",
            "/a?b",
        ] {
            assert!(RoutePath::parse(bad).is_err(), "{bad}");
        }
    }
}
