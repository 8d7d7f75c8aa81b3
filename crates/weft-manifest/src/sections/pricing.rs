//! `[pricing]`: the price table `weft cost` uses for this app, in place of
//! the default (Lambda's public x86 on-demand prices).

use toml_edit::{Item, Table, TableLike};

use crate::Manifest;
use crate::parse::{Checker, span_of};
use crate::section::Section;

/// `[pricing]`: what a request and a GB-second cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    /// Where the prices come from, as `weft cost` labels them.
    pub label: String,
    /// A currency code, like `USD` or `EUR`.
    pub currency: String,
    pub per_request: f64,
    pub per_gb_second: f64,
}

const KEYS: &[&str] = &["label", "currency", "per_request", "per_gb_second"];
const PLACE: &str = "[pricing]";
const LABEL_MAX: usize = 200;

pub(crate) struct Prices;

impl Section for Prices {
    fn keys(&self) -> &[&str] {
        &["pricing"]
    }

    fn check(&self, c: &mut Checker, root: &Table, manifest: &mut Manifest) {
        let Some((key, item)) = root.get_key_value("pricing") else {
            return;
        };
        let Some(table) = c.table(
            key,
            item,
            "`pricing`",
            "write `[pricing]` with `per_request` and `per_gb_second`",
        ) else {
            return;
        };
        c.unknown_keys(table, KEYS, PLACE);
        let label = match c.string(table, "label", PLACE, "\"our on-premises prices\"") {
            Some((l, span)) if l.is_empty() || l.len() > LABEL_MAX => {
                c.error(
                    span,
                    format!("`label` in {PLACE} must be 1 to {LABEL_MAX} bytes"),
                    "say where the prices come from, like `label = \"our on-premises prices\"`",
                );
                None
            }
            Some((l, _)) => Some(l.to_string()),
            None => (!table.contains_key("label")).then(|| "the app's prices ([pricing])".to_string()),
        };
        let currency = match c.string(table, "currency", PLACE, "\"EUR\"") {
            Some((code, span)) if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) => {
                c.error(
                    span,
                    format!("`currency` in {PLACE} is `{code}`, not a currency code"),
                    "write three capital letters, as ISO 4217 codes are: `\"USD\"`, `\"EUR\"`",
                );
                None
            }
            Some((code, _)) => Some(code.to_string()),
            None => (!table.contains_key("currency")).then(|| "USD".to_string()),
        };
        let per_request = price(c, table, key.span(), "per_request", "0.0000002");
        let per_gb_second = price(c, table, key.span(), "per_gb_second", "0.0000166667");
        if let (Some(label), Some(currency), Some(per_request), Some(per_gb_second)) =
            (label, currency, per_request, per_gb_second)
        {
            manifest.pricing = Some(Pricing {
                label,
                currency,
                per_request,
                per_gb_second,
            });
        }
    }
}

/// A required price: a number of 0 or more, integer or not.
fn price(
    c: &mut Checker,
    table: &dyn TableLike,
    missing: Option<std::ops::Range<usize>>,
    key: &str,
    example: &str,
) -> Option<f64> {
    let Some((k, item)) = table.get_key_value(key) else {
        c.error(
            missing,
            format!("{PLACE} has no `{key}`"),
            format!("add `{key} = {example}`; a price table gives both `per_request` and `per_gb_second`"),
        );
        return None;
    };
    let value = match item {
        Item::Value(v) => v.as_float().or_else(|| v.as_integer().map(|n| n as f64)),
        _ => None,
    };
    match value {
        Some(p) if p.is_finite() && p >= 0.0 => Some(p),
        Some(p) => {
            c.error(
                span_of(k, item),
                format!("`{key}` in {PLACE} is {p}, not a price"),
                format!("use a price of 0 or more, like `{key} = {example}`"),
            );
            None
        }
        None => {
            c.error(
                span_of(k, item),
                format!("`{key}` in {PLACE} must be a number, found {}", item.type_name()),
                format!("write it without quotes, e.g. `{key} = {example}`"),
            );
            None
        }
    }
}
