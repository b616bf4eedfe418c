//! Request-path normalisation: the one canonical form that is both matched and forwarded.
//!
//! Rules: the query and fragment are cut off, every byte gets one spelling, duplicate slashes
//! collapse and dot segments are resolved. The one spelling: a character a path may hold as it
//! is (RFC 3986 `pchar`: unreserved, the sub-delimiters `!$&'()*+,=`, `:` and `@`) is written
//! as it is, its escape decoded (`%40` is `@`); any other byte is escaped, upper-case (raw
//! non-ASCII, a space, `"<>[]^`{|}`, and `%25`, `%3F`, `%23`, which stay escaped: decoding
//! `%25` would let a second decoding upstream see another path). So `/a%40b` and `/a@b` are
//! matched as one path, and that path is what is forwarded: an upstream decoding escapes cannot
//! see a resource the PEP did not match. Anything that could make the PEP and the upstream
//! disagree about which resource is meant is refused: an encoded `/` or `\`, a raw `\`, NUL or
//! control characters, a bad escape, `..` above the root, and `;` path parameters, raw or
//! encoded.

use thiserror::Error;

/// Why a path cannot be normalised safely; each maps to a `400`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains NUL or a control character")]
    ControlCharacter,
    #[error("path contains a malformed percent escape")]
    BadEscape,
    #[error("path climbs above the root with '..'")]
    AboveRoot,
    /// `;` starts path parameters, which Java servers strip from each segment (`/admin;x/y`
    /// is served as `/admin/y`, `..;` as `..`): the upstream would see another path.
    #[error("path contains ';' (path parameters)")]
    PathParameter,
}

/// Splits a raw `:path` (or `X-Original-URI`) into its path and its query (`?` included).
pub fn split_query(raw: &str) -> (&str, &str) {
    let without_fragment = raw.split_once('#').map_or(raw, |(p, _)| p);
    match without_fragment.find('?') {
        Some(i) => (&without_fragment[..i], &without_fragment[i..]),
        None => (without_fragment, ""),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A character RFC 3986 allows as it is in a path segment (`pchar`), `;` aside (refused).
fn is_plain_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]);
}

