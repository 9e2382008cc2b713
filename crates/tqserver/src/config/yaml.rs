//! YAML reading with errors a person can act on: the file, the line, the
//! dotted key, and for a misspelt key the nearest valid one.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// Most problems one file reports (a guard: each one costs a parse).
const MOST_PROBLEMS: usize = 64;

/// What [`parse_all`] read: the value, once every key in error was left
/// out, and the problems (empty when the file is good), with the dotted
/// keys that were left out, so later checks do not report them twice.
pub(crate) struct Parsed<T> {
    pub(crate) value: Option<T>,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) left_out: Vec<String>,
}

/// Parses `text` into `T` and reports every problem, not only the first:
/// serde stops at the first unknown key or bad value, so the line it
/// names (and the block under it) is blanked and the text parsed again,
/// line numbers unchanged, until it parses or a problem has no line.
pub(crate) fn parse_all<T: DeserializeOwned>(file: &Path, text: &str) -> Parsed<T> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut errors = Vec::new();
    let mut left_out = Vec::new();
    loop {
        let now = lines.join("\n");
        match parse::<T>(file, &now) {
            Ok(v) => {
                return Parsed {
                    value: Some(v),
                    errors,
                    left_out,
                };
            }
            Err(e) => {
                let at = e.line.filter(|l| *l >= 1 && *l <= lines.len());
                let blanked = at.is_some_and(|l| blank_block(&mut lines, l - 1));
                left_out.push(e.key.clone());
                errors.push(e);
                if !blanked || errors.len() >= MOST_PROBLEMS {
                    return Parsed {
                        value: None,
                        errors,
                        left_out,
                    };
                }
            }
        }
    }
}

/// Blanks line `i` and the block it opens (deeper lines, and a sequence
/// written at its own indent); false when there was nothing to blank.
fn blank_block(lines: &mut [String], i: usize) -> bool {
    let first = &lines[i];
    let trimmed = first.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return false;
    }
    let indent = first.len() - trimmed.len();
    let opens = !trimmed.starts_with("- ");
    lines[i].clear();
    for line in lines.iter_mut().skip(i + 1) {
        let t = line.trim_start();
        let deeper = line.len() - t.len() > indent;
        let sequence = opens && line.len() - t.len() == indent && (t.starts_with("- ") || t == "-");
        if t.is_empty() || t.starts_with('#') || deeper || sequence {
            line.clear();
        } else {
            break;
        }
    }
    true
}

/// Parses `text` into `T` (whose structs deny unknown fields).
pub(crate) fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    // An empty file is an empty mapping, not an error.
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let raw = e.to_string();
        // "php.pool: unknown field `x`, expected … at line 5 column 5"
        let msg = match raw.rfind(" at line ") {
            Some(i) => &raw[..i],
            None => &raw[..],
        };
        let (key, msg) = split_path(msg);
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or_default();
            let expected: Vec<&str> = rest
                .split_once("expected")
                .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
                .unwrap_or_default();
            let full = join(key, field);
            let hint = match nearest(field, &expected) {
                Some(n) => format!("unknown key; did you mean {}?", join(key, n)),
                None if expected.is_empty() => "unknown key".to_string(),
                None => format!("unknown key; valid keys here: {}", expected.join(", ")),
            };
            return ConfigError::new(file, line, &full, hint);
        }
        ConfigError::new(file, line, key, msg.to_string())
    })
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Splits serde_yaml's "a.b.c: message" into the path and the message.
fn split_path(msg: &str) -> (&str, &str) {
    if let Some((path, rest)) = msg.split_once(": ") {
        let is_path = !path.is_empty()
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-[]".contains(c));
        if is_path {
            return (path, rest);
        }
    }
    ("", msg)
}

/// The candidate closest to `word`, when it is close enough to be a typo.
pub(crate) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The 1-based line where the dotted `key` is written in `text`, found by
/// following indentation (good enough for the block mappings configs use).
pub(crate) fn key_line(text: &str, key: &str) -> Option<usize> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut depth = 0;
    let mut indent_stack: Vec<usize> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        while indent_stack.last().is_some_and(|&d| indent <= d) {
            indent_stack.pop();
            if indent_stack.len() < depth {
                // Left the mapping we were inside: no match below it.
                return None;
            }
        }
        if indent_stack.len() != depth {
            continue;
        }
        let Some((name, _)) = trimmed.split_once(':') else {
            continue;
        };
        let name = name.trim().trim_matches(|c| c == '"' || c == '\'');
        if name == parts[depth] {
            if depth + 1 == parts.len() {
                return Some(i + 1);
            }
            indent_stack.push(indent);
            depth += 1;
        }
    }
    None
}

