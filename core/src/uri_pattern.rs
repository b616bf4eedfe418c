//! `UriPattern`: a resource's `uri` as the matcher reads it.
//!
//! - a literal segment matches itself (case-sensitive, compared in canonical form; a `*` inside
//!   a segment is a literal character, as `%2A` is; a whole-segment literal `*` is written
//!   `%2A`, and so spelled back, so that it never reads as a wildcard);
//! - `{name}` and `*` match exactly one segment;
//! - `**`, as the last segment only, matches zero or more segments;
//! - a plain `uri` (no pattern segment) covers its path and everything below it, as if it ended
//!   in `/**`, unless the resource is `exact`, which makes it match its own path only.
//!
//! Precedence between patterns that match a path: segment by segment from the left, a literal
//! before `{}`/`*` before `**`; at equal rank the longer pattern wins. Two patterns of equal rank
//! that can match the same path have the same `shape`: a configuration error.

use thiserror::Error;

use crate::resource::canonical_path;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches this segment (canonical form) only.
    Literal(String),
    /// `{name}` or `*`: any one segment.
    One,
}

/// A parsed `uri`: its segments, and whether any number of segments may follow (`**`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriPattern {
    pub segments: Vec<Segment>,
    pub rest: bool,
}

/// Why a `uri` is not a pattern the filter can match with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    #[error("{0}")]
    Path(String),
    #[error("segment {0:?}: a pattern segment is a whole segment, `{{name}}`, `*` or `**` (a literal brace is `%7B`/`%7D`)")]
    PartialWildcard(String),
    #[error("`**` may only be the last segment")]
    RestNotLast,
    #[error("a pattern has no empty, `.` or `..` segment and no query")]
    NotCanonical,
    #[error("`exact` and a trailing `**` contradict each other")]
    ExactWithRest,
}

