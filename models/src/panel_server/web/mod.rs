//! HTTPS webpages and device JSON API of the Panel Server (DOCA0211
//! "Supported Protocols": HTTPS TLS v1.2; "Security Functionality
//! Verification": authentication, authorization, audit, firmware update,
//! disabling services).
//!
//! Contract:
//! - HTTPS on 443 of every interface; TLS 1.2 only unless the site file sets
//!   `tls13 = true` (then 1.2 and 1.3); nothing below 1.2. The certificate is
//!   an X.509v3 self-signed one made per device at first boot (rcgen) and
//!   kept in NV memory until a factory reset. HTTP on 80 is not served.
//! - Server-rendered HTML pages (no JavaScript needed). Any page other than
//!   the login page answers 303 -> /login without a valid session. Sessions
//!   are random 256-bit tokens in a `Secure; HttpOnly; SameSite=Strict`
//!   cookie with a 15-minute idle timeout on the virtual clock; every form
//!   carries the session's CSRF token and a POST without it gets 403.
//! - `/api/...`: the same operations as JSON, authenticated by
//!   `Authorization: Bearer <token>` from `POST /api/login`.
//! - Logins follow [`crate::panel_server::security::lockout`]; the state is
//!   kept in NV memory at every change.

pub mod dpws;
mod pages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use fieldtwin_emulator::device::{BootError, DeviceContext, TrackedListener};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::node::{
    ACCOUNTS_KEY, Accounts, IMAGE_KEY, LOCKOUT_KEY, Node, SUPPORT_USER, TLS_KEY, WEB_USER,
};
use super::security::audit::{self, Kind};
use super::security::backup;
use super::security::lockout::{Failure, Lockout};
use super::security::password::{self, Hashed, hex, unhex};
use super::security::session::Session;
use super::{SETTINGS_KEY, Settings};
use crate::proto::firmware::{self, Image};

/// HTTPS port.
pub const HTTPS_PORT: u16 = 443;
/// Largest upload (firmware image, backup).
pub const MAX_UPLOAD: usize = 64 << 20;

/// Certificate and key kept in NV memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TlsMaterial {
    cert_der: String,
    key_der: String,
}

fn tls_material(node: &Node) -> Result<(Vec<u8>, Vec<u8>), BootError> {
    if let Some(m) = node.ctx.nv.get::<TlsMaterial>(TLS_KEY)?
        && let (Some(c), Some(k)) = (unhex(&m.cert_der), unhex(&m.key_der))
    {
        return Ok((c, k));
    }
    let mut names: Vec<String> = node
        .ctx
        .interface_names()
        .iter()
        .filter_map(|i| node.ctx.interface(i))
        .map(|s| s.ipv4().to_string())
        .collect();
    names.push(node.ps.id.clone());
    let err = |e: rcgen::Error| BootError::Other(format!("certificate generation failed: {e}"));
    let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!(
            "{} {}",
            node.ps.identity.commercial_reference, node.ps.identity.serial
        ),
    );
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "Schneider Electric (fieldtwin)",
    );
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    let (c, k) = (cert.der().to_vec(), key.serialize_der());
    node.ctx.nv.put(
        TLS_KEY,
        &TlsMaterial {
            cert_der: hex(&c),
            key_der: hex(&k),
        },
    )?;
    Ok((c, k))
}

