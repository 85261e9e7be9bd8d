//! HTTPS server scaffolding shared by every model with web pages: the
//! HTTP/1.1 connection loop over TLS, the security headers, the session
//! cookie and the bearer token of the JSON API, the request checks and the
//! logins (page and JSON).
//!
//! Contract:
//! - [`serve_every_interface`] opens `https` on a port of every interface
//!   of the device and serves the model's router there with [`serve`], the
//!   listeners tasks of the boot (its token ends them and their
//!   connections, its tracker lets a soft reboot wait for them). The
//!   router is an [`App`]: made by the first client, not at boot.
//! - [`serve`] accepts connections on a device listener until the boot's
//!   token is cancelled; every connection is tracked by the boot's tracker so
//!   a reboot closes it. A TLS handshake has 10 s, request headers 30 s.
//!   A connection that arrives before the device's certificate is made
//!   waits for it first (at most [`super::work::READY_WAIT`], the making
//!   started by the first one), so an HTTPS client right after power-on is
//!   served late rather than refused; the listener keeps accepting.
//! - [`refuse_oversized`] answers 413 to a request whose `Content-Length`
//!   announces more than the model's upload limit, before reading any of the
//!   body (a client announcing 1 GB and sending nothing must not hold a
//!   handler); a chunked body is cut at the limit by axum's body limit.
//!   The body must then arrive within [`BODY_GRACE`] plus one second per
//!   [`BODY_MIN_RATE`] bytes announced (60 s when none is announced),
//!   or the request gets 408 and the connection is closed: a client that
//!   trickles its body (slow POST) holds neither a handler nor a connection
//!   for long. The body is read before the handler runs.
//! - [`finish`] puts [`refuse_oversized`], [`security_headers`] and the
//!   RTC's `Date` on a model's router.
//! - [`security_headers`] adds `Cache-Control: no-store`, `X-Frame-Options:
//!   DENY`, `X-Content-Type-Options: nosniff` and HSTS to every answer.
//! - Hyper adds no `Date` header: the model sets it from the device's RTC
//!   ([`http_date`]).
//! - The session cookie is `session=<token>; Path=/; Secure; HttpOnly;
//!   SameSite=Strict`.
//! - Requests are checked the same way on every model ([`Pages`] is what a
//!   model adds): a page without a live session answers 303 -> `/login`,
//!   and while the model wants the factory password replaced first
//!   ([`Pages::must_change_password`]) 303 -> `/password`
//!   ([`page_auth`]); a form POST without the session's CSRF token gets
//!   403 and the model's message page ([`form_auth`]); `/api` without a
//!   live bearer token gets 401, and 403 while the password must be
//!   changed ([`api_auth`]), as JSON `{"error": ...}` ([`api_error`]).
//!   The [`page!`], [`post_auth!`] and [`api!`] macros return those
//!   answers from a handler.
//! - [`api_login`] is `POST /api/login {"username","password"}` of every
//!   model: 200 `{"token"}` (with `"must_change_password"` on a model that
//!   forces the change, [`Pages::FORCES_PASSWORD_CHANGE`]), 400 for another
//!   body, 401 wrong, 403 locked, 503 with `Retry-After: 30` when not
//!   checked, as a login form ([`api_login_answer`]). [`refusal`] is the
//!   status of a refused confirmation by password or credential.
//! - [`login_form`] checks a [`LoginForm`] posted to `/login` and answers
//!   it with [`login_answer`], going to `/password` on success while the
//!   factory password must be changed, else to `/`. Forms carrying only
//!   the CSRF token read as [`CsrfForm`]; [`multipart_fields`] reads a
//!   multipart form.
//! - A login form's [`Outcome`] is answered by [`login_answer`]: 303 to the
//!   model's page with the session cookie, or the model's login page with
//!   the message and 401 (wrong), 403 (locked) or 503 with `Retry-After: 30`
//!   (not checked). [`logged_out`] closes a session (audited) and answers
//!   303 to `/login` with the cookie cleared.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Json, Router};
use fieldtwin_emulator::device::{BootError, DeviceContext, TrackedListener};

