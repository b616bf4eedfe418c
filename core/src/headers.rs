//! Request header hygiene: the one read of the request's header map that finds every header the
//! client must not choose, whatever its spelling.
//!
//! CGI, WSGI and PHP upstreams read `x-user-id`, `x_user_id`, `X-USER_ID` and `x_user-id` all as
//! `HTTP_X_USER_ID`, so a header is matched by its *folded* name: ASCII case ignored, `-` and
//! `_` the same. The scan borrows from the host's serialized map: when no such header is
//! present it allocates nothing.

/// Method-override headers: frameworks that honour them (Rails, Laravel, Express's
/// `method-override`, Spring's `HiddenHttpMethodFilter` variants, ASP.NET) run the overriding
/// method, not the one the PEP decided on.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] =
    ["x-http-method-override", "x-http-method", "x-method-override"];

/// The PARTIAL-mode headers that describe the original request.
pub const ORIGINAL_URI: &str = "x-original-uri";
pub const ORIGINAL_METHOD: &str = "x-original-method";

fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// True when `name` and `other` are the same header for a CGI-style upstream: ASCII case
/// ignored, `-` and `_` equivalent.
pub fn folds_to(name: &[u8], other: &str) -> bool {
    let other = other.as_bytes();
    name.len() == other.len() && name.iter().zip(other).all(|(&a, &b)| fold(a) == fold(b))
}

/// The pairs of a header map as the host serializes it (proxy-wasm ABI
/// `proxy_get_header_map_pairs`): a little-endian `u32` count, then a (name length, value
/// length) `u32` pair per header, then each name and each value followed by a NUL byte.
/// Repeated headers are separate pairs. Never panics: a malformed map ends the iteration and
/// sets `malformed`.
pub struct SerializedPairs<'a> {
    bytes: &'a [u8],
    count: usize,
    index: usize,
    offset: usize,
    malformed: bool,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

impl<'a> SerializedPairs<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        if bytes.is_empty() {
            return Self { bytes, count: 0, index: 0, offset: 0, malformed: false };
        }
        let count = u32_at(bytes, 0);
        let offset = count.and_then(|c| c.checked_mul(8)).and_then(|s| s.checked_add(4));
        match (count, offset) {
            (Some(count), Some(offset)) if offset <= bytes.len() => {
                Self { bytes, count, index: 0, offset, malformed: false }
            }
            _ => Self { bytes, count: 0, index: 0, offset: 0, malformed: true },
        }
    }

    /// True when the map did not parse to its end (so a scan of it is incomplete).
    pub fn malformed(&self) -> bool {
        self.malformed
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.offset.checked_add(len)?;
        let item = self.bytes.get(self.offset..end)?;
        if self.bytes.get(end) != Some(&0) {
            return None;
        }
        self.offset = end + 1;
        Some(item)
    }

    fn next_pair(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let sizes = 4 + self.index * 8;
        let name_len = u32_at(self.bytes, sizes)?;
        let value_len = u32_at(self.bytes, sizes + 4)?;
        let name = self.take(name_len)?;
        let value = self.take(value_len)?;
        Some((name, value))
    }
}

impl<'a> Iterator for SerializedPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.malformed || self.index >= self.count {
            return None;
        }
        let pair = self.next_pair();
        match pair {
            Some(_) => self.index += 1,
            None => self.malformed = true,
        }
        pair
    }
}

/// `pairs` serialized as the host does (the inverse of `SerializedPairs`), for tests and fuzz
/// targets. A length beyond `u32` is written as `u32::MAX` (and then does not parse back).
pub fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = len(pairs.len()).to_vec();
    for (n, v) in pairs {
        out.extend(len(n.len()));
        out.extend(len(v.len()));
    }
    for (n, v) in pairs {
        out.extend(n.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out
}

/// What one pass over the request headers found: the headers to strip, and the values the
/// decision reads (so no header is read twice).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeaderScan<'a> {
    pub method: Option<&'a [u8]>,
    pub path: Option<&'a [u8]>,
    /// Every `Authorization` header's value, in order.
    pub authorization: Vec<&'a [u8]>,
    /// The first `X-Original-URI` and `X-Original-Method` values.
    pub original_uri_value: Option<&'a [u8]>,
    pub original_method_value: Option<&'a [u8]>,
    /// Every name (as the map spells it, once) that folds to the forwarded identity header.
    pub identity: Vec<&'a str>,
    /// Every name (once) that folds to a method-override header.
    pub method_override: Vec<&'a str>,
    /// How many `X-Original-URI` and `X-Original-Method` headers the request carries.
    pub original_uri: usize,
    pub original_method: usize,
    /// A CORS preflight's headers are there (`Origin`, `Access-Control-Request-Method`).
    pub origin: bool,
    pub cors_request_method: bool,
}