fn tls_acceptor(node: &Node) -> Result<TlsAcceptor, BootError> {
    let (cert, key) = tls_material(node)?;
    let versions: &[&rustls::SupportedProtocolVersion] = if node.ps.tls13 {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let err = |e: rustls::Error| BootError::Other(format!("TLS configuration: {e}"));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(err)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .map_err(err)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves `app` over HTTP/1.1 on `listener`, through TLS when `tls` is set.
pub(crate) async fn serve(
    ctx: DeviceContext,
    mut listener: TrackedListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        let t = token.clone();
        ctx.spawn(tracker.track_future(async move {
            let conn = async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                // A client that never finishes its request headers is dropped.
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30));
                match tls {
                    Some(acc) => {
                        let Ok(Ok(s)) =
                            tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await
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

/// Starts HTTPS on every interface (a task of the node's boot).
pub async fn start(node: &Arc<Node>) -> Result<(), BootError> {
    let acceptor = tls_acceptor(node)?;
    let app = router(node.clone());
    for iface in node.ctx.interface_names() {
        let listener = node.ctx.listen_tcp(&iface, "https", HTTPS_PORT).await?;
        // Open connections end with the boot, not only the listener.
        let (token, tracker) = (node.boot_token(), node.boot_tracker());
        node.spawn(serve(
            node.ctx.clone(),
            listener,
            Some(acceptor.clone()),
            app.clone(),
            token,
            tracker,
        ));
    }
    Ok(())
}

type St = State<Arc<Node>>;

fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login_form))
        .route("/logout", post(logout))
        .route("/settings", get(settings_page))
        .route("/settings/network-communication", post(save_netcomm))
        .route("/settings/wifi", post(save_wifi))
        .route("/settings/wireless", post(save_wireless))
        .route("/settings/wireless/add", post(add_wireless))
        .route("/settings/wireless/remove", post(remove_wireless))
        .route("/settings/datetime", post(save_datetime))
        .route(
            "/settings/wireless-permanent-off",
            post(wireless_permanent_off),
        )
        .route("/users", get(users_page).post(change_password))
        .route("/firmware", get(firmware_page).post(firmware_upload))
        .route("/logs", get(logs_page))
        .route("/logs/audit.csv", get(logs_csv))
        .route("/backup", get(backup_page))
        .route("/backup/download", post(backup_download))
        .route("/backup/restore", post(backup_restore))
        .route("/maintenance", get(maintenance_page))
        .route("/maintenance/reboot", post(reboot))
        .route("/maintenance/factory-reset", post(factory_reset))
        .route("/api/login", post(api_login))
        .route("/api/status", get(api_status))
        .route("/api/settings", get(api_settings).put(api_put_settings))
        .route("/api/audit", get(api_audit))
        .route("/api/firmware", post(api_firmware))
        .route("/api/reboot", post(api_reboot))
        .route("/api/factory-reset", post(api_factory_reset))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(node)
}

async fn security_headers(mut r: Response) -> Response {
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

// ---------- sessions ----------

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("session="))
        .map(str::to_string)
        .next()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|s| s.trim().to_string())
}

fn session_of(node: &Node, token: Option<String>) -> Option<(String, Session)> {
    let t = token?;
    let s = node
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .touch(&t, node.now())?;
    Some((t, s))
}

/// A logged-in browser, or the redirect to the login page.
struct Auth {
    token: String,
    csrf: String,
}

fn auth(node: &Node, headers: &HeaderMap) -> Result<Auth, Box<Response>> {
    session_of(node, cookie_token(headers))
        .map(|(token, s)| Auth {
            token,
            csrf: s.csrf,
        })
        .ok_or_else(|| Box::new(Redirect::to("/login").into_response()))
}

/// Same as [`auth`] for a form POST, also checking its CSRF token.
fn auth_post(node: &Node, headers: &HeaderMap, csrf: &str) -> Result<Auth, Box<Response>> {
    let a = auth(node, headers)?;
    if a.csrf.len() == csrf.len() && a.csrf == csrf {
        Ok(a)
    } else {
        Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                Html(pages::message(
                "Forbidden",
                "The form was not sent from this device's own page (missing or wrong CSRF token). Open the page again and retry.",
            )),
            )
                .into_response(),
        ))
    }
}

fn api_auth(node: &Node, headers: &HeaderMap) -> Result<(), Box<Response>> {
    session_of(node, bearer(headers)).map(|_| ()).ok_or_else(|| {
        Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            "missing or expired token: POST /api/login {\"username\",\"password\"} and send Authorization: Bearer <token>",
        ))
    })
}

fn api_error(code: StatusCode, msg: &str) -> Response {
    (code, Json(serde_json::json!({ "error": msg }))).into_response()
}

// ---------- login ----------

enum LoginOutcome {
    Ok(String),
    Wrong(String),
    Locked(String),
}

