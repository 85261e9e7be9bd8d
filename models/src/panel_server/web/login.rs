//! Login page, logout and `POST /api/login` (DOCA0211 "Web Authentication"):
//! the shared [`crate::security::login`] with the session cookie or a bearer
//! token.

use super::*;

pub(super) async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn login_form(State(node): St, Form(f): Form<LoginForm>) -> Response {
    let outcome = crate::security::login::login(&node, &f.username, &f.password, "webpages").await;
    https::login_answer(outcome, "/", pages::login)
}

pub(super) async fn logout(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    match https::form_auth(&*node, &headers, &f.csrf) {
        Ok(a) => https::logged_out(&node, &a.token),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
pub(super) struct ApiLogin {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn api_login(State(node): St, body: axum::body::Bytes) -> Response {
    let Ok(l) = serde_json::from_slice::<ApiLogin>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"username\": \"...\", \"password\": \"...\"}",
        );
    };
    match crate::security::login::login(&node, &l.username, &l.password, "api").await {
        Outcome::Ok(t) => Json(serde_json::json!({ "token": t })).into_response(),
        Outcome::Wrong(m) => api_error(StatusCode::UNAUTHORIZED, &m),
        Outcome::Locked(m) => api_error(StatusCode::FORBIDDEN, &format!("locked: {m}")),
        Outcome::Unavailable(m) => {
            let mut r = api_error(StatusCode::SERVICE_UNAVAILABLE, &m);
            r.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("30"),
            );
            r
        }
    }
}