/// Decodes what may be decoded and checks every byte; dot segments are left for later. The
/// result is ASCII: every other byte comes out escaped. Bytes, not chars, and runs of plain
/// bytes copied at once: the cost is linear in the path with a small constant, whatever its
/// shape (a 60 kB path is a client's to send).
fn canonical_escapes(path: &str) -> Result<Vec<u8>, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let v = (hi << 4) | lo;
                if v == b'/' || v == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if v < 0x20 || v == 0x7f {
                    return Err(PathError::ControlCharacter);
                }
                // Decoded, `%3B` would be a path parameter for a server that decodes first.
                if v == b';' {
                    return Err(PathError::PathParameter);
                }
                if is_plain_pchar(v) {
                    out.push(v);
                } else {
                    push_escape(&mut out, v);
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ if b == b'/' || is_plain_pchar(b) => {
                let run = bytes
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&c| c != b'/' && !is_plain_pchar(c))
                    .unwrap_or(bytes.len() - i);
                out.extend_from_slice(bytes.get(i..i + run).unwrap_or_default());
                i += run;
            }
            _ => {
                push_escape(&mut out, b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Normalises a path (query and fragment are ignored). The result starts with `/`, has no
/// empty, `.` or `..` segments, and keeps one trailing `/` when the input had one.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let (path, _query) = split_query(raw);
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = canonical_escapes(path)?;
    // One pass over the segments, written straight into `out`; `..` cuts `out` back to the
    // `/` of the segment it undoes (each byte written once and cut at most once: linear).
    let mut out: Vec<u8> = Vec::with_capacity(decoded.len());
    let mut trailing_slash = false;
    for segment in decoded.get(1..).unwrap_or_default().split(|&b| b == b'/') {
        trailing_slash = false;
        match segment {
            b"" | b"." => trailing_slash = true,
            b".." => {
                let Some(cut) = out.iter().rposition(|&b| b == b'/') else {
                    return Err(PathError::AboveRoot);
                };
                out.truncate(cut);
                trailing_slash = true;
            }
            s => {
                out.push(b'/');
                out.extend_from_slice(s);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    // ASCII by construction (`canonical_escapes`); a failure here would be a bug, refused.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize_path(raw).unwrap()
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a/b"), "/a/b");
        assert_eq!(ok("/a/b/"), "/a/b/");
    }

    #[test]
    fn query_and_fragment_are_ignored() {
        assert_eq!(ok("/a/b?x=1/../.."), "/a/b");
        assert_eq!(ok("/a#frag"), "/a");
        assert_eq!(split_query("/a?x=1#f"), ("/a", "?x=1"));
        assert_eq!(split_query("/a"), ("/a", ""));
    }

    #[test]
    fn duplicate_slashes_collapse() {
        assert_eq!(ok("//a///b"), "/a/b");
        assert_eq!(ok("/a//"), "/a/");
    }

    #[test]
    fn dot_segments_resolve() {
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/x/../b"), "/a/b");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/.."), "/");
    }

    #[test]
    fn dots_inside_names_are_kept() {
        assert_eq!(ok("/a/..b/.c/d."), "/a/..b/.c/d.");
    }

    #[test]
    fn climbing_above_root_is_refused() {
        assert_eq!(normalize_path("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize_path("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(normalize_path("/%2e%2e/etc"), Err(PathError::AboveRoot));
    }

    #[test]
    fn unreserved_escapes_decode_and_then_count_as_dots() {
        assert_eq!(ok("/%61%62c"), "/abc");
        assert_eq!(ok("/a/%2E/b"), "/a/b");
        assert_eq!(ok("/a/x/%2e%2E/b"), "/a/b");
        assert_eq!(ok("/%7e%2D%5f"), "/~-_");
    }

    #[test]
    fn reserved_escapes_are_kept_uppercased() {
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        assert_eq!(ok("/%c3%a9"), "/%C3%A9");
    }

    #[test]
    fn raw_non_ascii_is_percent_encoded() {
        assert_eq!(ok("/é"), "/%C3%A9");
        assert_eq!(ok("/é"), ok("/%c3%a9"));
    }

    #[test]
    fn unsafe_inputs_are_refused() {
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a%00"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a\0"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a\tb"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/admin;x/users"), Err(PathError::PathParameter));
        assert_eq!(normalize_path("/public/..;/admin"), Err(PathError::PathParameter));
        // A server that decodes before cutting path parameters would read `%3B` as `;`.
        assert_eq!(normalize_path("/a%3bb"), Err(PathError::PathParameter));
        assert_eq!(normalize_path("/admin%3Bx/users"), Err(PathError::PathParameter));
    }

    /// Properties over many generated paths: idempotence, canonical shape, no dot segments.
    #[test]
    fn normalisation_is_idempotent_and_canonical() {
        let alphabet = [
            "a", "b", "/", ".", "..", "%2e", "%41", "%20", "~", "é", "//", "%7E", "%40", "@", "%3a", "+",
            "%2B", "%25", "%2540", "[", "%5d", " ", "%3F", "%23", "*", "'",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut raw = String::from("/");
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            let mut s = seed;
            for _ in 0..len {
                raw.push_str(alphabet[(s % alphabet.len() as u64) as usize]);
                s /= alphabet.len() as u64;
                if s == 0 {
                    s = seed.rotate_left(17);
                }
            }
            match normalize_path(&raw) {
                Ok(n) => {
                    assert_eq!(normalize_path(&n).as_ref(), Ok(&n), "not idempotent for {raw:?}");
                    assert!(n.starts_with('/'));
                    assert!(!n.contains("//"), "{raw:?} -> {n:?}");
                    assert!(n.split('/').all(|seg| seg != "." && seg != ".."), "{raw:?} -> {n:?}");
                    assert!(n.is_ascii());
                    assert!(is_one_spelling(&n), "{raw:?} -> {n:?}");
                }
                Err(e) => assert_eq!(e, PathError::AboveRoot, "unexpected error for {raw:?}"),
            }
        }
    }

    /// Every byte of a canonical path has its one spelling: plain `pchar`s raw, the rest
    /// escaped upper-case.
    fn is_one_spelling(n: &str) -> bool {
        let b = n.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let (Some(hi), Some(lo)) = (b.get(i + 1), b.get(i + 2)) else { return false };
                if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() {
                    return false;
                }
                let (Some(hi), Some(lo)) = (hex_value(*hi), hex_value(*lo)) else { return false };
                if is_plain_pchar((hi << 4) | lo) {
                    return false;
                }
                i += 3;
            } else {
                if b[i] != b'/' && !is_plain_pchar(b[i]) {
                    return false;
                }
                i += 1;
            }
        }
        true
    }

    /// A spelling that dodged protection: `/users/alice%40example.com` was kept encoded, so it did not match
    /// the resource `/users/alice@example.com` while the upstream, decoding `%40`, served it.
    #[test]
    fn sub_delimiters_colon_and_at_are_decoded() {
        assert_eq!(ok("/users/alice%40example.com/doc"), "/users/alice@example.com/doc");
        assert_eq!(ok("/users/alice%40example%2Ecom"), "/users/alice@example.com");
        for c in "!$&'()*+,=:@".chars() {
            let b = c as u8;
            for escaped in [format!("/a%{b:02X}b"), format!("/a%{b:02x}b")] {
                assert_eq!(ok(&escaped), format!("/a{c}b"), "{escaped}");
            }
            assert_eq!(ok(&format!("/a{c}b")), format!("/a{c}b"), "raw {c} is kept");
        }
    }

    #[test]
    fn percent_and_delimiters_stay_escaped_and_are_not_decoded_twice() {
        assert_eq!(ok("/a%25b"), "/a%25b");
        assert_eq!(ok("/a%2540b"), "/a%2540b", "%25 is not decoded, so %40 is not formed");
        assert_eq!(ok("/a%252e%252e"), "/a%252e%252e");
        assert_eq!(ok("/a%3fb%23c"), "/a%3Fb%23c");
        assert_eq!(ok("/a%5b0%5D"), "/a%5B0%5D");
    }

    #[test]
    fn ascii_a_path_may_not_hold_raw_is_escaped() {
        assert_eq!(ok("/a b"), "/a%20b");
        assert_eq!(ok("/a[0]"), "/a%5B0%5D");
        assert_eq!(ok("/{x}|\"<>^`"), "/%7Bx%7D%7C%22%3C%3E%5E%60");
    }

    /// Raw and escaped spellings of each printable ASCII character are one path (or are both
    /// refused), `/`, `\`, `?`, `#` and `%` aside (each has its own rule, tested above).
    #[test]
    fn raw_and_escaped_spellings_normalise_alike() {
        for b in 0x20u8..0x7f {
            if matches!(b, b'/' | b'\\' | b'?' | b'#' | b'%') {
                continue;
            }
            let raw = format!("/x{}y", char::from(b));
            let escaped = format!("/x%{b:02x}y");
            assert_eq!(normalize_path(&raw), normalize_path(&escaped), "{raw:?} vs {escaped:?}");
        }
    }

    /// What an upstream that decodes every escape once reads for a forwarded path.
    fn upstream_view(n: &str) -> Vec<u8> {
        let b = n.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match (b[i], b.get(i + 1).copied().and_then(hex_value), b.get(i + 2).copied().and_then(hex_value))
            {
                (b'%', Some(hi), Some(lo)) => {
                    out.push((hi << 4) | lo);
                    i += 3;
                }
                (c, _, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    }

    /// What is matched is what is forwarded, and the upstream cannot read two forwarded paths
    /// alike: two raw paths are one canonical path exactly when a decoding upstream reads
    /// their canonical forms alike. (Today's code kept `%40` and `@` apart.)
    #[test]
    fn a_decoding_upstream_reads_distinct_canonical_paths_distinctly() {
        let alphabet = [
            "a", "/", "@", "%40", ":", "%3A", "+", "%2b", "=", "%3D", "!", "%21", "%25", "%2540", "[", "%5B",
            " ", "%20", "(", "%28", "*", "%2A", "$", "%24", ",", "%2C", "&", "%26", "'", "%27", ")", "%29",
        ];
        let mut seen: std::collections::HashMap<Vec<u8>, String> = std::collections::HashMap::new();
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..50_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut raw = String::from("/");
            let mut s = seed;
            for _ in 0..(seed % 5) {
                raw.push_str(alphabet[(s % alphabet.len() as u64) as usize]);
                s /= alphabet.len() as u64;
            }
            let Ok(n) = normalize_path(&raw) else { continue };
            let previous = seen.entry(upstream_view(&n)).or_insert_with(|| n.clone());
            assert_eq!(previous, &n, "{raw:?}: the upstream reads {n:?} and {previous:?} alike");
        }
    }
}