/// The line of entry `index` of the top-level list `list` (its `- `
/// line), or with `inner` the line of that key inside the entry; `None`
/// when not found.
pub(crate) fn item_line(
    text: &str,
    list: &str,
    index: usize,
    inner: Option<&str>,
) -> Option<usize> {
    let start = key_line(text, list)?;
    let mut item_indent = None;
    let mut seen = 0usize;
    let mut found: Option<usize> = None;
    for (i, line) in text.lines().enumerate().skip(start) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent == 0 && !trimmed.starts_with('-') {
            break; // the next top-level key
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            let at = *item_indent.get_or_insert(indent);
            if indent == at {
                if found.is_some() {
                    break; // the next entry
                }
                if seen == index {
                    found = Some(i + 1);
                }
                seen += 1;
            }
        }
        let Some(item) = found else { continue };
        let Some(key) = inner else { return Some(item) };
        let body = trimmed.trim_start_matches("- ").trim_start();
        if body.starts_with(&format!("{key}:")) {
            return Some(i + 1);
        }
    }
    if inner.is_some() { found } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# c\npath: /blog\nphp:\n  settings:\n    x: 1\n  pool:\n    # comment\n    min_workers: 2\n    max_workers: 3\nlogging:\n  min_workers: 9\n";

    #[test]
    fn item_lines_find_entries_and_their_keys() {
        let doc = "path: /\nrules:\n  # c\n  - path: /a\n    deny: 404\n  - ext: [css]\n    cache: 1d\nphp:\n  x: 1\n";
        assert_eq!(item_line(doc, "rules", 0, None), Some(4));
        assert_eq!(item_line(doc, "rules", 0, Some("deny")), Some(5));
        assert_eq!(item_line(doc, "rules", 1, None), Some(6));
        assert_eq!(item_line(doc, "rules", 1, Some("cache")), Some(7));
        // A key the entry lacks: the entry's line.
        assert_eq!(item_line(doc, "rules", 1, Some("deny")), Some(6));
        assert_eq!(item_line(doc, "rules", 2, None), None);
    }

    #[test]
    fn key_lines_follow_nesting() {
        assert_eq!(key_line(DOC, "path"), Some(2));
        assert_eq!(key_line(DOC, "php.pool.min_workers"), Some(8));
        assert_eq!(key_line(DOC, "php.pool.max_workers"), Some(9));
        assert_eq!(key_line(DOC, "logging.min_workers"), Some(11));
        assert_eq!(key_line(DOC, "php.pool.nope"), None);
    }

    #[test]
    fn blanking_takes_the_block_and_its_sequence_and_keeps_line_numbers() {
        let mut lines: Vec<String> = "a: 1\nbad:\n  x: 1\n  # c\n  y: [2]\nlist:\n- 1\n- 2\nz: 3\n"
            .lines()
            .map(str::to_string)
            .collect();
        assert!(blank_block(&mut lines, 1));
        assert_eq!(lines[..6], ["a: 1", "", "", "", "", "list:"]);
        assert!(blank_block(&mut lines, 5));
        assert_eq!(lines, ["a: 1", "", "", "", "", "", "", "", "z: 3"]);
        // A comment or an empty line is nothing to blank: parsing stops.
        assert!(!blank_block(&mut lines, 1));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Two {
        a: Option<u32>,
        b: Option<bool>,
    }

    #[test]
    fn every_bad_key_of_a_file_is_reported_with_its_line() {
        let p = parse_all::<Two>(Path::new("f.yaml"), "a: x\nc: 1\nb: maybe\nd:\n  e: 1\n");
        let got: Vec<(Option<usize>, &str)> =
            p.errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(1), "a"),
                (Some(2), "c"),
                (Some(3), "b"),
                (Some(4), "d")
            ]
        );
        assert!(p.value.is_some(), "what is left parses");
        let good = parse_all::<Two>(Path::new("f.yaml"), "a: 1\n");
        assert!(good.errors.is_empty() && good.value.is_some());
    }

    #[test]
    fn nearest_suggests_typos_only() {
        let c = ["min_workers", "max_workers", "manager"];
        assert_eq!(nearest("min_worker", &c), Some("min_workers"));
        assert_eq!(nearest("mangaer", &c), Some("manager"));
        assert_eq!(nearest("zzzzzz", &c), None);
    }
}