async fn login(node: &Arc<Node>, user: &str, pw: &str, via: &str) -> LoginOutcome {
    let _guard = node.auth.lock().await;
    let now = node.now();
    let nv = &node.ctx.nv;
    let mut lock: Lockout = nv.get(LOCKOUT_KEY).ok().flatten().unwrap_or_default();
    if let Some(rem) = lock.locked(now) {
        let min = (rem.num_seconds() + 59) / 60;
        node.audit(
            Kind::LoginRefusedLocked,
            format!("{via}: attempt refused while locked"),
        );
        return LoginOutcome::Locked(format!(
            "The webpages are locked after too many failed logins. Try again in {min} minute(s)."
        ));
    }
    let accounts: Option<Accounts> = nv.get(ACCOUNTS_KEY).ok().flatten();
    let pw_len = pw.len();
    // The hash is computed whatever the user name, so the answer time does
    // not tell whether the user exists.
    let support = user == SUPPORT_USER;
    let ok = match accounts {
        Some(a) => {
            let pw = pw.to_string();
            let known = user == WEB_USER || (support && a.support.is_some());
            let hash = match (support, a.support) {
                (true, Some(h)) => h,
                _ => a.admin,
            };
            let verified = tokio::task::spawn_blocking(move || hash.verify(&pw))
                .await
                .unwrap_or(false);
            verified && known && pw_len > 0
        }
        None => false,
    };
    let who = if support {
        "support user"
    } else {
        "administrator"
    };
    if ok {
        lock.succeed();
        let _ = nv.put(LOCKOUT_KEY, &lock);
        node.audit(Kind::LoginSucceeded, format!("{via}: {who} logged in"));
        let t = node
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open(now);
        return LoginOutcome::Ok(t);
    }
    let outcome = lock.fail(now);
    let _ = nv.put(LOCKOUT_KEY, &lock);
    match outcome {
        Failure::Counted { left } => {
            node.audit(
                Kind::LoginFailed,
                format!(
                    "{via}: wrong user name or password ({} consecutive)",
                    lock.failures
                ),
            );
            LoginOutcome::Wrong(format!(
                "Wrong user name or password. {left} more failure(s) lock the webpages."
            ))
        }
        Failure::LockedNow { minutes } => {
            node.audit(
                Kind::LoginFailed,
                format!("{via}: wrong user name or password"),
            );
            node.audit(
                Kind::Lockout,
                format!(
                    "webpages locked for {minutes} minutes after repeated failed logins (lock #{})",
                    lock.locks
                ),
            );
            LoginOutcome::Locked(format!(
                "Wrong user name or password. Too many failed logins: the webpages are locked for {minutes} minutes."
            ))
        }
    }
}

fn session_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "session={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .expect("hex token is a valid header")
}

async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn login_form(State(node): St, Form(f): Form<LoginForm>) -> Response {
    match login(&node, &f.username, &f.password, "webpages").await {
        LoginOutcome::Ok(t) => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&t));
            r
        }
        LoginOutcome::Wrong(m) => {
            (StatusCode::UNAUTHORIZED, Html(pages::login(Some(&m)))).into_response()
        }
        LoginOutcome::Locked(m) => {
            (StatusCode::FORBIDDEN, Html(pages::login(Some(&m)))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(node): St, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    match auth_post(&node, &headers, &f.csrf) {
        Ok(a) => {
            node.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .close(&a.token);
            node.audit(Kind::Logout, "webpages: administrator logged out");
            let mut r = Redirect::to("/login").into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
                ),
            );
            r
        }
        Err(r) => *r,
    }
}

// ---------- pages ----------

macro_rules! page {
    ($node:expr, $headers:expr) => {
        match auth(&$node, &$headers) {
            Ok(a) => a,
            Err(r) => return *r,
        }
    };
}

macro_rules! post_auth {
    ($node:expr, $headers:expr, $csrf:expr) => {
        match auth_post(&$node, &$headers, $csrf) {
            Ok(a) => a,
            Err(r) => return *r,
        }
    };
}

async fn home(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::home(&node, &a.csrf)).into_response()
}

async fn settings_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::settings(&node, &a.csrf, None)).into_response()
}

