//! HTML helpers shared by server-rendered pages.
//!
//! Contract: [`esc`] makes any text safe inside element content and quoted
//! attribute values.

/// Escapes `&`, `<`, `>`, `"` and `'`.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
