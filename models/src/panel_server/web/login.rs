//! Login page, logout and `POST /api/login` (DOCA0211 "Web Authentication"):
//! the shared [`crate::security::login`] with the session cookie or a bearer
//! token.

use super::*;

pub(super) async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

pub(super) async fn login_form(State(node): St, Form(f): Form<https::LoginForm>) -> Response {
    https::login_form(&*node, &f, pages::login).await
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

pub(super) async fn api_login(State(node): St, body: axum::body::Bytes) -> Response {
    https::api_login(&*node, &body).await
}