/// Applies a change to the settings and answers with the settings page.
async fn change_settings(
    node: &Arc<Node>,
    csrf: &str,
    what: &str,
    f: impl FnOnce(&mut Settings) -> Result<(), String>,
) -> Response {
    let _guard = node.auth.lock().await;
    let mut s = node.settings();
    let r = f(&mut s).and_then(|()| wireless_allowed(node, &s));
    if let Err(m) = r {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::settings(
                node,
                csrf,
                Some(&format!("Not saved: {m}")),
            )),
        )
            .into_response();
    }
    if s == node.settings() {
        return Html(pages::settings(node, csrf, Some("No change."))).into_response();
    }
    match node.apply(s).await {
        Ok(()) => {
            node.audit(
                Kind::ConfigurationChanged,
                format!("{what} settings changed"),
            );
            Html(pages::settings(node, csrf, Some("Saved."))).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::settings(
                node,
                csrf,
                Some(&format!("Saved, but a service could not restart: {e}")),
            )),
        )
            .into_response(),
    }
}

/// Refuses wireless functions after a permanent deactivation.
fn wireless_allowed(node: &Node, s: &Settings) -> Result<(), String> {
    if node.wireless_permanently_off()
        && (s.wifi.enabled || s.wifi.access_point || s.ieee802154 || s.modbus.wifi)
    {
        return Err("Wi-Fi and IEEE 802.15.4 are permanently deactivated on this device; they cannot be activated again (not even by a factory reset)".into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct PermanentOffForm {
    #[serde(default)]
    csrf: String,
    confirm: Option<String>,
}

async fn wireless_permanent_off(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<PermanentOffForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    if f.confirm.is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::settings(
                &node,
                &a.csrf,
                Some("Not done: tick the confirmation box to deactivate wireless permanently."),
            )),
        )
            .into_response();
    }
    if let Err(e) = node.ctx.nv.put(super::node::WIRELESS_OFF_KEY, &true) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::message("Error", &e.to_string())),
        )
            .into_response();
    }
    node.audit(
        Kind::ConfigurationChanged,
        "Wi-Fi and IEEE 802.15.4 permanently deactivated",
    );
    change_settings(&node, &a.csrf, "wireless", |s| {
        super::node::force_wireless_off(s);
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
struct NetCommForm {
    #[serde(default)]
    csrf: String,
    modbus_eth1: Option<String>,
    modbus_eth2: Option<String>,
    modbus_wifi: Option<String>,
    dpws: Option<String>,
    #[serde(default)]
    dpws_port: String,
    rstp: Option<String>,
}

async fn save_netcomm(State(node): St, headers: HeaderMap, Form(f): Form<NetCommForm>) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "network communication", |s| {
        s.modbus.eth1 = f.modbus_eth1.is_some();
        s.modbus.eth2 = f.modbus_eth2.is_some();
        s.modbus.wifi = f.modbus_wifi.is_some();
        s.dpws = f.dpws.is_some();
        s.rstp = f.rstp.is_some();
        if !f.dpws_port.trim().is_empty() {
            let p: u16 = f.dpws_port.trim().parse().map_err(|_| {
                format!("DPWS port {:?} is not a port number (1-65535)", f.dpws_port)
            })?;
            if p == 0 || p == HTTPS_PORT || p == super::MODBUS_PORT {
                return Err(format!(
                    "DPWS port {p} is not allowed (1-65535, not 443 or 502)"
                ));
            }
            s.dpws_port = p;
        }
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
struct WifiForm {
    #[serde(default)]
    csrf: String,
    enabled: Option<String>,
    access_point: Option<String>,
    #[serde(default)]
    ap_password: String,
}

async fn save_wifi(State(node): St, headers: HeaderMap, Form(f): Form<WifiForm>) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "Wi-Fi", |s| {
        s.wifi.enabled = f.enabled.is_some();
        // Deactivating Wi-Fi also disables the access point (DOCA0211).
        s.wifi.access_point = f.enabled.is_some() && f.access_point.is_some();
        if !f.ap_password.is_empty() {
            password::check(password::Kind::WifiAp, &f.ap_password)
                .map_err(|e| format!("Wi-Fi access point password: {e}"))?;
            s.wifi.ap_password = Some(f.ap_password.clone());
        }
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
struct WirelessForm {
    #[serde(default)]
    csrf: String,
    ieee802154: Option<String>,
}

async fn save_wireless(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<WirelessForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "wireless devices", |s| {
        s.ieee802154 = f.ieee802154.is_some();
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
struct AddWirelessForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    install_code: String,
}

/// The RF-ID an install code starts with. [NF] layout: 36 hexadecimal
/// characters, the device's 16-digit RF-ID then 20 of key and check
/// (docs/panel-server.md).
pub fn install_code_rf_id(code: &str) -> Result<u64, String> {
    let code = code.trim();
    if code.chars().count() != 36 {
        return Err(format!(
            "an install code has 36 characters, this one has {}",
            code.chars().count()
        ));
    }
    if !code.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("an install code has only hexadecimal characters (0-9, A-F)".into());
    }
    u64::from_str_radix(&code[..16], 16).map_err(|e| e.to_string())
}

/// Pairs the in-range device whose RF-ID the install code carries.
async fn add_wireless(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<AddWirelessForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    let found = install_code_rf_id(&f.install_code).and_then(|rf_id| {
        node.ps
            .wireless_in_range()
            .into_iter()
            .find(|(slot, _)| slot.rf_id == rf_id)
            .map(|(slot, _)| slot)
            .ok_or_else(|| format!("no device with RF-ID {rf_id:016X} answered the discovery"))
    });
    change_settings(&node, &a.csrf, "wireless devices (device added)", |s| {
        let slot = found?;
        if s.pairing.iter().any(|p| p.rf_id == slot.rf_id) {
            return Err(format!("{:016X} is already paired", slot.rf_id));
        }
        if s.pairing.len() >= usize::from(super::registers::WIRELESS_SLOTS) {
            return Err("the wireless device table is full (100 devices)".into());
        }
        s.pairing.push(slot);
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
struct RemoveWirelessForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rf_id: String,
}

async fn remove_wireless(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<RemoveWirelessForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    change_settings(&node, &a.csrf, "wireless devices (device removed)", |s| {
        let rf_id = u64::from_str_radix(f.rf_id.trim(), 16)
            .map_err(|_| format!("{:?} is not an RF-ID", f.rf_id))?;
        let before = s.pairing.len();
        s.pairing.retain(|p| p.rf_id != rf_id);
        if s.pairing.len() == before {
            return Err(format!("{rf_id:016X} is not paired"));
        }
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
struct DateTimeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    datetime: String,
    #[serde(default)]
    ntp_server: String,
}

async fn save_datetime(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<DateTimeForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    if f.mode == "manual" && !f.datetime.is_empty() {
        let parsed = chrono::NaiveDateTime::parse_from_str(&f.datetime, "%Y-%m-%dT%H:%M")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(&f.datetime, "%Y-%m-%dT%H:%M:%S"));
        let Ok(t) = parsed else {
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::settings(
                    &node,
                    &a.csrf,
                    Some("Not saved: the date/time must be YYYY-MM-DDTHH:MM (UTC)"),
                )),
            )
                .into_response();
        };
        let before = node.ctx.rtc.now();
        if node.ctx.rtc.set(t.and_utc()).is_err() {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(pages::message("Error", "the RTC could not be saved")),
            )
                .into_response();
        }
        node.audit(
            Kind::DateTimeChanged,
            format!(
                "date/time set manually from {} to {}",
                before.format("%Y-%m-%dT%H:%M:%SZ"),
                t.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        );
    }
    let server = f.ntp_server.trim().to_string();
    let mode = f.mode.clone();
    change_settings(&node, &a.csrf, "date and time", move |s| {
        if mode == "ntp" {
            if server.is_empty() || server.len() > 253 || server.contains(char::is_whitespace) {
                return Err(
                    "NTP mode needs a server name or address (no spaces, at most 253 characters)"
                        .into(),
                );
            }
            s.ntp_server = Some(server);
        } else {
            s.ntp_server = None;
        }
        Ok(())
    })
    .await
}

/// The Users page with the SupportUser's state read from NV memory.
fn users_html(node: &Node, csrf: &str, msg: Option<&str>) -> String {
    let support = node
        .ctx
        .nv
        .get::<Accounts>(ACCOUNTS_KEY)
        .ok()
        .flatten()
        .is_some_and(|a| a.support.is_some());
    pages::users(csrf, msg, support)
}

async fn users_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(users_html(&node, &a.csrf, None)).into_response()
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    /// `SecurityAdmin` (default) or `SupportUser`.
    #[serde(default)]
    account: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

async fn change_password(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    let bad = |m: String| {
        (
            StatusCode::BAD_REQUEST,
            Html(users_html(&node, &a.csrf, Some(&m))),
        )
            .into_response()
    };
    if f.new != f.confirm {
        return bad("Not changed: the new password and its confirmation differ.".into());
    }
    let _guard = node.auth.lock().await;
    let Some(acc) = node.ctx.nv.get::<Accounts>(ACCOUNTS_KEY).ok().flatten() else {
        return bad("Not changed: no account in memory.".into());
    };
    // The administrator's current password authorises both accounts.
    let support = f.account == SUPPORT_USER;
    let disable = support && f.new.is_empty() && f.confirm.is_empty();
    if !disable && let Err(e) = password::check(password::Kind::User, &f.new) {
        return bad(format!("Not changed: {e}."));
    }
    let (cur, new, it) = (f.current.clone(), f.new.clone(), node.ps.iterations);
    let admin = acc.admin.clone();
    let res = tokio::task::spawn_blocking(move || {
        admin
            .verify(&cur)
            .then(|| (!disable).then(|| Hashed::new(&new, it)))
    })
    .await;
    let Ok(Some(hash)) = res else {
        return bad("Not changed: the administrator's current password is wrong.".into());
    };
    let (accounts, what) = match (support, hash) {
        (false, Some(h)) => (
            Accounts { admin: h, ..acc },
            "administrator password changed",
        ),
        (true, Some(h)) => (
            Accounts {
                support: Some(h),
                ..acc
            },
            "SupportUser password set (account enabled)",
        ),
        (_, None) => (
            Accounts {
                support: None,
                ..acc
            },
            "SupportUser account disabled",
        ),
    };
    let _ = node.ctx.nv.put(ACCOUNTS_KEY, &accounts);
    node.audit(Kind::PasswordChanged, what);
    Html(users_html(&node, &a.csrf, Some(&format!("Done: {what}.")))).into_response()
}

// ---------- firmware ----------

async fn firmware_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::firmware(&node, &a.csrf, None)).into_response()
}

/// Reads a multipart form into name -> bytes.
async fn fields(mut m: Multipart) -> Result<HashMap<String, Vec<u8>>, String> {
    let mut out = HashMap::new();
    while let Some(f) = m.next_field().await.map_err(|e| e.to_string())? {
        let name = f.name().unwrap_or_default().to_string();
        let data = f.bytes().await.map_err(|e| e.to_string())?;
        out.insert(name, data.to_vec());
    }
    Ok(out)
}

fn text(f: &HashMap<String, Vec<u8>>, k: &str) -> String {
    f.get(k)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Verifies and installs an image; `Ok(version)` then the device reboots.
fn install(node: &Arc<Node>, bytes: &[u8]) -> Result<String, String> {
    let img = Image::verify(
        bytes,
        &firmware::lab_vendor_key(),
        firmware::PANEL_SERVER_FAMILY,
    )
    .map_err(|e| {
        node.audit(Kind::FirmwareUpdateFailed, format!("image rejected: {e}"));
        e.to_string()
    })?;
    let old = node.settings().firmware;
    let store = node.ctx.nv.put_raw(IMAGE_KEY, bytes).and_then(|_| {
        let mut s = node.settings();
        s.firmware = img.version.clone();
        node.ctx.nv.put(SETTINGS_KEY, &s)
    });
    if let Err(e) = store {
        node.audit(
            Kind::FirmwareUpdateFailed,
            format!("image could not be stored: {e}"),
        );
        return Err(format!("the image could not be stored: {e}"));
    }
    node.audit(
        Kind::FirmwareUpdated,
        format!("firmware {old} -> {}", img.version),
    );
    node.restart(
        &format!("reboot after firmware update to {}", img.version),
        false,
    );
    Ok(img.version)
}

/// The fields of a multipart upload, or the page that says why it failed.
async fn upload(m: Multipart) -> Result<HashMap<String, Vec<u8>>, Response> {
    fields(m).await.map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Html(pages::message("Upload failed", &e)),
        )
            .into_response()
    })
}

async fn firmware_upload(State(node): St, headers: HeaderMap, m: Multipart) -> Response {
    let f = match upload(m).await {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let a = post_auth!(node, headers, &text(&f, "csrf"));
    let bytes = f.get("image").cloned().unwrap_or_default();
    match install(&node, &bytes) {
        Ok(v) => Html(pages::message(
            "Firmware installed",
            &format!("Firmware {v} verified and installed. The Panel Server is rebooting; log in again in a few seconds."),
        ))
        .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Html(pages::firmware(&node, &a.csrf, Some(&format!("Firmware update failed: {e}")))),
        )
            .into_response(),
    }
}

// ---------- logs ----------

async fn logs_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    let entries = audit::read(&node.ctx.nv).unwrap_or_default();
    Html(pages::logs(&a.csrf, &entries)).into_response()
}

