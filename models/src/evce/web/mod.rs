//! HTTPS webpages and JSON API of the EV Charging Expert (DOCA0349
//! "Embedded web server", "Security Features", "Enrollment of EV charging
//! stations", "Audit Log"), built on the shared security surface
//! ([`crate::security`]) with the EVCE's rules ([`super::policy`]).
//!
//! Contract:
//! - HTTPS on 443 of every interface, TLS 1.2 only, with the default
//!   self-signed X.509v3 certificate made per device on first use and kept
//!   in NV memory until a factory reset. No HTTP.
//! - Accounts: `admin` (factory password `admin`) and `support` (disabled
//!   until the administrator sets its password; it is the SSH login). Salted
//!   PBKDF2 hashes, lockout and audit as the shared [`crate::security::login`].
//! - **First login forces a password change**: until the administrator's
//!   factory password has been replaced ([`PASSWORD_CHANGED_KEY`] absent,
//!   also after a factory reset), every page answers 303 -> `/password` and
//!   every `/api` call except `POST /api/password` answers 403 saying so.
//! - Pages: `/` (status), `/password`, `/stations` (discovered stations
//!   with Enroll, enrolled stations with Remove), `/maintenance` (SSH
//!   on/off, support password, reboot, factory reset), `/firmware`, `/logs`
//!   (audit log). Forms carry the session's CSRF token; sessions are
//!   Secure/HttpOnly/SameSite=Strict cookies with a 15-minute idle timeout.
//! - `/api/...`: the same operations as JSON with `Authorization: Bearer`.
//! - Audited: logins (good, bad, locked), password changes, enrollment and
//!   removal, SSH enabled/disabled (and SSH logins, [`super::ssh`]), firmware
//!   updates, reboots and factory resets.
//! - The device behaviour (restart, OCPP station state) is the node's,
//!   reached through [`Host`]; enrollment lives in [`super::enrollment`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Form, Json};
use fieldtwin_emulator::device::{BootError, DeviceContext};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ssdp::Discovered;
use super::ssh;
use crate::security::audit::Kind;
use crate::security::https::{
    CsrfForm, api, api_error, multipart_fields as fields, page, post_auth,
};
use crate::security::{Surface, https, tls};

mod firmware;
mod login;
mod maintenance;
pub mod pages;
mod stations;

/// HTTPS port.
pub const HTTPS_PORT: u16 = 443;
/// Largest upload (firmware image).
pub const MAX_UPLOAD: usize = 64 << 20;
/// NV key set once the administrator's factory password has been replaced.
pub const PASSWORD_CHANGED_KEY: &str = "evce.password_changed";
/// Validity of the self-signed certificate ([NF]: ten years).
pub const CERTIFICATE_VALIDITY: chrono::Duration = chrono::Duration::days(3652);

/// What the web surface asks of the running device.
pub trait Host: Send + Sync + 'static {
    /// Soft reboot after a short delay (`wipe`: factory reset first).
    fn restart(&self, reason: &str, wipe: bool);
    /// The firmware version running.
    fn firmware(&self) -> String;
    /// OCPP state of the connected stations (box id, state), if any.
    fn stations_online(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The web surface of one boot of an EVCE.
pub struct Web {
    pub ctx: DeviceContext,
    pub sec: Surface,
    pub host: Arc<dyn Host>,
    pub discovered: Arc<Discovered>,
    pub ssh: ssh::Switch,
    pub token: CancellationToken,
    pub tracker: TaskTracker,
}

impl std::ops::Deref for Web {
    type Target = Surface;
    fn deref(&self) -> &Surface {
        &self.sec
    }
}

impl Web {
    /// The surface of one boot: `token`/`tracker` are the boot's (a reboot
    /// stops the pages and SSH).
    pub fn new(
        ctx: DeviceContext,
        iterations: u32,
        host: Arc<dyn Host>,
        discovered: Arc<Discovered>,
        token: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            sec: Surface::new(
                ctx.clone(),
                super::policy::config(iterations),
                super::policy::DEFAULT_PASSWORD,
            ),
            ctx,
            host,
            discovered,
            ssh: ssh::Switch::default(),
            token,
            tracker,
        })
    }

    /// Whether the factory password has been replaced.
    pub fn password_changed(&self) -> bool {
        self.ctx.nv.get::<bool>(PASSWORD_CHANGED_KEY).ok().flatten() == Some(true)
    }

    /// Spawns a task of this boot.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let t = self.token.clone();
        self.ctx.spawn(self.tracker.track_future(async move {
            tokio::select! { _ = t.cancelled() => {} _ = fut => {} }
        }));
    }
}

