//! Properties of the rules that hold for every input, checked over generated paths (proptest):
//! normalisation is idempotent; what is matched is what is forwarded; a refused path never
//! reaches the upstream; cache keys never collide across resources.

use proptest::prelude::*;
use uma_pep_core::cache::{keyed_digest, token_digest, LocalKeyer};
use uma_pep_core::config::PepConfig;
use uma_pep_core::decision::{plan, Plan, RequestFacts};
use uma_pep_core::path::{normalize_path, split_query};

/// Pieces a hostile path is made of: separators, dot segments in every spelling, escapes of
/// reserved and unreserved bytes, broken escapes, delimiters and names of the table.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        "%41",
        "%7e",
        "%40",
        "@",
        ":",
        "%3a",
        "%21",
        "!",
        "%25",
        "%",
        "%zz",
        "%4",
        ";",
        "%3b",
        "?",
        "#",
        "&",
        "=",
        "a",
        "alice",
        "docs",
        "bob",
        "Alice",
        "caf%C3%A9",
        "%00",
        "%20",
        " ",
        "~",
        "-",
        "_",
    ])
}

fn raw_path() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..24).prop_map(|p| p.concat())
}

fn config() -> PepConfig {
    let json = serde_json::json!({
        "issuer": "https://as.example", "client_id": "pep", "client_secret": "s", "as_cluster": "as",
        "resources": [
            {"id": "alice", "uri": "/alice"},
            {"id": "alice-docs", "uri": "/alice/docs"},
            {"id": "bob", "uri": "/bob"},
            {"id": "at", "uri": "/a@b"},
        ],
    });
    match PepConfig::from_json(json.to_string().as_bytes()) {
        Ok(c) => c,
        Err(e) => unreachable!("test config: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn normalisation_is_idempotent(raw in raw_path()) {
        if let Ok(once) = normalize_path(&raw) {
            prop_assert_eq!(normalize_path(&once), Ok(once.clone()));
        }
    }

    #[test]
    fn what_is_matched_is_what_is_forwarded(raw in raw_path()) {
        let config = config();
        let path = if raw.starts_with('/') { raw } else { format!("/{raw}") };
        let facts = RequestFacts { method: "GET", raw_path: &path, authorization: &[], canonical_only: false, cors_preflight: false };
        let forwarded = |rewrite: &Option<String>| rewrite.clone().unwrap_or_else(|| path.clone());
        match plan(&config, &config.resources, facts) {
            Plan::Protected { target, .. } => {
                // The upstream gets the rewrite (or the path as it came): canonical, and the same
                // resource protects it.
                let sent = forwarded(&target.rewrite);
                let sent_path = split_query(&sent).0;
                prop_assert_eq!(normalize_path(sent_path), Ok(sent_path.to_string()));
                let found = config.resources.find(sent_path).map(|r| r.id.clone());
                prop_assert_eq!(found, Some(target.resource_id));
            }
            Plan::PassThrough { rewrite } => {
                let sent = forwarded(&rewrite);
                let sent_path = split_query(&sent).0;
                prop_assert_eq!(normalize_path(sent_path), Ok(sent_path.to_string()));
                prop_assert!(config.resources.find(sent_path).is_none(), "{} passed through", sent);
            }
            Plan::Reply(reply) => {
                // Refused: never forwarded. A path normalisation refuses is always refused.
                prop_assert!(reply.status >= 400);
            }
            // No `resource_lookup` here.
            Plan::LookUp { .. } => prop_assert!(false, "a lookup without resource_lookup"),
        }
        if normalize_path(&path).is_err() {
            let facts = RequestFacts { method: "GET", raw_path: &path, authorization: &[], canonical_only: false, cors_preflight: false };
            let refused = matches!(plan(&config, &config.resources, facts), Plan::Reply(r) if r.status == 400);
            prop_assert!(refused);
        }
    }

    #[test]
    fn cache_keys_never_collide_across_resources(token in "[A-Za-z0-9._~+/-]{1,64}", r1 in "[a-z0-9-]{1,12}", r2 in "[a-z0-9-]{1,12}") {
        prop_assume!(r1 != r2);
        let digest = token_digest(&token);
        prop_assert_ne!(keyed_digest(&digest, &r1), keyed_digest(&digest, &r2));
        let keyer = LocalKeyer::default();
        let local = keyer.key(&token);
        prop_assert_ne!(keyer.keyed(&local, &r1), keyer.keyed(&local, &r2));
    }
}