use super::Surface;
use super::audit::Kind;
use super::login::Outcome;
use super::tls::Acceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time a client has for its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a request body may take on top of its size at [`BODY_MIN_RATE`].
pub const BODY_GRACE: Duration = Duration::from_secs(10);
/// Slowest accepted body rate, in bytes per second: a body announcing N
/// bytes may take 10 s + N / 1024 s (a 30 MB image over four hours).
pub const BODY_MIN_RATE: u64 = 1024;

/// A model's router, made by the first client rather than at boot: a
/// route table costs about 0.1 ms to build, a second of CPU over a
/// 10,000-device boot for pages few devices ever serve. Clones share it.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

enum AppInner {
    /// Given made ([`From<Router>`]).
    Ready(Router),
    /// Made by `make` when first needed ([`App::lazy`]).
    Lazy {
        make: Box<dyn Fn() -> Router + Send + Sync>,
        built: std::sync::OnceLock<Router>,
    },
}

impl App {
    /// The router `make` returns, made once, when first needed.
    pub fn lazy(make: impl Fn() -> Router + Send + Sync + 'static) -> Self {
        Self(Arc::new(AppInner::Lazy {
            make: Box::new(make),
            built: std::sync::OnceLock::new(),
        }))
    }

    /// The router, made now if no client needed it before.
    pub fn router(&self) -> Router {
        match &*self.0 {
            AppInner::Ready(r) => r.clone(),
            AppInner::Lazy { make, built } => built.get_or_init(make).clone(),
        }
    }
}

impl From<Router> for App {
    fn from(r: Router) -> Self {
        Self(Arc::new(AppInner::Ready(r)))
    }
}

/// Serves `app` (the model's router) over HTTPS with `acceptor` on `port`
/// of every interface of the device: one listener per interface, each a
/// task of the boot (`token` ends it and its connections; `tracker` tracks
/// them, so a soft reboot waits for them).
pub async fn serve_every_interface(
    ctx: &DeviceContext,
    port: u16,
    acceptor: &Acceptor,
    app: &App,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), BootError> {
    for iface in ctx.interface_names() {
        let listener = ctx.listen_tcp(&iface, "https", port).await?;
        let serving = serve(
            ctx.clone(),
            listener,
            Some(acceptor.clone()),
            app.clone(),
            token.clone(),
            tracker.clone(),
        );
        let t = token.clone();
        ctx.spawn(tracker.track_future(async move {
            tokio::select! { _ = t.cancelled() => {} _ = serving => {} }
        }));
    }
    Ok(())
}

/// Serves `app` over HTTP/1.1 on `listener`, through TLS when `tls` is set.
pub async fn serve(
    ctx: DeviceContext,
    mut listener: TrackedListener,
    tls: Option<Acceptor>,
    app: App,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.router());
        let tls = tls.clone();
        let t = token.clone();
        let id = ctx.id.clone();
        ctx.spawn(tracker.track_future(async move {
            let conn = async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                // A client that never finishes its request headers is dropped.
                // The Date header comes from the device's RTC (the
                // application sets it), never from the host clock.
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .auto_date_header(false);
                match tls {
                    Some(acc) => {
                        if let Err(e) = acc.ready().await {
                            tracing::warn!("{}: HTTPS connection dropped: {e}", id);
                            return;
                        }
                        let Ok(Ok(s)) =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.tls().accept(stream)).await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    }
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    }
                }
            };
            tokio::select! { _ = t.cancelled() => {} _ = conn => {} }
        }));
    }
}

/// Finishes a model's router `app` with the layers every web surface has:
/// [`refuse_oversized`] at `max_upload` bytes, [`security_headers`] and
/// the `Date` header from the device's RTC; `model` is its state.
pub fn finish<P>(app: Router<Arc<P>>, model: Arc<P>, max_upload: usize) -> Router
where
    P: std::ops::Deref<Target = Surface> + Send + Sync + 'static,
{
    app.layer(axum::middleware::from_fn_with_state(
        max_upload,
        refuse_oversized,
    ))
    .layer(axum::middleware::map_response(security_headers))
    .layer(axum::middleware::map_response_with_state(
        model.clone(),
        device_date::<P>,
    ))
    .with_state(model)
}