async fn logs_csv(State(node): St, headers: HeaderMap) -> Response {
    let _a = page!(node, headers);
    let entries = audit::read(&node.ctx.nv).unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit-log.csv\"",
            ),
        ],
        audit::csv(&entries),
    )
        .into_response()
}

// ---------- backup ----------

/// What a backup holds ([NF]: configuration and accounts; not the logs).
#[derive(Debug, Serialize, Deserialize)]
struct BackupContent {
    device: String,
    settings: Settings,
    accounts: Option<Accounts>,
}

async fn backup_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::backup(&a.csrf, None)).into_response()
}

#[derive(Deserialize)]
struct BackupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

async fn backup_download(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<BackupForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    if let Err(e) = password::check(password::Kind::Backup, &f.password) {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::backup(
                &a.csrf,
                Some(&format!("No backup made: backup password: {e}.")),
            )),
        )
            .into_response();
    }
    let content = BackupContent {
        device: node.ps.identity.commercial_reference.clone(),
        settings: node.settings(),
        accounts: node.ctx.nv.get(ACCOUNTS_KEY).ok().flatten(),
    };
    let plain = serde_json::to_vec(&content).unwrap_or_default();
    let (pw, it) = (f.password.clone(), node.ps.iterations);
    let Ok(file) = tokio::task::spawn_blocking(move || backup::seal(&plain, &pw, it)).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    node.audit(
        Kind::BackupCreated,
        "encrypted configuration backup downloaded",
    );
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"panel-server-backup.ftbk\"",
            ),
        ],
        file,
    )
        .into_response()
}