/// Starts HTTPS on every interface and SSH if it is enabled (a step of
/// the node's boot).
pub async fn start(web: &Arc<Web>) -> Result<(), BootError> {
    let w = web.clone();
    let maker: tls::Maker = Box::new(move || {
        let w = w.clone();
        Box::pin(async move { tls::remake_in_pool(&w.ctx.nv, certificate_spec(&w)).await })
    });
    let stored = tls::stored_naming(&web.ctx)?;
    let (acceptor, _certs) = tls::deferred_acceptor(stored.as_ref(), maker, tls::Versions::Tls12)?;
    https::serve_every_interface(
        &web.ctx,
        HTTPS_PORT,
        &acceptor,
        &router(web.clone()),
        &web.token,
        &web.tracker,
    )
    .await?;
    ssh::apply(web).await?;
    Ok(())
}

/// What the EVCE's certificate says.
pub fn certificate_spec(web: &Web) -> tls::CertificateSpec {
    let mut names: Vec<String> = tls::addresses(&web.ctx)
        .iter()
        .map(|ip| ip.to_string())
        .collect();
    names.push(web.ctx.id.to_string());
    tls::CertificateSpec {
        common_name: format!("EV Charging Expert {}", web.ctx.id),
        organization: "Schneider Electric".into(),
        names,
        not_before: web.ctx.rtc.now(),
        validity: CERTIFICATE_VALIDITY,
    }
}

type St = State<Arc<Web>>;

fn router(web: Arc<Web>) -> Router {
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login::login_page).post(login::login_form))
        .route("/logout", post(login::logout))
        .route(
            "/password",
            get(login::password_page).post(login::password_form),
        )
        .route("/stations", get(stations::page))
        .route("/stations/enroll", post(stations::enroll_form))
        .route("/stations/remove", post(stations::remove_form))
        .route("/maintenance", get(maintenance::page))
        .route("/maintenance/ssh", post(maintenance::ssh_form))
        .route("/maintenance/support", post(maintenance::support_form))
        .route("/maintenance/reboot", post(maintenance::reboot_form))
        .route(
            "/maintenance/factory-reset",
            post(maintenance::factory_reset_form),
        )
        .route("/firmware", get(firmware::page).post(firmware::upload))
        .route("/logs", get(maintenance::logs_page))
        .route("/api/login", post(login::api_login))
        .route("/api/password", post(login::api_password))
        .route("/api/status", get(api_status))
        .route("/api/stations", get(stations::api_list))
        .route("/api/stations/enroll", post(stations::api_enroll))
        .route("/api/stations/remove", post(stations::api_remove))
        .route("/api/ssh", put(maintenance::api_ssh))
        .route("/api/support", post(maintenance::api_support))
        .route("/api/audit", get(maintenance::api_audit))
        .route("/api/reboot", post(maintenance::api_reboot))
        .route("/api/factory-reset", post(maintenance::api_factory_reset))
        .route("/api/firmware", post(firmware::api_upload))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD));
    https::finish(app, web, MAX_UPLOAD)
}

impl https::Pages for Web {
    /// DOCA0349 "Change default passwords at first step".
    const FORCES_PASSWORD_CHANGE: bool = true;

    /// Until the administrator's factory password has been replaced.
    fn must_change_password(&self) -> bool {
        !self.password_changed()
    }

    fn message_page(&self, title: &str, text: &str) -> String {
        pages::message(title, text)
    }
}

async fn home(State(web): St, headers: HeaderMap) -> Response {
    let a = page!(web, headers);
    Html(pages::home(&web, &a.csrf)).into_response()
}

async fn api_status(State(web): St, headers: HeaderMap) -> Response {
    api!(web, headers);
    Json(serde_json::json!({
        "device": &*web.ctx.id,
        "firmware": web.host.firmware(),
        "ssh": web.ssh.enabled(&web.ctx.nv),
        "enrolled": super::enrollment::list(&web.ctx.nv).len(),
    }))
    .into_response()
}

/// Audits and carries out a reboot or factory reset asked through `via`.
fn restart(web: &Web, wipe: bool, via: &str) {
    if wipe {
        web.audit(
            Kind::FactoryReset,
            format!("{via}: reset to factory settings"),
        );
        web.host
            .restart(&format!("factory reset from the {via}"), true);
    } else {
        web.audit(Kind::Reboot, format!("{via}: reboot"));
        web.host.restart(&format!("reboot from the {via}"), false);
    }
}