/// Sets the `Date` header from the device's RTC (not the host clock).
async fn device_date<P>(State(model): State<Arc<P>>, mut r: Response) -> Response
where
    P: std::ops::Deref<Target = Surface> + Send + Sync + 'static,
{
    r.headers_mut()
        .insert(header::DATE, http_date(model.ctx.rtc.now()));
    r
}

/// Refuses a request whose announced body is over `limit` bytes (an axum
/// `from_fn_with_state` layer; the state is the limit).
pub async fn refuse_oversized(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let answer = |status: axum::http::StatusCode, text: String| {
        let mut r = Response::new(axum::body::Body::from(text));
        *r.status_mut() = status;
        if status == axum::http::StatusCode::REQUEST_TIMEOUT {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    };
    if let Some(n) = announced
        && n > limit as u64
    {
        return answer(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is over the limit of {limit} bytes"),
        );
    }
    // A body of unknown length (chunked) gets the time of 60 KiB.
    let budget =
        BODY_GRACE + Duration::from_secs(announced.unwrap_or(60 * BODY_MIN_RATE) / BODY_MIN_RATE);
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(budget, axum::body::to_bytes(body, limit)).await {
        Err(_) => answer(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s (bodies must arrive at {BODY_MIN_RATE} bytes/s or faster)",
                budget.as_secs()
            ),
        ),
        Ok(Err(_)) => answer(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the limit of {limit} bytes, or cut short"),
        ),
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
    }
}

/// Adds the security headers to an answer (an axum `map_response` layer).
pub async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    r
}

/// An HTTP `Date` value (IMF-fixdate) of `t`.
pub fn http_date(t: chrono::DateTime<chrono::Utc>) -> HeaderValue {
    HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .expect("a formatted date is a valid header")
}

/// The session token of the request's cookie.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("session="))
        .map(str::to_string)
        .next()
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|s| s.trim().to_string())
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "session={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .expect("hex token is a valid header")
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
}

/// Whether `sent` is the session's CSRF token.
pub fn csrf_ok(expected: &str, sent: &str) -> bool {
    expected.len() == sent.len() && expected == sent
}

/// A login form (`/login`).
#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

/// A form that carries only the session's CSRF token.
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Checks a login form through `"webpages"` and answers it
/// ([`login_answer`], `page` being the model's login page): on success to
/// `/password` while the factory password must be changed (the first
/// login goes to the forced change), else to `/`.
pub async fn login_form<P: Pages + ?Sized>(
    p: &P,
    f: &LoginForm,
    page: impl Fn(Option<&str>) -> String,
) -> Response {
    let outcome = super::login::login(p, &f.username, &f.password, "webpages").await;
    let to = if p.must_change_password() {
        "/password"
    } else {
        "/"
    };
    login_answer(outcome, to, page)
}

/// Reads a multipart form into name -> bytes; the error says what was
/// wrong with the body.
pub async fn multipart_fields(
    mut m: axum::extract::Multipart,
) -> Result<std::collections::HashMap<String, Vec<u8>>, String> {
    let mut out = std::collections::HashMap::new();
    while let Some(f) = m.next_field().await.map_err(|e| e.to_string())? {
        let name = f.name().unwrap_or_default().to_string();
        let data = f.bytes().await.map_err(|e| e.to_string())?;
        out.insert(name, data.to_vec());
    }
    Ok(out)
}

/// The answer to a login form: on success 303 to `to` with the session
/// cookie; else `page(message)` (the model's login page) with 401, 403 or
/// 503 and `Retry-After: 30`.
pub fn login_answer(outcome: Outcome, to: &str, page: impl Fn(Option<&str>) -> String) -> Response {
    match outcome {
        Outcome::Ok(t) => {
            let mut r = Redirect::to(to).into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&t));
            r
        }
        Outcome::Wrong(m) => {
            (axum::http::StatusCode::UNAUTHORIZED, Html(page(Some(&m)))).into_response()
        }
        Outcome::Locked(m) => {
            (axum::http::StatusCode::FORBIDDEN, Html(page(Some(&m)))).into_response()
        }
        Outcome::Unavailable(m) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            Html(page(Some(&m))),
        )
            .into_response(),
    }
}