async fn backup_restore(State(node): St, headers: HeaderMap, m: Multipart) -> Response {
    let f = match upload(m).await {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let a = post_auth!(node, headers, &text(&f, "csrf"));
    let file = f.get("file").cloned().unwrap_or_default();
    let pw = text(&f, "password");
    let opened = tokio::task::spawn_blocking(move || backup::open(&file, &pw)).await;
    let content = match opened {
        Ok(Ok(plain)) => serde_json::from_slice::<BackupContent>(&plain)
            .map_err(|e| format!("the backup content is not valid: {e}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let content = match content {
        Ok(c) => c,
        Err(e) => {
            node.audit(Kind::RestoreFailed, format!("restore refused: {e}"));
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::backup(&a.csrf, Some(&format!("Not restored: {e}.")))),
            )
                .into_response();
        }
    };
    let mut s = content.settings;
    s.firmware = node.settings().firmware;
    let _ = node.ctx.nv.put(SETTINGS_KEY, &s);
    if let Some(acc) = content.accounts {
        let _ = node.ctx.nv.put(ACCOUNTS_KEY, &acc);
    }
    node.audit(
        Kind::Restored,
        "configuration restored from a backup file; rebooting",
    );
    node.restart("reboot after configuration restore", false);
    Html(pages::message(
        "Restored",
        "The configuration was restored. The Panel Server is rebooting.",
    ))
    .into_response()
}

// ---------- maintenance ----------

async fn maintenance_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::maintenance(&a.csrf)).into_response()
}

