//! pepctl's `/filter-config` table (`core/src/resource_table.rs`), as the filter polls it.
//!
//! Input: the answer body. Properties:
//! - a table is taken only with status 200; no answer is `Unreachable`;
//! - `read`/`parse_any` take what `from_json`/`parse` take, and an empty table besides (nothing
//!   else); `from_json`/`parse` never take an empty one;
//! - a generation taken is 1 to 128 printable ASCII characters;
//! - an accepted table has every uri a pattern in its canonical spelling (it reads back as
//!   itself), no two of one shape, every id non-empty and safe in a quoted header parameter (the
//!   same rules as the configuration's resources);
//! - the table's identity depends on its content only: the same body gives the same identity;
//! - a request for a listed uri without wildcards finds a resource of that very uri (what is
//!   matched is what is listed; an `exact` twin of a plain uri may be the one found).
#![no_main]

use libfuzzer_sys::fuzz_target;
use uma_pep_core::path::normalize_path;
use uma_pep_core::resource_table::ResourceTable;
use uma_pep_core::uri_pattern::{Segment, UriPattern};
use uma_pep_core::wire::{AsError, AsResponse};

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        ResourceTable::parse(&AsResponse { status: None, body: data }).err(),
        Some(AsError::Unreachable)
    );
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
                assert!(
                    !g.is_empty() && g.len() <= 128 && g.bytes().all(|b| b.is_ascii_graphic()),
                    "generation {g:?}"
                );
            }
        }
        Err(_) => assert!(t.is_err(), "from_json took what read refused"),
    }
    let Ok(t) = t else { return };
    let p = p.expect("same body");
    assert_eq!((t.version, t.identity), (p.version, p.identity));

    let rs = t.matcher.resources();
    assert!(!rs.is_empty(), "empty table taken");
    let mut shapes = std::collections::HashSet::new();
    for r in rs {
        let (spelled, pattern) =
            UriPattern::parse(&r.uri, r.exact).unwrap_or_else(|e| panic!("uri {:?} taken: {e}", r.uri));
        assert_eq!(spelled, r.uri, "uri {:?} not in its canonical spelling", r.uri);
        assert!(shapes.insert(pattern.shape_key()), "two resources of the shape of {:?}", r.uri);
        assert!(!r.id.trim().is_empty(), "empty id");
        assert!(
            !r.id.chars().any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii()),
            "id {:?} unsafe in a header",
            r.id
        );
        let literal = pattern.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
            && !r.uri.split('/').any(|s| s == "*" || s == "**" || s.starts_with('{'));
        if literal {
            let path =
                normalize_path(&r.uri).unwrap_or_else(|e| panic!("listed uri {:?} is no path: {e}", r.uri));
            let found = t.matcher.find(&path).expect("a listed uri matches");
            assert_eq!(found.uri, r.uri, "{:?} matched another resource", r.uri);
        }
    }
});
