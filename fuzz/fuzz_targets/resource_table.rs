//! pepctl's `/filter-config` table (`core/src/resource_table.rs`), as the filter polls it.
//!
//! Input: the answer body. Properties:
//! - a table is taken only with status 200; no answer is `Unreachable`;
//! - `read`/`parse_any` take what `from_json`/`parse` take, and an empty table besides (nothing
//!   else); `from_json`/`parse` never take an empty one;
//! - a generation taken is 1 to 128 printable ASCII characters;
//! - an accepted table has every uri canonical and unique, every id non-empty and safe in a
//!   quoted header parameter (the same rules as the configuration's resources);
//! - the table's identity depends on its content only: the same body gives the same identity;
//! - matching any of its own uris finds that very resource (what is matched is what is listed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use uma_pep_core::path::normalize_path;
use uma_pep_core::resource_table::ResourceTable;
use uma_pep_core::wire::{AsError, AsResponse};

fuzz_target!(|data: &[u8]| {
    assert_eq!(ResourceTable::parse(&AsResponse { status: None, body: data }).err(), Some(AsError::Unreachable));
    for s in [204, 401, 404, 500] {
        assert!(ResourceTable::parse(&AsResponse { status: Some(s), body: data }).is_err());
    }
    for s in [204, 401, 404, 500] {
        assert!(ResourceTable::parse_any(&AsResponse { status: Some(s), body: data }).is_err());
    }
    let any = ResourceTable::read(data);
    let any_answer = ResourceTable::parse_any(&AsResponse { status: Some(200), body: data });
    assert_eq!(any.is_ok(), any_answer.is_ok());
    let t = ResourceTable::from_json(data);
    let p = ResourceTable::parse(&AsResponse { status: Some(200), body: data });
    assert_eq!(t.is_ok(), p.is_ok());
    match &any {
        Ok(a) => {
            assert_eq!(t.is_ok(), !a.is_empty(), "from_json takes exactly the non-empty tables read takes");
            if let Some(g) = &a.generation {
                assert!(!g.is_empty() && g.len() <= 128 && g.bytes().all(|b| b.is_ascii_graphic()), "generation {g:?}");
            }
        }
        Err(_) => assert!(t.is_err(), "from_json took what read refused"),
    }
    let Ok(t) = t else { return };
    let p = p.expect("same body");
    assert_eq!((t.version, t.identity), (p.version, p.identity));

    let rs = t.matcher.resources();
    assert!(!rs.is_empty(), "empty table taken");
    let mut uris = std::collections::HashSet::new();
    for r in rs {
        let n = normalize_path(&r.uri).unwrap_or_else(|e| panic!("uri {:?} taken: {e}", r.uri));
        let trimmed = n.trim_end_matches('/');
        assert_eq!(r.uri, if trimmed.is_empty() { "/" } else { trimmed }, "uri {:?} not canonical", r.uri);
        assert!(uris.insert(r.uri.as_str()), "uri {:?} twice", r.uri);
        assert!(!r.id.trim().is_empty(), "empty id");
        assert!(
            !r.id.chars().any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii()),
            "id {:?} unsafe in a header",
            r.id
        );
        let found = t.matcher.find(&r.uri).expect("a listed uri matches");
        assert_eq!(found.id, r.id, "{:?} matched another resource", r.uri);
    }
});
