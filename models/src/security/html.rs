//! HTML helpers shared by server-rendered pages.
//!
//! Contract: [`esc`] makes any text safe inside element content and quoted
//! attribute values. [`layout`] is the frame of every model's pages: one
//! style sheet, the model's header ([`Chrome`]) with its navigation and a
//! logout button once logged in, a message box, the escaped title.

/// Escapes `&`, `<`, `>`, `"` and `'`.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The style sheet of every model's pages.
const STYLE: &str = "body{font-family:sans-serif;margin:0;background:#f4f6f4}header{background:#3dcd58;color:#fff;padding:8px 16px}nav a,nav button{margin-right:12px;color:#fff;background:none;border:none;font:inherit;cursor:pointer;text-decoration:underline}main{padding:16px;max-width:900px}section{background:#fff;padding:12px;margin-bottom:12px;border:1px solid #ccc}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.msg{padding:8px;background:#ffe;border:1px solid #cc9;margin-bottom:12px}label{display:block;margin:6px 0}";

/// What a model's pages show around their content.
pub struct Chrome {
    /// After the page title in the window title (`Home - {product}`).
    pub product: &'static str,
    /// The header's name.
    pub brand: &'static str,
    /// The navigation links (HTML) shown when logged in.
    pub links: &'static str,
}

/// A page: `body` under the heading `title`, with `msg` (escaped) in a
/// message box; logged in (`csrf`, the session's token) the navigation and
/// a logout form carrying the token.
pub fn layout(
    chrome: &Chrome,
    title: &str,
    csrf: Option<&str>,
    msg: Option<&str>,
    body: &str,
) -> String {
    let nav = match csrf {
        Some(c) => format!(
            r#"<nav>{}<form method="post" action="/logout" style="display:inline"><input type="hidden" name="csrf" value="{}"><button id="logout" type="submit">Log out</button></form></nav>"#,
            chrome.links,
            esc(c)
        ),
        None => String::new(),
    };
    let m = msg
        .map(|m| format!(r#"<div class="msg" id="message">{}</div>"#, esc(m)))
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t} - {product}</title><style>{STYLE}</style></head><body><header><strong>{brand}</strong> {nav}</header><main><h1>{t}</h1>{m}{body}</main></body></html>"#,
        t = esc(title),
        product = chrome.product,
        brand = chrome.brand,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Chrome = Chrome {
        product: "Product",
        brand: "Brand",
        links: r#"<a href="/">Home</a>"#,
    };

    #[test]
    fn layout_escapes_and_shows_the_navigation_only_when_logged_in() {
        let out = layout(&C, "A<b>", None, Some("x&y"), "<p>body</p>");
        assert!(out.contains("<title>A&lt;b&gt; - Product</title>"), "{out}");
        assert!(out.contains("<strong>Brand</strong> </header>"), "{out}");
        assert!(out.contains(r#"<div class="msg" id="message">x&amp;y</div>"#));
        assert!(out.contains("<h1>A&lt;b&gt;</h1>"), "{out}");
        assert!(out.contains("<p>body</p></main>"), "{out}");
        assert!(!out.contains("<nav>"), "{out}");
        let inn = layout(&C, "T", Some("t\"k"), None, "");
        assert!(
            inn.contains(r#"<nav><a href="/">Home</a><form method="post" action="/logout""#),
            "{inn}"
        );
        assert!(inn.contains(r#"name="csrf" value="t&quot;k""#), "{inn}");
        assert!(!inn.contains("id=\"message\""), "{inn}");
    }
}
