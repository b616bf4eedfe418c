//! `resource_lookup: {"mode": "lazy"}` (keycloak): a path no configured resource matches is
//! looked up at the AS, as Keycloak's policy enforcer does with `lazy-load-paths`: `GET
//! resource_set?uri=<path>&matchingUri=true&deep=true` with the PAT (`ResourceService.find`,
//! whose `matchingUri` matches the resources' `uris` with Keycloak's `PathMatcher`: a uri, a
//! trailing `/*` for what is below, `{param}` for one segment). Of what comes back, the most
//! specific by this filter's own precedence protects the path; none: the path is unmatched.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::matcher::ResourceMatcher;
use crate::resource::Resource;
use crate::wire::{AsError, AsResponse};

/// What a lookup found for a path, as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookedUp {
    pub resource: Option<Resource>,
}

/// The query of a lookup, on the resource registration endpoint.
pub fn lookup_path(resource_set_endpoint: &str, path: &str) -> String {
    let uri: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let sep = if resource_set_endpoint.contains('?') { '&' } else { '?' };
    format!("{resource_set_endpoint}{sep}uri={uri}&matchingUri=true&deep=true")
}

/// A Keycloak resource uri as this filter's pattern: `/a/*` covers `/a` and what is below
/// (`/a/**`); `{param}` is one segment; anything else is the path itself, exactly. `None` for a
/// uri no pattern can stand for (a `*` inside a segment: Keycloak's own suffix matching).
fn pattern_of(uri: &str) -> Option<(String, bool)> {
    let (base, rest) = match uri.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (uri, false),
    };
    if base.contains('*') || !base.starts_with('/') && !base.is_empty() {
        return None;
    }
    let base = if base.is_empty() { "/" } else { base };
    Some(if rest { (format!("{}/**", base.trim_end_matches('/')), false) } else { (base.to_string(), true) })
}

/// The resource a lookup's answer gives for `path` (normalised, prefix stripped): a JSON array
/// of resource representations (`_id`, `name`, `uris`, `scopes` as objects with a `name` or as
/// names, or `resource_scopes`).
pub fn parse_lookup(response: &AsResponse<'_>, path: &str) -> Result<LookedUp, AsError> {
    let body = match response.status {
        None => return Err(AsError::Unreachable),
        Some(200) => response.body,
        Some(s) => return Err(AsError::from_status(s, response.body)),
    };
    let list: Value =
        serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("resource lookup: {e}")))?;
    let Value::Array(items) = list else {
        return Err(AsError::Garbage("resource lookup: not a list".into()));
    };
    let mut candidates = Vec::new();
    for item in &items {
        let Some(id) = item.get("_id").and_then(Value::as_str).filter(|id| is_usable_id(id)) else {
            return Err(AsError::Garbage("resource lookup: a resource without a usable _id".into()));
        };
        let scopes = scope_names(item);
        let name = item.get("name").and_then(Value::as_str).map(str::to_string);
        for uri in item.get("uris").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
        {
            let Some((uri, exact)) = pattern_of(uri) else { continue };
            candidates.push(Resource {
                id: id.to_string(),
                uri,
                scopes: scopes.clone(),
                name: name.clone(),
                exact,
                ..Resource::default()
            });
        }
    }
    let matcher = ResourceMatcher::new(candidates);
    Ok(LookedUp { resource: matcher.find(path).cloned() })
}

/// An id the filter can put in a ticket request and a log line.
fn is_usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn scope_names(item: &Value) -> Vec<String> {
    let listed = item.get("scopes").or_else(|| item.get("resource_scopes"));
    listed
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().or_else(|| s.get("name").and_then(Value::as_str)))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> AsResponse<'_> {
        AsResponse { status: Some(200), body: body.as_bytes() }
    }

    #[test]
    fn the_query_is_keycloaks_matching_uri_lookup() {
        assert_eq!(
            lookup_path("/realms/r/authz/protection/resource_set", "/a b/c"),
            "/realms/r/authz/protection/resource_set?uri=%2Fa+b%2Fc&matchingUri=true&deep=true"
        );
    }

    #[test]
    fn the_most_specific_of_the_answer_protects_the_path() {
        let body = r#"[
            {"_id":"all","name":"All","uris":["/api/*"],"scopes":[{"id":"1","name":"read"}]},
            {"_id":"one","name":"One","uris":["/api/orders/{id}"],"resource_scopes":["read","write"]},
            {"_id":"other","name":"Other","uris":["/elsewhere"]}
        ]"#;
        let found = parse_lookup(&answer(body), "/api/orders/7").unwrap_or_else(|e| unreachable!("{e}"));
        let r = found.resource.unwrap_or_else(|| unreachable!());
        assert_eq!((r.id.as_str(), r.scopes.clone()), ("one", vec!["read".to_string(), "write".to_string()]));
        let found =
            parse_lookup(&answer(body), "/api/orders/7/items").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(found.resource.map(|r| r.id), Some("all".into()));
        let found = parse_lookup(&answer(body), "/api").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(found.resource.map(|r| r.id), Some("all".into()), "`/a/*` covers `/a` too");
        // An exact Keycloak uri covers its path only.
        let found = parse_lookup(&answer(body), "/elsewhere/x").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(found.resource, None);
        assert_eq!(parse_lookup(&answer("[]"), "/x"), Ok(LookedUp { resource: None }));
    }

    #[test]
    fn what_is_not_an_answer_is_an_as_failure() {
        for bad in [
            r#"{"_id":"x"}"#,
            r#"[{"name":"no id","uris":["/x"]}]"#,
            r#"[{"_id":"a\"b","uris":["/x"]}]"#,
            "nope",
        ] {
            assert!(matches!(parse_lookup(&answer(bad), "/x"), Err(AsError::Garbage(_))), "{bad}");
        }
        let refused = AsResponse { status: Some(401), body: b"" };
        assert!(matches!(parse_lookup(&refused, "/x"), Err(AsError::CredentialsRefused { .. })));
        assert_eq!(parse_lookup(&AsResponse { status: None, body: b"" }, "/x"), Err(AsError::Unreachable));
    }
}
