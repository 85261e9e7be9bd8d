//! Maintenance page (SSH on/off, the support account, reboot, factory
//! reset) and the audit log page.

use super::*;
use crate::security::password::{self, Hashed};
use crate::security::{accounts, audit, work};

pub(super) async fn page(State(web): St, headers: HeaderMap) -> Response {
    let a = page!(web, headers);
    Html(pages::maintenance(&web, &a.csrf, None)).into_response()
}

fn answer(web: &Web, csrf: &str, r: Result<String, (StatusCode, String)>) -> Response {
    match r {
        Ok(m) => Html(pages::maintenance(web, csrf, Some(&m))).into_response(),
        Err((code, m)) => (code, Html(pages::maintenance(web, csrf, Some(&m)))).into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct SshForm {
    #[serde(default)]
    csrf: String,
    /// `on` or `off`.
    #[serde(default)]
    ssh: String,
}

async fn set_ssh(web: &Arc<Web>, on: bool, via: &str) -> Result<String, (StatusCode, String)> {
    ssh::set(web, on, via)
        .await
        .map(|()| {
            if on {
                "SSH enabled: port 22 is open.".to_string()
            } else {
                "SSH disabled: port 22 is closed.".to_string()
            }
        })
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))
}

pub(super) async fn ssh_form(
    State(web): St,
    headers: HeaderMap,
    Form(f): Form<SshForm>,
) -> Response {
    let a = post_auth!(web, headers, &f.csrf);
    let r = match f.ssh.as_str() {
        "on" => set_ssh(&web, true, "webpages").await,
        "off" => set_ssh(&web, false, "webpages").await,
        other => Err((
            StatusCode::BAD_REQUEST,
            format!("ssh must be \"on\" or \"off\", not {other:?}"),
        )),
    };
    answer(&web, &a.csrf, r)
}

/// Sets (or, with an empty password, disables) the support account,
/// authorised by the administrator's current password.
async fn set_support(
    web: &Web,
    current: &str,
    new: &str,
    via: &str,
) -> Result<String, (StatusCode, String)> {
    let disable = new.is_empty();
    if !disable && let Err(e) = password::check(&web.config.rules.user, new) {
        return Err((StatusCode::BAD_REQUEST, format!("Not changed: {e}.")));
    }
    let _guard = web.auth.lock().await;
    if let Err(o) = crate::security::login::reauthenticate(web, current, via).await {
        let (code, m) = https::refusal(o);
        return Err((code, format!("Not changed: {m}")));
    }
    let Some(acc) = accounts::load(&web.ctx.nv) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "Not changed: no account in memory.".into(),
        ));
    };
    let (pw, it) = (new.to_string(), web.config.iterations);
    let hash = work::run(move || (!disable).then(|| Hashed::new(&pw, it)))
        .await
        .ok_or((
            StatusCode::SERVICE_UNAVAILABLE,
            "Not changed: the password could not be stored.".to_string(),
        ))?;
    let what = if disable {
        "support account disabled"
    } else {
        "support account password set (account enabled)"
    };
    web.ctx
        .nv
        .put(
            accounts::KEY,
            &accounts::Accounts {
                support: hash,
                ..acc
            },
        )
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    web.audit(Kind::PasswordChanged, format!("{via}: {what}"));
    Ok(format!("Done: {what}."))
}

#[derive(Deserialize)]
pub(super) struct SupportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

pub(super) async fn support_form(
    State(web): St,
    headers: HeaderMap,
    Form(f): Form<SupportForm>,
) -> Response {
    let a = post_auth!(web, headers, &f.csrf);
    let r = if f.password != f.confirm {
        Err((
            StatusCode::BAD_REQUEST,
            "Not changed: the password and its confirmation differ.".into(),
        ))
    } else {
        set_support(&web, &f.current, &f.password, "webpages").await
    };
    answer(&web, &a.csrf, r)
}

pub(super) async fn reboot_form(
    State(web): St,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let _a = post_auth!(web, headers, &f.csrf);
    restart(&web, false, "webpages");
    Html(pages::message(
        "Rebooting",
        "The EV Charging Expert is rebooting; log in again in a few seconds.",
    ))
    .into_response()
}

pub(super) async fn factory_reset_form(
    State(web): St,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let _a = post_auth!(web, headers, &f.csrf);
    restart(&web, true, "webpages");
    Html(pages::message(
        "Factory reset",
        "Accounts, enrolled stations, RFID badges and transaction history are being erased; the EV Charging Expert restarts with its factory settings (log in with the factory password).",
    ))
    .into_response()
}

pub(super) async fn logs_page(State(web): St, headers: HeaderMap) -> Response {
    let a = page!(web, headers);
    let log = audit::read(&web.ctx.nv).unwrap_or_default();
    Html(pages::logs(&a.csrf, &log)).into_response()
}

#[derive(Deserialize)]
pub(super) struct ApiSsh {
    enabled: bool,
}

pub(super) async fn api_ssh(
    State(web): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(web, headers);
    let Ok(s) = serde_json::from_slice::<ApiSsh>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"enabled\": true|false}",
        );
    };
    match set_ssh(&web, s.enabled, "api").await {
        Ok(_) => Json(serde_json::json!({ "ssh": s.enabled })).into_response(),
        Err((code, m)) => api_error(code, &m),
    }
}

#[derive(Deserialize)]
pub(super) struct ApiSupport {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn api_support(
    State(web): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(web, headers);
    let Ok(s) = serde_json::from_slice::<ApiSupport>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"current\": \"<admin password>\", \"password\": \"<support password, empty disables>\"}",
        );
    };
    match set_support(&web, &s.current, &s.password, "api").await {
        Ok(m) => Json(serde_json::json!({ "done": m })).into_response(),
        Err((code, m)) => api_error(code, &m),
    }
}

pub(super) async fn api_audit(State(web): St, headers: HeaderMap) -> Response {
    api!(web, headers);
    let log = audit::read(&web.ctx.nv).unwrap_or_default();
    Json(log).into_response()
}

pub(super) async fn api_reboot(State(web): St, headers: HeaderMap) -> Response {
    api!(web, headers);
    restart(&web, false, "api");
    Json(serde_json::json!({ "rebooting": true })).into_response()
}

pub(super) async fn api_factory_reset(State(web): St, headers: HeaderMap) -> Response {
    api!(web, headers);
    restart(&web, true, "api");
    Json(serde_json::json!({ "factory_reset": true })).into_response()
}
