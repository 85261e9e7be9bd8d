//! The header of a scenario file: a leading block of `//!` lines, each
//! `key: value`, before any code.
//!
//! Contract: [`Header::parse`] reads the `//!` lines at the top of the file
//! (blank `//!` lines and ordinary `//` comments inside the block are
//! allowed) and stops at the first line that is neither. `name` and
//! `description` are required; `site` (default `default`), `tags`
//! (comma-separated), `timeout` (virtual time, a duration) and
//! `wall_timeout` (wall-clock seconds, a duration) are optional. A
//! `description` may continue on following `//!` lines that start with
//! two spaces. Every error names the line (1-based) and what is allowed.

use std::time::Duration;

use crate::duration::parse_duration;

/// Keys a header may have.
pub const KEYS: &[&str] = &[
    "name",
    "description",
    "site",
    "tags",
    "timeout",
    "wall_timeout",
];

/// Default virtual-time budget of a scenario.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);
/// Default wall-time budget of a scenario.
pub const DEFAULT_WALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The parsed header of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub name: String,
    pub description: String,
    /// `default` (the embedded default site) or a site file, relative to the
    /// scenario file.
    pub site: String,
    pub tags: Vec<String>,
    /// Virtual time the scenario may advance at most.
    pub timeout: Duration,
    /// Wall time the scenario may take at most.
    pub wall_timeout: Duration,
}

/// A header error: the 1-based line and what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct HeaderError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> HeaderError {
    HeaderError {
        line,
        message: message.into(),
    }
}

impl Header {
    /// Parses the header at the top of `text`.
    pub fn parse(text: &str) -> Result<Self, HeaderError> {
        let mut name = None;
        let mut description: Option<String> = None;
        let mut site = None;
        let mut tags = Vec::new();
        let mut timeout = DEFAULT_TIMEOUT;
        let mut wall_timeout = DEFAULT_WALL_TIMEOUT;
        let mut last_key: Option<&str> = None;
        let mut seen_any = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_end();
            let Some(rest) = trimmed.strip_prefix("//!") else {
                if trimmed.trim().is_empty() && !seen_any {
                    continue;
                }
                if trimmed.trim_start().starts_with("//") && seen_any {
                    continue;
                }
                break;
            };
            seen_any = true;
            if rest.trim().is_empty() {
                last_key = None;
                continue;
            }
            if let Some(cont) = rest.strip_prefix("   ")
                && last_key == Some("description")
            {
                let d = description.get_or_insert_with(String::new);
                d.push(' ');
                d.push_str(cont.trim());
                continue;
            }
            let Some((key, value)) = rest.split_once(':') else {
                return Err(err(
                    line,
                    format!(
                        "expected `//! key: value` (keys: {}), got {:?}",
                        KEYS.join(", "),
                        trimmed
                    ),
                ));
            };
            let key = key.trim();
            let value = value.trim();
            if value.is_empty() {
                return Err(err(line, format!("`{key}` has no value")));
            }
            let known = KEYS.iter().find(|k| **k == key).copied().ok_or_else(|| {
                err(
                    line,
                    format!("unknown header key {key:?}; allowed: {}", KEYS.join(", ")),
                )
            })?;
            let dup = match known {
                "name" => name.replace(value.to_string()).is_some(),
                "description" => description.replace(value.to_string()).is_some(),
                "site" => site.replace(value.to_string()).is_some(),
                "tags" => {
                    let had = !tags.is_empty();
                    for t in value.split(',').map(str::trim) {
                        if t.is_empty()
                            || !t
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                        {
                            return Err(err(
                                line,
                                format!(
                                    "tag {t:?} must be letters, digits, '-' or '_', separated by commas"
                                ),
                            ));
                        }
                        tags.push(t.to_string());
                    }
                    had
                }
                "timeout" => {
                    timeout =
                        parse_duration(value).map_err(|e| err(line, format!("timeout: {e}")))?;
                    false
                }
                "wall_timeout" => {
                    wall_timeout = parse_duration(value)
                        .map_err(|e| err(line, format!("wall_timeout: {e}")))?;
                    false
                }
                _ => unreachable!("KEYS lists every key"),
            };
            if dup {
                return Err(err(line, format!("`{key}` is given twice")));
            }
            last_key = Some(known);
        }
        let first = 1;
        let name = name.ok_or_else(|| err(first, "the header has no `//! name: ...` line (a scenario file starts with `//! name:` and `//! description:` lines)"))?;
        let description = description
            .ok_or_else(|| err(first, "the header has no `//! description: ...` line"))?;
        Ok(Self {
            name,
            description,
            site: site.unwrap_or_else(|| "default".into()),
            tags,
            timeout,
            wall_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_header() {
        let h = Header::parse(
            "//! name: Web lockout\n//! description: Ten failures lock\n//!   the login.\n//! tags: security, web\n//! site: default\n//! timeout: 2h\n\nlet x = 1;\n",
        )
        .unwrap();
        assert_eq!(h.name, "Web lockout");
        assert_eq!(h.description, "Ten failures lock the login.");
        assert_eq!(h.tags, vec!["security", "web"]);
        assert_eq!(h.site, "default");
        assert_eq!(h.timeout, Duration::from_secs(7200));
        assert_eq!(h.wall_timeout, DEFAULT_WALL_TIMEOUT);
    }

    #[test]
    fn errors_name_the_line() {
        let e = Header::parse("//! name: a\n//! description: b\n//! colour: red\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown header key \"colour\""), "{e}");
        assert!(e.message.contains("allowed: name, description"), "{e}");
        let e = Header::parse("//! name: a\n//! just words\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.to_string()
                .starts_with("line 2: expected `//! key: value`"),
            "{e}"
        );
        let e = Header::parse("//! name: a\n//! name: b\n").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (2, "`name` is given twice"));
        let e = Header::parse("//! name: a\n//! description: b\n//! timeout: soon\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("timeout: malformed duration \"soon\""),
            "{e}"
        );
        let e = Header::parse("//! name: a\n//! tags: ok, not ok\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Header::parse("let x = 1;\n").unwrap_err();
        assert!(e.message.contains("no `//! name: ...`"), "{e}");
        let e = Header::parse("//! name: a\n").unwrap_err();
        assert!(e.message.contains("description"), "{e}");
    }

