//! The SFTP publication server: `GET`/`PUT /api/sftp` and the "SFTP
//! server" page (`/settings/sftp`).
//!
//! Contract (DOCA0211 "SFTP Server Key Fingerprint"; docs/panel-server.md
//! "SFTP publication"):
//! - Configuring the server connects to it through ETH1 and shows the
//!   fingerprint of the host key it presents; that fingerprint is recorded
//!   with the settings (a `fingerprint` in the request must match it, else
//!   nothing is saved: 409). A server that cannot be reached saves nothing
//!   (502) and says why.
//! - Saving clears a stopped publication (a host key that had changed) and
//!   its alarm; every save is an audit entry naming server, user, directory
//!   and fingerprint, never the secret.
//! - A request without `password` and `key` keeps the stored credential;
//!   secrets are never shown back.

use std::net::Ipv4Addr;

use super::*;
use crate::panel_server::datalog::{sftp, sftp_config};

/// `PUT /api/sftp` body (also the page's form).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SftpRequest {
    host: Ipv4Addr,
    #[serde(default)]
    port: Option<u16>,
    user: String,
    #[serde(default)]
    password: Option<String>,
    /// Private key, OpenSSH or PEM text.
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    dir: Option<String>,
    /// The fingerprint the administrator expects (optional).
    #[serde(default)]
    fingerprint: Option<String>,
}

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/sftp", get(api_sftp).put(api_put_sftp))
        .route("/settings/sftp", get(sftp_page).post(sftp_form))
}

/// Removes the SFTP password from a publication configuration shown by
/// an API (`password_set` says whether there is one).
pub(super) fn redact(publication: &mut serde_json::Value) {
    if let Some(s) = publication.get_mut("sftp").and_then(|s| s.as_object_mut()) {
        let set = s.remove("password").is_some();
        s.insert("password_set".into(), set.into());
    }
}

fn view(node: &Node) -> serde_json::Value {
    let st: Option<sftp_config::Stored> = node.ctx.nv.get(sftp_config::KEY).ok().flatten();
    serde_json::json!({ "settings": st.map(|s| s.view()) })
}

async fn api_sftp(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    Json(view(&node)).into_response()
}

/// Checks, probes and saves; `Err((status, message))` saves nothing.
async fn save(
    node: &Arc<Node>,
    r: SftpRequest,
) -> Result<sftp_config::Stored, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let port = r.port.unwrap_or(22);
    if port == 0 {
        return Err(bad("port: 0 is not a port; use 1 to 65535".into()));
    }
    let printable = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
    if !printable(&r.user) || r.user.len() > 64 {
        return Err(bad("user: 1 to 64 printable characters".into()));
    }
    let dir = r.dir.unwrap_or_else(|| ".".into());
    if !printable(&dir) || dir.len() > 255 {
        return Err(bad(
            "dir: the remote directory must be 1 to 255 printable characters (default \".\")"
                .into(),
        ));
    }
    if let Some(f) = &r.fingerprint
        && !fieldtwin_emulator::site::valid_fingerprint(f)
    {
        return Err(bad(format!(
            "fingerprint: {f:?} is not SHA256:<43 base64 characters> (as ssh-keygen -lf prints it)"
        )));
    }
    let _serial = node.auth.lock().await;
    let old: Option<sftp_config::Stored> = node.ctx.nv.get(sftp_config::KEY).ok().flatten();
    let (password, key) = match (r.password.filter(|p| p != "********"), r.key) {
        (Some(_), Some(_)) => {
            return Err(bad("give either password or key, not both".into()));
        }
        (Some(p), None) if p.is_empty() || p.len() > 128 => {
            return Err(bad("password: 1 to 128 characters".into()));
        }
        (Some(p), None) => (Some(p), None),
        (None, Some(k)) => {
            sftp::parse_key(&k).map_err(|e| bad(format!("key: {e}")))?;
            (None, Some(k))
        }
        (None, None) => match &old {
            Some(o) if o.password.is_some() || o.key.is_some() => {
                (o.password.clone(), o.key.clone())
            }
            _ => {
                return Err(bad(
                    "give a password or a private key (OpenSSH or PEM) for the SFTP login".into(),
                ));
            }
        },
    };
    let Some(stack) = node.ctx.interface("eth1") else {
        return Err((StatusCode::CONFLICT, "ETH1 is not up".into()));
    };
    let addr = (r.host, port).into();
    let shown = sftp::probe(stack.as_ref(), addr)
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{e}; nothing was saved")))?;
    if let Some(f) = &r.fingerprint
        && *f != shown
    {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "the server {addr} shows host key {shown}, not the expected {f}; nothing was saved"
            ),
        ));
    }
    let mut st = sftp_config::Stored {
        host: r.host,
        port,
        user: r.user,
        password,
        key,
        dir,
        fingerprint: None,
        changed: None,
    };
    st.accept(shown.clone());
    node.ctx
        .nv
        .put(sftp_config::KEY, &st)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    node.audit(
        Kind::ConfigurationChanged,
        format!(
            "SFTP publication server set to {}@{addr} directory {:?}, {} login; host key fingerprint {shown} recorded",
            st.user,
            st.dir,
            if st.key.is_some() { "key" } else { "password" }
        ),
    );
    crate::panel_server::email::clear(node, crate::panel_server::alarms::SFTP_KEY_CHANGED);
    Ok(st)
}