async fn reboot(State(node): St, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let _a = post_auth!(node, headers, &f.csrf);
    node.audit(Kind::Reboot, "reboot requested on the webpages");
    node.restart("reboot requested on the webpages", false);
    Html(pages::message(
        "Rebooting",
        "The Panel Server is rebooting; log in again in a few seconds.",
    ))
    .into_response()
}

async fn factory_reset(State(node): St, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let _a = post_auth!(node, headers, &f.csrf);
    do_factory_reset(&node, "webpages");
    Html(pages::message(
        "Factory reset",
        "Configuration, accounts, logs and certificate are being erased; the Panel Server restarts with factory settings.",
    ))
    .into_response()
}

fn do_factory_reset(node: &Arc<Node>, via: &str) {
    node.audit(
        Kind::FactoryReset,
        format!("factory reset requested ({via})"),
    );
    node.ctx
        .emit("factory_reset", format!("factory reset requested ({via})"));
    node.restart(&format!("factory reset ({via})"), true);
}

// ---------- JSON API ----------

#[derive(Deserialize)]
struct ApiLogin {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn api_login(State(node): St, body: axum::body::Bytes) -> Response {
    let Ok(l) = serde_json::from_slice::<ApiLogin>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"username\": \"...\", \"password\": \"...\"}",
        );
    };
    match login(&node, &l.username, &l.password, "api").await {
        LoginOutcome::Ok(t) => Json(serde_json::json!({ "token": t })).into_response(),
        LoginOutcome::Wrong(m) => api_error(StatusCode::UNAUTHORIZED, &m),
        LoginOutcome::Locked(m) => api_error(StatusCode::FORBIDDEN, &format!("locked: {m}")),
    }
}