    #[test]
    fn header_stops_at_code() {
        let h =
            Header::parse("//! name: a\n//! description: b\nlet x = 1;\n//! tags: late\n").unwrap();
        assert!(h.tags.is_empty());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// A header line: a known or unknown key with any value, a
        /// continuation, a comment, a blank or any text.
        fn line() -> impl Strategy<Value = String> {
            let key = prop_oneof![
                proptest::sample::select(KEYS).prop_map(str::to_string),
                "\\PC{0,12}",
            ];
            prop_oneof![
                (key, "\\PC{0,30}").prop_map(|(k, v)| format!("//! {k}: {v}")),
                "\\PC{0,30}".prop_map(|v| format!("//!   {v}")),
                "\\PC{0,30}".prop_map(|v| format!("// {v}")),
                Just(String::new()),
                Just("//!".to_string()),
                "\\PC{0,40}",
            ]
        }

        proptest! {
            /// Any text: a header, or an error naming a line of the text.
            #[test]
            fn any_text_parses_or_names_a_line(lines in prop::collection::vec(line(), 0..12)) {
                let text = lines.join("\n");
                match Header::parse(&text) {
                    Ok(h) => {
                        prop_assert!(!h.name.is_empty() && !h.description.is_empty());
                        prop_assert!(h.timeout.as_secs_f64() < 1e12);
                    }
                    Err(e) => {
                        prop_assert!(e.line >= 1 && e.line <= lines.len().max(1), "{e}");
                        prop_assert!(!e.message.is_empty());
                    }
                }
            }

            /// Well-formed headers give back what they say.
            #[test]
            fn written_headers_read_back(
                name in "[A-Za-z0-9][A-Za-z0-9 ]{0,20}[A-Za-z0-9]",
                description in "[A-Za-z0-9][A-Za-z0-9 .,]{0,40}[A-Za-z0-9.]",
                tags in prop::collection::vec("[a-z0-9_-]{1,8}", 0..4),
                minutes in 0u64..100_000,
            ) {
                let mut text = format!("//! name: {name}\n//! description: {description}\n//! timeout: {minutes}min\n");
                if !tags.is_empty() {
                    text.push_str(&format!("//! tags: {}\n", tags.join(", ")));
                }
                text.push_str("\nlet x = 1;\n");
                let h = Header::parse(&text).unwrap();
                prop_assert_eq!(h.name, name);
                prop_assert_eq!(h.description, description);
                prop_assert_eq!(h.tags, tags);
                prop_assert_eq!(h.timeout, Duration::from_secs(minutes * 60));
            }

            /// Any duration text parses to a finite duration or an error
            /// quoting it.
            #[test]
            fn any_duration_text_parses_or_is_refused(t in "[0-9. a-z]{0,16}|\\PC{0,16}") {
                match parse_duration(&t) {
                    Ok(d) => prop_assert!(d.as_secs_f64() < 1e12),
                    Err(e) => prop_assert!(e.contains(&format!("{t:?}")), "{}", e),
                }
            }
        }
    }
}