async fn api_put_sftp(State(node): St, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    api!(node, headers);
    let r: SftpRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "invalid SFTP settings JSON: {e}; fields: host, port, user, password or key, dir, fingerprint"
                ),
            );
        }
    };
    match save(&node, r).await {
        Ok(st) => Json(serde_json::json!({ "settings": st.view() })).into_response(),
        Err((code, m)) => api_error(code, &m),
    }
}

use pages::esc;

fn page(csrf: &str, node: &Node, note: &str) -> String {
    let st: Option<sftp_config::Stored> = node.ctx.nv.get(sftp_config::KEY).ok().flatten();
    let v = |f: fn(&sftp_config::Stored) -> String| st.as_ref().map(f).unwrap_or_default();
    let state = match &st {
        None => "Not configured.".to_string(),
        Some(s) => match &s.changed {
            Some(c) => format!(
                "<strong>Publication stopped</strong>: the server showed host key {} instead of the recorded {}. Check the key with the server's administrator and save again to record it.",
                esc(c),
                esc(s.fingerprint.as_deref().unwrap_or("-"))
            ),
            None => format!(
                "Recorded host key fingerprint: <code id=\"fingerprint\">{}</code>",
                esc(s
                    .fingerprint
                    .as_deref()
                    .unwrap_or("(recorded at the first connection)"))
            ),
        },
    };
    let body = format!(
        "<section><p id=\"state\">{state}</p>\
<form method=\"post\" action=\"/settings/sftp\">{}\
<label>Server address <input name=\"host\" value=\"{}\"></label>\
<label>Port <input name=\"port\" value=\"{}\"></label>\
<label>User <input name=\"user\" value=\"{}\"></label>\
<label>Password <input type=\"password\" name=\"password\" value=\"\"> (empty: unchanged)</label>\
<label>Private key (OpenSSH or PEM) <textarea name=\"key\" rows=\"4\" cols=\"64\"></textarea> (empty: unchanged)</label>\
<label>Remote directory <input name=\"dir\" value=\"{}\"></label>\
<label>Expected fingerprint (optional) <input name=\"fingerprint\" value=\"\"></label>\
<button>Connect and record the key</button></form></section>",
        pages::hidden(csrf),
        v(|s| s.host.to_string()),
        st.as_ref().map_or(22, |s| s.port),
        esc(&v(|s| s.user.clone())),
        esc(&v(|s| s.dir.clone())),
    );
    let msg = Some(note).filter(|n| !n.is_empty());
    pages::layout("SFTP publication server", Some(csrf), msg, &body)
}

async fn sftp_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(page(&a.csrf, &node, "")).into_response()
}

async fn sftp_form(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let csrf = f.get("csrf").cloned().unwrap_or_default();
    let a = post_auth!(node, headers, &csrf);
    let get = |k: &str| {
        f.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let req = (|| -> Result<SftpRequest, String> {
        Ok(SftpRequest {
            host: get("host")
                .ok_or("give the server's IPv4 address")?
                .parse()
                .map_err(|_| "the server address must be an IPv4 address")?,
            port: match get("port") {
                Some(p) => Some(p.parse().map_err(|_| "the port must be 1 to 65535")?),
                None => None,
            },
            user: get("user").unwrap_or_default(),
            password: get("password"),
            key: get("key"),
            dir: get("dir"),
            fingerprint: get("fingerprint"),
        })
    })();
    let (code, note) = match req {
        Err(e) => (StatusCode::BAD_REQUEST, e),
        Ok(r) => match save(&node, r).await {
            Ok(st) => (
                StatusCode::OK,
                format!(
                    "Saved. The server's host key fingerprint {} is recorded.",
                    st.fingerprint.unwrap_or_default()
                ),
            ),
            Err((c, m)) => (c, m),
        },
    };
    (code, Html(page(&a.csrf, &node, &note))).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sftp_password_of_a_publication_is_not_shown() {
        let mut v = serde_json::json!({"method": "sftp", "sftp": {"host": "10.0.0.2", "user": "u", "password": "Very$ecret1"}});
        super::redact(&mut v);
        assert!(!v.to_string().contains("Very$ecret1"), "{v}");
        assert_eq!(v["sftp"]["password_set"], true);
        let mut none = serde_json::json!({"method": "https", "url": "https://10.0.0.2/"});
        super::redact(&mut none);
        assert_eq!(none["url"], "https://10.0.0.2/");
    }
}
