//! Login, logout and the administrator's password change, which the first
//! login forces while the factory password is in use.

use super::*;
use crate::security::password::{self, Hashed};
use crate::security::{accounts, work};

pub(super) async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

pub(super) async fn login_form(State(web): St, Form(f): Form<https::LoginForm>) -> Response {
    https::login_form(&*web, &f, pages::login).await
}

pub(super) async fn logout(
    State(web): St,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    match https::session(&*web, &headers) {
        Some(a) if https::csrf_ok(&a.csrf, &f.csrf) => https::logged_out(&web, &a.token),
        Some(_) => *https::csrf_refused(&*web),
        None => Redirect::to("/login").into_response(),
    }
}

/// The password page (also reachable before the forced change).
pub(super) async fn password_page(State(web): St, headers: HeaderMap) -> Response {
    let Some(a) = https::session(&*web, &headers) else {
        return Redirect::to("/login").into_response();
    };
    let forced = !web.password_changed();
    Html(pages::password(&a.csrf, forced, None)).into_response()
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

/// Replaces the administrator's password (checked against the rules and
/// authorised by the current one); the error is a status and what to do.
async fn change(
    web: &Web,
    current: &str,
    new: &str,
    confirm: &str,
    via: &str,
) -> Result<(), (StatusCode, String)> {
    let bad = |m: String| Err((StatusCode::BAD_REQUEST, format!("Not changed: {m}")));
    if new != confirm {
        return bad("the new password and its confirmation differ.".into());
    }
    if new == super::super::policy::DEFAULT_PASSWORD || new == current {
        return bad(
            "the new password must differ from the current and the factory password.".into(),
        );
    }
    if let Err(e) = password::check(&web.config.rules.user, new) {
        return bad(format!("{e}."));
    }
    let _guard = web.auth.lock().await;
    if let Err(o) = crate::security::login::reauthenticate(web, current, via).await {
        let (code, m) = https::refusal(o);
        return Err((code, format!("Not changed: {m}")));
    }
    let Some(acc) = accounts::load(&web.ctx.nv) else {
        return bad("no account in memory.".into());
    };
    let (pw, it) = (new.to_string(), web.config.iterations);
    let Some(hash) = work::run(move || Hashed::new(&pw, it)).await else {
        return bad("the new password could not be stored.".into());
    };
    let stored = web
        .ctx
        .nv
        .put(accounts::KEY, &accounts::Accounts { admin: hash, ..acc })
        .and_then(|_| web.ctx.nv.put(PASSWORD_CHANGED_KEY, &true));
    if let Err(e) = stored {
        return bad(format!("the new password could not be stored: {e}."));
    }
    web.audit(
        Kind::PasswordChanged,
        format!("{via}: administrator password changed"),
    );
    Ok(())
}

pub(super) async fn password_form(
    State(web): St,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    let Some(a) = https::session(&*web, &headers) else {
        return Redirect::to("/login").into_response();
    };
    if !https::csrf_ok(&a.csrf, &f.csrf) {
        return *https::csrf_refused(&*web);
    }
    match change(&web, &f.current, &f.new, &f.confirm, "webpages").await {
        Ok(()) => Html(pages::message_in(
            &a.csrf,
            "Password changed",
            "The administrator password was changed.",
        ))
        .into_response(),
        Err((code, m)) => (
            code,
            Html(pages::password(&a.csrf, !web.password_changed(), Some(&m))),
        )
            .into_response(),
    }
}

pub(super) async fn api_login(State(web): St, body: axum::body::Bytes) -> Response {
    https::api_login(&*web, &body).await
}

#[derive(Deserialize)]
pub(super) struct ApiPassword {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
}

pub(super) async fn api_password(
    State(web): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if web.session(https::bearer(&headers)).is_none() {
        return api_error(StatusCode::UNAUTHORIZED, "missing or expired token");
    }
    let Ok(p) = serde_json::from_slice::<ApiPassword>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"current\": \"...\", \"new\": \"...\"}",
        );
    };
    match change(&web, &p.current, &p.new, &p.new, "api").await {
        Ok(()) => Json(serde_json::json!({ "changed": true })).into_response(),
        Err((code, m)) => api_error(code, &m),
    }
}
