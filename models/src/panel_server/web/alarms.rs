//! Alarms and their email notification: `GET /api/alarms`,
//! `PUT /api/alarms/rules`, `GET`/`PUT /api/email` and the "Alarms" page
//! (`/alarms`).
//!
//! Contract (docs/panel-server.md "Alarms and email notification"):
//! - `GET /api/alarms`: the alarm list (active and cleared) and the
//!   threshold rules.
//! - `PUT /api/alarms/rules`: a JSON array of rules (`device`,
//!   `measurement`, `above` and/or `below`), checked like the site file's;
//!   saved whole, audited.
//! - `PUT /api/email` (only on models with "Notification of alarms by
//!   email"; others answer 404 naming the models that have it): `server`,
//!   `port` (25), `from`, `to` (1 to 10), `user` and `password` (both or
//!   neither), `ca_pem` (the CA the server's certificate must chain to);
//!   a request without `password` keeps the stored one. Audited without the
//!   password. `GET /api/email` shows the settings (no password) and the
//!   outbox state.

use std::net::Ipv4Addr;

use super::*;
use crate::panel_server::{alarms, email};

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/alarms", get(api_alarms))
        .route("/api/alarms/rules", axum::routing::put(api_put_rules))
        .route("/api/email", get(api_email).put(api_put_email))
        .route("/alarms", get(alarms_page))
}

fn field_ids(node: &Node) -> Vec<String> {
    node.ps
        .serial_specs
        .iter()
        .chain(&node.ps.wireless_specs)
        .map(|s| s.id.clone())
        .collect()
}

async fn api_alarms(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    let list = alarms::list(&node.ctx.nv).unwrap_or_default();
    Json(serde_json::json!({
        "alarms": list.alarms,
        "rules": email::rules(&node.ctx.nv),
        "email_offered": email::offered(&node),
    }))
    .into_response()
}

async fn api_put_rules(State(node): St, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    api!(node, headers);
    let rules: Vec<email::Rule> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "invalid rules JSON: {e}; give an array of {{\"device\", \"measurement\", \"above\" and/or \"below\"}}"
                ),
            );
        }
    };
    if rules.len() > alarms::MAX_ALARMS {
        return api_error(
            StatusCode::BAD_REQUEST,
            &format!("at most {} rules", alarms::MAX_ALARMS),
        );
    }
    let ids = field_ids(&node);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for (i, r) in rules.iter().enumerate() {
        if let Err(e) = r.validate(&format!("rules[{i}]"), &ids) {
            return api_error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    }
    let _serial = node.auth.lock().await;
    if let Err(e) = node.ctx.nv.put(email::RULES_KEY, &rules) {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let text: Vec<String> = rules
        .iter()
        .map(|r| {
            format!(
                "{} {}{}{}",
                r.device,
                r.measurement,
                r.above.map(|a| format!(" > {a}")).unwrap_or_default(),
                r.below.map(|b| format!(" < {b}")).unwrap_or_default()
            )
        })
        .collect();
    node.audit(
        Kind::ConfigurationChanged,
        format!("alarm thresholds set: {}", text.join("; ")),
    );
    Json(serde_json::json!({ "rules": rules })).into_response()
}

async fn api_email(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    let mut v = email::details(&node.ctx.nv);
    v["offered"] = email::offered(&node).into();
    Json(v).into_response()
}

/// `PUT /api/email` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailRequest {
    server: Ipv4Addr,
    #[serde(default)]
    port: Option<u16>,
    from: String,
    to: Vec<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    ca_pem: Option<String>,
}

fn not_offered(node: &Node) -> Response {
    let have: Vec<&str> = fieldtwin_emulator::site::PANEL_SERVERS
        .iter()
        .filter(|m| m.capabilities().is_some_and(|c| c.email))
        .map(|m| m.name())
        .collect();
    api_error(
        StatusCode::NOT_FOUND,
        &format!(
            "{} has no notification of alarms by email; it exists on {}",
            node.ps.model.name(),
            have.join(", ")
        ),
    )
}

async fn api_put_email(State(node): St, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    api!(node, headers);
    if !email::offered(&node) {
        return not_offered(&node);
    }
    let r: EmailRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "invalid email settings JSON: {e}; fields: server, port, from, to, user, password, ca_pem"
                ),
            );
        }
    };
    let _serial = node.auth.lock().await;
    let old = email::settings(&node.ctx.nv);
    let password = r
        .password
        .or_else(|| old.as_ref().and_then(|o| o.password.clone()));
    let ca_pem = match r.ca_pem.or_else(|| old.as_ref().map(|o| o.ca_pem.clone())) {
        Some(c) => c,
        None => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "ca_pem: give the CA certificate (PEM) that signed the SMTP server's certificate",
            );
        }
    };
    let site = fieldtwin_emulator::site::EmailConfig {
        server: r.server,
        port: r.port.unwrap_or(25),
        from: r.from,
        to: r.to,
        user: r.user,
        password,
        ca_file: "-".into(),
    };
    if let Err(e) = site.validate("email") {
        return api_error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let st = email::Stored {
        server: site.server,
        port: site.port,
        from: site.from,
        to: site.to,
        user: site.user,
        password: site.password,
        ca_pem,
    };
    if let Err(e) = st.connector() {
        return api_error(StatusCode::BAD_REQUEST, &format!("ca_pem: {e}"));
    }
    if let Err(e) = node.ctx.nv.put(email::CONFIG_KEY, &st) {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    node.audit(
        Kind::ConfigurationChanged,
        format!(
            "alarm email set: SMTP server {} (STARTTLS), from {}, to {}{}",
            st.addr(),
            st.from,
            st.to.join(", "),
            st.user
                .as_ref()
                .map(|u| format!(", login {u}"))
                .unwrap_or_default()
        ),
    );
    Json(serde_json::json!({ "settings": st.view() })).into_response()
}

use pages::esc;

async fn alarms_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    let list = alarms::list(&node.ctx.nv).unwrap_or_default();
    let rows: String = list
        .alarms
        .iter()
        .rev()
        .map(|a| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                a.raised.format("%Y-%m-%d %H:%M:%S"),
                if a.active() { "active" } else { "cleared" },
                esc(&a.source),
                esc(&a.text)
            )
        })
        .collect();
    let mail = match (email::offered(&node), email::settings(&node.ctx.nv)) {
        (false, _) => "This model does not notify alarms by email.".to_string(),
        (true, None) => "Email notification is not configured (PUT /api/email).".to_string(),
        (true, Some(s)) => format!(
            "Alarms are mailed to {} through {} (STARTTLS).",
            esc(&s.to.join(", ")),
            s.addr()
        ),
    };
    let body = format!(
        "<section><p id=\"email\">{mail}</p><table id=\"alarms\"><tr><th>Time (UTC)</th><th>State</th><th>Source</th><th>Alarm</th></tr>{rows}</table></section>"
    );
    Html(pages::layout("Alarms", Some(&a.csrf), None, &body)).into_response()
}