fn push_once<'a>(names: &mut Vec<&'a str>, name: &'a str) {
    if !names.contains(&name) {
        names.push(name);
    }
}

/// One pass over the request's headers. `None` when the map is malformed, or a name to remove
/// is not text: the scan cannot vouch for the request, which is then refused (fail closed).
pub fn scan<'a>(pairs: &mut SerializedPairs<'a>, identity_header: &str) -> Option<HeaderScan<'a>> {
    scan_stripping(pairs, &[identity_header])
}

/// [`scan`], with every header the filter alone may set: the forwarded identity and the
/// permissive decision header (`enforcement_header`), each in any spelling that folds to it.
pub fn scan_stripping<'a>(
    pairs: &mut SerializedPairs<'a>,
    filter_headers: &[&str],
) -> Option<HeaderScan<'a>> {
    let mut found = HeaderScan::default();
    for (name, value) in pairs.by_ref() {
        if name == b":method" {
            found.method = Some(value);
        } else if name == b":path" {
            found.path = Some(value);
        } else if name.eq_ignore_ascii_case(b"authorization") {
            found.authorization.push(value);
        } else if name.eq_ignore_ascii_case(b"origin") {
            found.origin = true;
        } else if name.eq_ignore_ascii_case(b"access-control-request-method") {
            found.cors_request_method = true;
        } else if filter_headers.iter().any(|h| folds_to(name, h)) {
            push_once(&mut found.identity, std::str::from_utf8(name).ok()?);
        } else if METHOD_OVERRIDE_HEADERS.iter().any(|h| folds_to(name, h)) {
            push_once(&mut found.method_override, std::str::from_utf8(name).ok()?);
        } else if name.eq_ignore_ascii_case(ORIGINAL_URI.as_bytes()) {
            found.original_uri += 1;
            found.original_uri_value.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(ORIGINAL_METHOD.as_bytes()) {
            found.original_method += 1;
            found.original_method_value.get_or_insert(value);
        }
    }
    (!pairs.malformed()).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_of(pairs: &[(&str, &str)]) -> Option<(Vec<String>, Vec<String>, usize, usize)> {
        let bytes = serialize(pairs);
        let mut it = SerializedPairs::new(&bytes);
        let s = scan(&mut it, "x-user-id")?;
        let owned = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
        Some((owned(s.identity), owned(s.method_override), s.original_uri, s.original_method))
    }

    #[test]
    fn folding_ignores_case_and_separator_but_not_length_or_letters() {
        for spelling in ["x-user-id", "x_user_id", "x-user_id", "x_user-id", "X-USER_ID", "X_User-Id"] {
            assert!(folds_to(spelling.as_bytes(), "x-user-id"), "{spelling}");
            assert!(folds_to(spelling.as_bytes(), "X_USER_ID"), "{spelling}");
        }
        for other in ["x-user-ids", "x-userid", "x-user-i", "xx-user-id", "x-user.id", "x-user id", ""] {
            assert!(!folds_to(other.as_bytes(), "x-user-id"), "{other}");
        }
        assert!(!folds_to("x-\u{e9}ser-id".as_bytes(), "x-user-id"));
    }

    #[test]
    fn pairs_round_trip_including_repeats_and_empty_values() {
        let pairs = [(":method", "GET"), ("a", ""), ("a", "2"), ("x-long", "v\u{e9}")];
        let bytes = serialize(&pairs);
        let mut it = SerializedPairs::new(&bytes);
        let got: Vec<(&[u8], &[u8])> = it.by_ref().collect();
        let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
        assert_eq!(got, want);
        assert!(!it.malformed());
        let mut empty = SerializedPairs::new(&[]);
        assert_eq!(empty.next(), None);
        assert!(!empty.malformed());
    }

    #[test]
    fn the_scan_keeps_what_the_decision_reads() {
        let bytes = serialize(&[
            (":method", "PUT"),
            (":path", "/a?b"),
            ("authorization", "Bearer x"),
            ("Authorization", "Basic y"),
            ("x-original-uri", "/first"),
            ("x-original-uri", "/second"),
            ("x-original-method", "GET"),
        ]);
        let Some(s) = scan(&mut SerializedPairs::new(&bytes), "x-user-id") else { unreachable!() };
        assert_eq!(s.method, Some(&b"PUT"[..]));
        assert_eq!(s.path, Some(&b"/a?b"[..]));
        assert_eq!(s.authorization, vec![&b"Bearer x"[..], &b"Basic y"[..]]);
        assert_eq!((s.original_uri, s.original_uri_value), (2, Some(&b"/first"[..])));
        assert_eq!((s.original_method, s.original_method_value), (1, Some(&b"GET"[..])));
    }

    #[test]
    fn a_malformed_map_is_reported_never_a_panic() {
        let good = serialize(&[("x-user_id", "v"), ("b", "w")]);
        // Every truncation, a huge count, a missing NUL, a length past the end.
        for cut in 1..good.len() {
            let mut it = SerializedPairs::new(&good[..cut]);
            let _ = it.by_ref().count();
            assert!(it.malformed(), "cut at {cut}");
            assert_eq!(scan(&mut SerializedPairs::new(&good[..cut]), "x-user-id"), None, "cut at {cut}");
        }
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SerializedPairs::new(&huge).malformed());
        let mut no_nul = good.clone();
        let first_nul = 4 + 2 * 8 + "x-user_id".len();
        no_nul[first_nul] = b'x';
        assert_eq!(scan(&mut SerializedPairs::new(&no_nul), "x-user-id"), None);
        let mut long = good;
        long[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(scan(&mut SerializedPairs::new(&long), "x-user-id"), None);
    }

    #[test]
    fn every_spelling_of_the_identity_header_is_found_once() {
        let (identity, overrides, uri, method) = scan_of(&[
            (":path", "/a"),
            ("x-user-id", "1"),
            ("x-user_id", "2"),
            ("x_user-id", "3"),
            ("x-user_id", "4"),
            ("X-USER_ID", "5"),
            ("x-user-ids", "6"),
            ("x-userid", "7"),
        ])
        .unwrap();
        assert_eq!(identity, ["x-user-id", "x-user_id", "x_user-id", "X-USER_ID"]);
        assert!(overrides.is_empty());
        assert_eq!((uri, method), (0, 0));
    }

    #[test]
    fn a_configured_header_is_folded_too() {
        let bytes = serialize(&[("x-forwarded_user", "a"), ("X_FORWARDED_USER", "b"), ("x-user-id", "c")]);
        let s = scan(&mut SerializedPairs::new(&bytes), "X-Forwarded-User").unwrap();
        assert_eq!(s.identity, ["x-forwarded_user", "X_FORWARDED_USER"]);
    }

    #[test]
    fn method_overrides_are_found_in_every_spelling() {
        let (identity, overrides, _, _) = scan_of(&[
            ("x-http-method-override", "DELETE"),
            ("x_http_method", "DELETE"),
            ("X-Method_Override", "PUT"),
            ("x-http-method-overrides", "PUT"),
            ("x-method", "PUT"),
        ])
        .unwrap();
        assert!(identity.is_empty());
        assert_eq!(overrides, ["x-http-method-override", "x_http_method", "X-Method_Override"]);
    }

    #[test]
    fn original_headers_are_counted_exactly() {
        let (_, _, uri, method) = scan_of(&[
            ("x-original-uri", "/a"),
            ("x-original-method", "GET"),
            ("x-original-uri", "/b"),
            ("x_original_uri", "/c"),
        ])
        .unwrap();
        assert_eq!((uri, method), (2, 1));
    }

    #[test]
    fn nothing_found_allocates_nothing() {
        let bytes = serialize(&[(":method", "GET"), (":path", "/"), ("authorization", "Bearer x")]);
        let s = scan(&mut SerializedPairs::new(&bytes), "x-user-id").unwrap();
        assert_eq!(s.identity.capacity(), 0);
        assert_eq!(s.method_override.capacity(), 0);
    }
}