macro_rules! api {
    ($node:expr, $headers:expr) => {
        if let Err(r) = api_auth(&$node, &$headers) {
            return *r;
        }
    };
}

async fn api_status(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    let id = &node.ps.identity;
    Json(serde_json::json!({
        "device": node.ps.id,
        "commercial_reference": id.commercial_reference,
        "serial": id.serial,
        "firmware": node.settings().firmware,
        "health": "Nominal",
        "rtc": node.ctx.rtc.now(),
    }))
    .into_response()
}

async fn api_settings(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    let mut s = node.settings();
    s.wifi.ap_password = s.wifi.ap_password.map(|_| "********".into());
    Json(s).into_response()
}

async fn api_put_settings(
    State(node): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(node, headers);
    let new: Settings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!("invalid settings JSON: {e}"),
            );
        }
    };
    let _guard = node.auth.lock().await;
    let mut s = new;
    let cur = node.settings();
    s.firmware = cur.firmware.clone();
    s.topology = cur.topology;
    match s.wifi.ap_password.as_deref() {
        Some("********") | None => s.wifi.ap_password = cur.wifi.ap_password.clone(),
        Some(p) => {
            if let Err(e) = password::check(password::Kind::WifiAp, p) {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Wi-Fi access point password: {e}"),
                );
            }
        }
    }
    if let Err(e) = wireless_allowed(&node, &s) {
        return api_error(StatusCode::BAD_REQUEST, &e);
    }
    if s.dpws_port == 0 || s.dpws_port == HTTPS_PORT || s.dpws_port == super::MODBUS_PORT {
        return api_error(
            StatusCode::BAD_REQUEST,
            "dpws_port must be 1-65535 and not 443 or 502",
        );
    }
    if s != cur {
        if let Err(e) = node.apply(s).await {
            return api_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
        node.audit(
            Kind::ConfigurationChanged,
            "settings changed through the API",
        );
    }
    Json(node.settings()).into_response()
}

async fn api_audit(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    Json(audit::read(&node.ctx.nv).unwrap_or_default()).into_response()
}

async fn api_firmware(State(node): St, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    api!(node, headers);
    match install(&node, &body) {
        Ok(v) => Json(serde_json::json!({ "installed": v, "rebooting": true })).into_response(),
        Err(e) => api_error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn api_reboot(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    node.audit(Kind::Reboot, "reboot requested through the API");
    node.restart("reboot requested through the API", false);
    Json(serde_json::json!({ "rebooting": true })).into_response()
}

async fn api_factory_reset(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    do_factory_reset(&node, "api");
    Json(serde_json::json!({ "factory_reset": true })).into_response()
}