/// Closes the web session `token` (audited as a logout) and answers 303 to
/// `/login` with the cookie cleared.
pub fn logged_out(sec: &Surface, token: &str) -> Response {
    sec.close_session(token);
    sec.audit(Kind::Logout, "webpages: administrator logged out");
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(header::SET_COOKIE, cleared_cookie());
    r
}

/// What a model's web surface adds to its security [`Surface`] for the
/// request checks ([`page_auth`], [`form_auth`], [`api_auth`]).
pub trait Pages: std::ops::Deref<Target = Surface> {
    /// Whether the model forces the replacement of the factory password at
    /// the first login (the EVCE); its JSON login answer then says whether
    /// the change is due.
    const FORCES_PASSWORD_CHANGE: bool = false;
    /// Whether the factory password must be replaced before anything else
    /// (where [`Self::FORCES_PASSWORD_CHANGE`]); never, by default.
    fn must_change_password(&self) -> bool {
        false
    }
    /// The model's page showing a message (`title`, `text`).
    fn message_page(&self, title: &str, text: &str) -> String;
}

/// A logged-in browser: its session token and the session's CSRF token.
pub struct Auth {
    pub token: String,
    pub csrf: String,
}

/// The browser's live session, whether or not the factory password must be
/// changed first (the pages of that change use it).
pub fn session<P: Pages + ?Sized>(p: &P, headers: &HeaderMap) -> Option<Auth> {
    p.session(cookie_token(headers)).map(|(token, s)| Auth {
        token,
        csrf: s.csrf,
    })
}

/// A logged-in browser that may use the pages; else 303 to `/login`, or to
/// `/password` while the factory password must be changed.
pub fn page_auth<P: Pages + ?Sized>(p: &P, headers: &HeaderMap) -> Result<Auth, Box<Response>> {
    let a = session(p, headers).ok_or_else(|| Box::new(Redirect::to("/login").into_response()))?;
    if p.must_change_password() {
        return Err(Box::new(Redirect::to("/password").into_response()));
    }
    Ok(a)
}

/// The answer to a form POST without the session's CSRF token: 403 with the
/// model's message page.
pub fn csrf_refused<P: Pages + ?Sized>(p: &P) -> Box<Response> {
    Box::new(
        (
            StatusCode::FORBIDDEN,
            Html(p.message_page(
                "Forbidden",
                "The form was not sent from this device's own page (missing or wrong CSRF token). Open the page again and retry.",
            )),
        )
            .into_response(),
    )
}

/// [`page_auth`] for a form POST, which must also carry the session's CSRF
/// token (else [`csrf_refused`]).
pub fn form_auth<P: Pages + ?Sized>(
    p: &P,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Auth, Box<Response>> {
    let a = page_auth(p, headers)?;
    if csrf_ok(&a.csrf, csrf) {
        Ok(a)
    } else {
        Err(csrf_refused(p))
    }
}

/// A JSON API error: `code` and `{"error": msg}`.
pub fn api_error(code: StatusCode, msg: &str) -> Response {
    (code, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// A bearer token of a live session (else 401), whose factory password has
/// been replaced where the model requires it (else 403).
pub fn api_auth<P: Pages + ?Sized>(p: &P, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if p.session(bearer(headers)).is_none() {
        return Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            "missing or expired token: POST /api/login {\"username\",\"password\"} and send Authorization: Bearer <token>",
        )));
    }
    if p.must_change_password() {
        return Err(Box::new(api_error(
            StatusCode::FORBIDDEN,
            "the factory password must be changed first: POST /api/password {\"current\",\"new\"}",
        )));
    }
    Ok(())
}

