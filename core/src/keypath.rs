//! Strict JSON for operator-written documents: parses into types that refuse unknown keys, and
//! turns serde's error into the exact key path at fault (`forward.alg`, `resources[2].uri`)
//! and a problem an operator can act on: the closest valid key or value when one is near,
//! the valid ones otherwise. A value is never echoed where it may hold a secret.

use serde::de::DeserializeOwned;

/// Keys whose value is a secret: a wrong type there is reported without the value.
const SECRET_KEYS: &[&str] = &["client_secret", "forward.key_pem"];

/// What went wrong, and where: `path` is empty for the document itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub path: String,
    pub problem: String,
}

/// Parses `bytes` as `T`, naming the key path of any error.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, KeyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // `.` is the document itself; `?` a key the parser had not read yet (a syntax error).
        let known = path.find('?').map_or(path.as_str(), |i| &path[..i]);
        let known = if known == "." { "" } else { known.trim_end_matches('.') };
        describe(known.to_string(), e.inner())
    })?;
    // Trailing characters after the document.
    de.end().map_err(|e| describe(String::new(), &e))?;
    Ok(value)
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// serde's message without serde_json's ` at line L column C`.
fn message_of(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    match full.strip_suffix(&position) {
        Some(message) if err.line() > 0 => message.to_string(),
        _ => full,
    }
}

fn describe(path: String, err: &serde_json::Error) -> KeyError {
    use serde_json::error::Category;
    if matches!(err.classify(), Category::Syntax | Category::Eof | Category::Io) {
        // The position is what tells the operator where to look.
        return KeyError { path, problem: format!("not valid JSON: {err}") };
    }
    let message = message_of(err);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // The path ends with the unknown key itself (which may hold a dot).
        let key = rest.find("`, ").map_or(rest, |i| &rest[..i]);
        let candidates = backticked(rest[key.len()..].strip_prefix("`, expected ").unwrap_or(""));
        let parent = path.strip_suffix(key).unwrap_or(&path).trim_end_matches('.').to_string();
        let problem = match closest(key, &candidates) {
            Some(best) => format!("unknown key; did you mean `{}`?", join(&parent, best)),
            None if candidates.is_empty() => "unknown key (this object takes no keys)".to_string(),
            None => format!("unknown key (valid here: {})", quoted_list(&candidates)),
        };
        return KeyError { path, problem };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, expected) = match rest.rfind("`, expected ") {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest.trim_end_matches('`'), ""),
        };
        let candidates = backticked(expected.strip_prefix("`").unwrap_or(expected));
        let shown = printable(value, 64);
        let problem = match closest(value, &candidates) {
            Some(best) => format!("unknown value `{shown}`; did you mean `{best}`?"),
            None => format!("unknown value `{shown}` (valid: {})", quoted_list(&candidates)),
        };
        return KeyError { path, problem };
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
        return KeyError { path: join(&path, field), problem: "is required".into() };
    }
    if let Some(field) = message.strip_prefix("duplicate field `").and_then(|r| r.strip_suffix('`')) {
        return KeyError { path: join(&path, field), problem: "is given twice".into() };
    }
    let secret =
        path.is_empty() || SECRET_KEYS.iter().any(|s| *s == path || s.starts_with(&format!("{path}.")));
    KeyError { path, problem: plain_words(&message, secret) }
}

/// The names between backticks, in order.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn quoted_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// A value as it may appear in a message: printable, at most `max` characters.
fn printable(value: &str, max: usize) -> String {
    let mut out: String = value.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if value.chars().count() > max {
        out.push('…');
    }
    out
}

/// serde's wording in the words of the configuration (no Rust type names); the offending
/// value left out where it may be a secret, and cut short elsewhere.
fn plain_words(message: &str, secret: bool) -> String {
    let (head, expected) = match message.rfind(", expected ") {
        Some(i) => (&message[..i], &message[i + ", expected ".len()..]),
        None => return message.to_string(),
    };
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" => "a non-negative integer",
        "a sequence" => "a list",
        "a map" => "an object",
        e if e.starts_with("struct ") => "an object",
        e => e,
    };
    let head = match head.split_once(": ") {
        Some((kind, _)) if secret => format!("{kind}: a value not shown here"),
        Some((kind, unexpected)) => format!("{kind}: {}", printable(unexpected, 80)),
        None => head.to_string(),
    };
    format!("{head}, expected {expected}")
}

/// The candidate nearest to `word` (case and `-`/`_` aside), if it is near enough to be a
/// likely typo: one edit for short words, up to a third of the word for long ones.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let normal = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let word = normal(word);
    let limit = if word.chars().count() <= 3 { 1 } else { (word.chars().count() / 3).max(2) };
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &normal(c)), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        name: String,
        #[serde(default)]
        #[allow(dead_code)]
        count: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        #[allow(dead_code)]
        items: Vec<Inner>,
        #[serde(default)]
        #[allow(dead_code)]
        client_secret: Option<String>,
    }

    fn err(json: &str) -> KeyError {
        from_slice::<Outer>(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("unmached", "unmatched"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("Unmatched", &["unmatched"]), Some("unmatched"));
        assert_eq!(closest("time-out_ms", &["timeout_ms", "realm"]), Some("timeout_ms"));
        assert_eq!(closest("zzzz", &["realm", "issuer"]), None);
    }

    #[test]
    fn paths_reach_into_lists_and_objects() {
        let e = err(r#"{"items":[{"name":"a"},{"name":"b","cuont":1}]}"#);
        assert_eq!(e.path, "items[1].cuont");
        assert_eq!(e.problem, "unknown key; did you mean `items[1].count`?");
        let e = err(r#"{"items":[{"name":"a","zzzzzz":1}]}"#);
        assert_eq!(e.problem, "unknown key (valid here: `name`, `count`)");
        let e = err(r#"{"items":[{}]}"#);
        assert_eq!((e.path.as_str(), e.problem.as_str()), ("items[0].name", "is required"));
        let e = err(r#"{"items":[{"name":"a","count":"x"}]}"#);
        assert_eq!(e.path, "items[0].count");
        assert_eq!(e.problem, "invalid type: string \"x\", expected a non-negative integer");
        let e = err(r#"{"items":{"name":"a"}}"#);
        assert_eq!(e.problem, "invalid type: map, expected a list");
        let e = err(r#"{"items":[],"items":[]}"#);
        assert_eq!((e.path.as_str(), e.problem.as_str()), ("items", "is given twice"));
    }

    #[test]
    fn secrets_and_documents_are_not_echoed() {
        let e = err(r#"{"client_secret":12345678}"#);
        assert_eq!(e.path, "client_secret");
        assert!(!e.problem.contains("12345678"), "{e:?}");
        assert_eq!(e.problem, "invalid type: a value not shown here, expected a string");
        let e = from_slice::<Outer>(br#""{\"client_secret\":\"s3cr3t\"}""#).unwrap_err();
        assert_eq!(e.path, "");
        assert!(!e.problem.contains("s3cr3t"), "{e:?}");
        assert!(e.problem.ends_with("expected an object"), "{e:?}");
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let e = err("{\"items\":[\n{\"name\":\"a\",}]}");
        assert!(e.problem.starts_with("not valid JSON: "), "{e:?}");
        assert!(e.problem.contains("line 2"), "{e:?}");
        assert_eq!(e.path, "items[0]");
        let e = err(r#"{} x"#);
        assert_eq!(e.path, "");
        assert!(e.problem.contains("trailing characters"), "{e:?}");
    }
}