fn is_param(segment: &str) -> bool {
    segment.len() > 2
        && segment.starts_with('{')
        && segment.ends_with('}')
        && segment[1..segment.len() - 1].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_wildcard(segment: &str) -> bool {
    segment == "*" || segment == "**" || is_param(segment)
}

impl UriPattern {
    /// Parses `uri` (`exact`: no implicit `/**` on a plain uri) into its canonical spelling and
    /// its pattern.
    pub fn parse(uri: &str, exact: bool) -> Result<(String, UriPattern), PatternError> {
        let raw_segments: Vec<&str> =
            uri.strip_prefix('/').map(|r| r.split('/').collect()).unwrap_or_default();
        if !uri.starts_with('/') || !raw_segments.iter().any(|s| is_wildcard(s)) {
            // Plain: today's rule, its canonical path. A brace that makes no `{name}` is a
            // mistake, not a literal (the path rules would escape it into one).
            if let Some(s) = raw_segments.iter().find(|s| s.contains(['{', '}'])) {
                return Err(PatternError::PartialWildcard(s.to_string()));
            }
            let canonical = canonical_path(uri).map_err(|e| PatternError::Path(e.to_string()))?;
            let segments: Vec<Segment> = canonical
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| Segment::Literal(s.to_string()))
                .collect();
            let spelled = spell(&segments);
            return Ok((spelled, UriPattern { segments, rest: !exact }));
        }
        let mut segments = Vec::with_capacity(raw_segments.len());
        let mut rest = false;
        let mut spelled = String::new();
        for (i, s) in raw_segments.iter().enumerate() {
            if rest {
                return Err(PatternError::RestNotLast);
            }
            match *s {
                "**" => {
                    if i + 1 != raw_segments.len() {
                        return Err(PatternError::RestNotLast);
                    }
                    rest = true;
                    spelled.push_str("/**");
                }
                "*" => {
                    segments.push(Segment::One);
                    spelled.push_str("/*");
                }
                s if is_param(s) => {
                    segments.push(Segment::One);
                    spelled.push('/');
                    spelled.push_str(s);
                }
                "" | "." | ".." => return Err(PatternError::NotCanonical),
                s if s.contains(['{', '}', '?', '#']) => {
                    return Err(PatternError::PartialWildcard(s.to_string()))
                }
                s => {
                    // The segment as a path of its own: its escapes made canonical, and still one
                    // segment (an encoded `/` is refused by the path rules).
                    let canonical =
                        canonical_path(&format!("/{s}")).map_err(|e| PatternError::Path(e.to_string()))?;
                    let literal = canonical.trim_start_matches('/');
                    if literal.is_empty() || literal.contains('/') {
                        return Err(PatternError::NotCanonical);
                    }
                    segments.push(Segment::Literal(literal.to_string()));
                    spelled.push('/');
                    spelled.push_str(&spell_literal(literal));
                }
            }
        }
        if exact && rest {
            return Err(PatternError::ExactWithRest);
        }
        Ok((spelled, UriPattern { segments, rest }))
    }

    /// What makes two resources conflict: the shape, and whether the pattern ends with the path
    /// or takes the rest (`/a` exact and `/a` may stand side by side; `/a` and `/a/**` not).
    pub fn shape_key(&self) -> String {
        if self.rest {
            self.shape()
        } else {
            format!("{} (exact)", self.shape())
        }
    }

    /// What two patterns share when they match the same paths at the same precedence:
    /// literals, `*` for a one-segment wildcard, `**` for the rest.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Literal(l) => out.push_str(&spell_literal(l)),
                Segment::One => out.push('*'),
            }
        }
        if self.rest {
            out.push_str("/**");
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

/// A literal segment as a uri spells it: a literal that would read as a wildcard (`*`, `**`,
/// from `%2A`) keeps its escapes; any other (`***` too) is spelled as it is.
fn spell_literal(literal: &str) -> String {
    if is_wildcard(literal) {
        literal.replace('*', "%2A")
    } else {
        literal.to_string()
    }
}

/// The canonical spelling of plain literal segments.
fn spell(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        if let Segment::Literal(l) = s {
            out.push('/');
            out.push_str(&spell_literal(l));
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> Result<(String, UriPattern), PatternError> {
        UriPattern::parse(uri, false)
    }

    fn lit(s: &str) -> Segment {
        Segment::Literal(s.into())
    }

    #[test]
    fn a_plain_uri_covers_what_is_below_unless_exact() {
        let (uri, p) = parse("/a/./b//c/").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(uri, "/a/b/c");
        assert_eq!(p, UriPattern { segments: vec![lit("a"), lit("b"), lit("c")], rest: true });
        let (_, exact) = UriPattern::parse("/a", true).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!exact.rest);
        let (root, p) = parse("/").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((root.as_str(), p.segments.len(), p.rest), ("/", 0, true));
    }

    #[test]
    fn patterns_are_whole_segments() {
        let (uri, p) = parse("/orders/{id}/items/*/**").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(uri, "/orders/{id}/items/*/**");
        assert_eq!(p.segments, vec![lit("orders"), Segment::One, lit("items"), Segment::One]);
        assert!(p.rest);
        assert_eq!(p.shape(), "/orders/*/items/*/**");
        assert_eq!(parse("/a/{x}").map(|(_, p)| p.shape()), parse("/a/*").map(|(_, p)| p.shape()));
        assert_eq!(parse("/a").map(|(_, p)| p.shape()), parse("/a/**").map(|(_, p)| p.shape()));
        for bad in
            ["/a/{id}x", "/a/{}", "/a/**/b", "/a/**/**", "/a//{id}", "/a/../{id}", "/{a b}", "/a/{x", "/a/}"]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(UriPattern::parse("/a/**", true), Err(PatternError::ExactWithRest));
        // Escapes of a literal next to a wildcard are made canonical, as in a plain uri.
        let (uri, _) = parse("/caf%c3%a9/{id}").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(uri, parse("/caf%C3%A9/{id}").unwrap_or_else(|e| unreachable!("{e}")).0);
        assert!(parse("/a%2Fb/{id}").is_err(), "an encoded / stays refused");
    }

    /// A literal `*` (legal in a path) never turns into a wildcard, however it is written, and
    /// the spelling kept re-reads as the same pattern.
    #[test]
    fn a_literal_star_stays_literal() {
        for (uri, literal) in
            [("/subs/a%2Az", "a*z"), ("/subs/a*z", "a*z"), ("/files/%2A", "*"), ("/f/%2A%2A", "**")]
        {
            let (spelled, p) = parse(uri).unwrap_or_else(|e| unreachable!("{uri}: {e}"));
            assert_eq!(p.segments.last(), Some(&lit(literal)), "{uri}");
            assert!(p.rest, "{uri}: a plain uri");
            let (again, p2) = parse(&spelled).unwrap_or_else(|e| unreachable!("{spelled}: {e}"));
            assert_eq!((again, p2), (spelled.clone(), p), "{uri} spelled {spelled}");
        }
        // Three stars are no wildcard: spelled plainly, however written (found by the
        // `resource_table` fuzz target, whose listed uris must read back as they are).
        for uri in ["/s/***", "/s/%2A%2A%2A", "/s/*%2A*"] {
            let (spelled, p) = parse(uri).unwrap_or_else(|e| unreachable!("{uri}: {e}"));
            assert_eq!((spelled.as_str(), p.segments.last()), ("/s/***", Some(&lit("***"))), "{uri}");
        }
        let (spelled, p) = parse("/x/%2A/{id}").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(spelled, "/x/%2A/{id}");
        assert_eq!(p.segments, vec![lit("x"), lit("*"), Segment::One]);
        assert_eq!(parse("/subs/a!$&'()*+,=:@z").map(|(_, p)| p.segments.len()), Ok(2));
        // Its shape is not a wildcard's: the two may stand side by side.
        assert_ne!(parse("/files/%2A").map(|(_, p)| p.shape()), parse("/files/*/**").map(|(_, p)| p.shape()));
    }
}