/// What the JSON login reads.
#[derive(serde::Deserialize)]
struct ApiLogin {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /api/login` of a model's JSON API (see the module documentation):
/// the shared [`super::login::login`] through `"api"`, answered with a bearer
/// token or the refusal.
pub async fn api_login<P: Pages + ?Sized>(p: &P, body: &[u8]) -> Response {
    let Ok(l) = serde_json::from_slice::<ApiLogin>(body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"username\": \"...\", \"password\": \"...\"}",
        );
    };
    let outcome = super::login::login(p, &l.username, &l.password, "api").await;
    let must_change = P::FORCES_PASSWORD_CHANGE.then(|| p.must_change_password());
    api_login_answer(outcome, must_change)
}

/// The JSON answer to a login: 200 `{"token"}`, with
/// `"must_change_password"` when `must_change` is given; 401 wrong, 403
/// locked, 503 with `Retry-After: 30` not checked.
pub fn api_login_answer(outcome: Outcome, must_change: Option<bool>) -> Response {
    match outcome {
        Outcome::Ok(t) => {
            let mut body = serde_json::json!({ "token": t });
            if let Some(due) = must_change {
                body["must_change_password"] = due.into();
            }
            Json(body).into_response()
        }
        Outcome::Wrong(m) => api_error(StatusCode::UNAUTHORIZED, &m),
        Outcome::Locked(m) => api_error(StatusCode::FORBIDDEN, &format!("locked: {m}")),
        Outcome::Unavailable(m) => {
            let mut r = api_error(StatusCode::SERVICE_UNAVAILABLE, &m);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            r
        }
    }
}

/// The status and message of a refused confirmation (a current password or
/// a device credential checked by [`super::login::reauthenticate`] or
/// [`super::login::check_credential`]): 403 locked, 503 not checked, 400
/// wrong.
pub fn refusal(o: Outcome) -> (StatusCode, String) {
    match o {
        Outcome::Locked(m) => (StatusCode::FORBIDDEN, m),
        Outcome::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        Outcome::Wrong(m) | Outcome::Ok(m) => (StatusCode::BAD_REQUEST, m),
    }
}

/// `page!(model, headers)` in a page handler: the [`Auth`] of
/// [`page_auth`], or the handler returns its answer.
macro_rules! page {
    ($model:expr, $headers:expr) => {
        match $crate::security::https::page_auth(&*$model, &$headers) {
            Ok(a) => a,
            Err(r) => return *r,
        }
    };
}

/// `post_auth!(model, headers, csrf)` in a form handler: the [`Auth`] of
/// [`form_auth`], or the handler returns its answer.
macro_rules! post_auth {
    ($model:expr, $headers:expr, $csrf:expr) => {
        match $crate::security::https::form_auth(&*$model, &$headers, $csrf) {
            Ok(a) => a,
            Err(r) => return *r,
        }
    };
}

/// `api!(model, headers)` in a JSON API handler: returns the answer of
/// [`api_auth`] unless the request may go on.
macro_rules! api {
    ($model:expr, $headers:expr) => {
        if let Err(r) = $crate::security::https::api_auth(&*$model, &$headers) {
            return *r;
        }
    };
}

pub(crate) use {api, page, post_auth};

#[cfg(test)]
mod tests {
    use super::*;

    async fn json(r: Response) -> serde_json::Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn the_json_login_answers_every_outcome_alike_on_every_model() {
        let ok = api_login_answer(Outcome::Ok("t1".into()), None);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(json(ok).await, serde_json::json!({"token": "t1"}));
        let forced = api_login_answer(Outcome::Ok("t2".into()), Some(true));
        assert_eq!(
            json(forced).await,
            serde_json::json!({"token": "t2", "must_change_password": true})
        );
        let wrong = api_login_answer(Outcome::Wrong("2 left".into()), Some(false));
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert!(wrong.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(json(wrong).await["error"], "2 left");
        let locked = api_login_answer(Outcome::Locked("10 min".into()), None);
        assert_eq!(locked.status(), StatusCode::FORBIDDEN);
        assert_eq!(json(locked).await["error"], "locked: 10 min");
        for must_change in [None, Some(true)] {
            let r = api_login_answer(Outcome::Unavailable("wait".into()), must_change);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[header::RETRY_AFTER], "30");
            assert_eq!(json(r).await["error"], "wait");
        }
    }
}
