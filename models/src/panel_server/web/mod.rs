//! HTTPS webpages and device JSON API of the Panel Server (DOCA0211
//! "Supported Protocols": HTTPS TLS v1.2; "Security Functionality
//! Verification": authentication, authorization, audit, firmware update,
//! disabling services).
//!
//! Contract:
//! - HTTPS on 443 of every interface; TLS 1.2 only unless the site file sets
//!   `tls13 = true` (then 1.2 and 1.3); nothing below 1.2. The certificate is
//!   an X.509v3 self-signed one made per device (rcgen) by the first HTTPS
//!   client after the first boot — not during the boot, which only reads NV
//!   memory; that client's handshake waits for it — and kept in NV memory
//!   until a factory reset; it names every interface address, so a DHCP
//!   lease to an address it does not name makes a new one, served from the
//!   next handshake. HTTP on 80 is not served.
//! - Server-rendered HTML pages (no JavaScript needed). Any page other than
//!   the login page answers 303 -> /login without a valid session. Sessions
//!   are random 256-bit tokens in a `Secure; HttpOnly; SameSite=Strict`
//!   cookie with a 15-minute idle timeout on the virtual clock; every form
//!   carries the session's CSRF token and a POST without it gets 403.
//! - `/api/...`: the same operations as JSON, authenticated by
//!   `Authorization: Bearer <token>` from `POST /api/login`.
//! - Logins follow [`crate::security::login`] with the Panel Server's rules
//!   ([`super::policy`]); the lockout state is kept in NV memory at every
//!   change. The TLS, cookie and header plumbing is [`crate::security::https`].
//!
//! One module per page: [`login`], [`home`], [`settings`], [`wireless`],
//! [`modbus_devices`], [`users`], [`firmware`], [`logs`], [`backup`], [`maintenance`],
//! [`datalog`] (`GET /api/datalog`), [`sftp`] (`/api/sftp`), [`alarms`]
//! (`/api/alarms`, `/api/email`); each holds
//! its page's handlers and the matching `/api` handlers. The HTML is
//! [`pages`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use fieldtwin_emulator::device::BootError;
use serde::{Deserialize, Serialize};

use super::node::Node;
use super::{SETTINGS_KEY, Settings, policy};
use crate::proto::firmware as proto_firmware;
use crate::security;
use crate::security::audit::{self, Kind};
use crate::security::https::{
    CsrfForm, api, api_error, multipart_fields as fields, page, post_auth,
};
use crate::security::{accounts, backup as sealed, https, password, tls};

pub mod dpws;
mod pages;

mod alarms;
mod backup;
mod datalog;
mod firmware;
mod home;
mod login;
mod logs;
mod maintenance;
mod modbus_devices;
mod settings;
mod sftp;
mod users;
mod wireless;

pub use wireless::parse_rf_id;

use backup::{backup_download, backup_page, backup_restore};
use datalog::{api_datalog, api_put_datalog, datalog_page, save_logging, save_publication};
use firmware::{api_firmware, firmware_page, firmware_upload};
use home::{api_status, home};
use login::{api_login, login_form, login_page, logout};
use logs::{api_audit, logs_csv, logs_page};
use maintenance::{api_factory_reset, api_reboot, factory_reset, maintenance_page, reboot};
use modbus_devices::{add_modbus_device, remove_modbus_device};
use settings::{
    api_put_settings, api_settings, save_datetime, save_netcomm, save_wifi, save_wireless,
    settings_page, wireless_permanent_off,
};
use users::{change_password, users_page};
use wireless::{add_wireless, rebuild_wireless, remove_wireless};

/// HTTPS port.
pub const HTTPS_PORT: u16 = 443;

/// Largest upload (firmware image, backup).
pub const MAX_UPLOAD: usize = 64 << 20;

/// Starts HTTPS on every interface (a task of the node's boot).
pub async fn start(node: &Arc<Node>) -> Result<(), BootError> {
    let n = node.clone();
    let maker: tls::Maker = Box::new(move || {
        let n = n.clone();
        Box::pin(async move { tls::remake_in_pool(&n.ctx.nv, certificate_spec(&n)).await })
    });
    // The device certificate kept in NV memory, if it names every interface
    // address. Otherwise (the first boot, after a factory reset, a DHCP
    // lease or a new static address it does not name) a new one is made for
    // the interfaces' addresses and the device id by the first HTTPS client,
    // off the boot path, and kept until a factory reset.
    let stored = tls::stored_naming(&node.ctx)?;
    let (acceptor, certs) = tls::deferred_acceptor(stored.as_ref(), maker, node.config.tls)?;
    follow_addresses(node, certs);
    // Open connections end with the boot, not only the listener.
    https::serve_every_interface(
        &node.ctx,
        HTTPS_PORT,
        &acceptor,
        &router(node.clone()),
        &node.boot_token(),
        &node.boot_tracker(),
    )
    .await
}

/// Validity of the device certificate from its creation ([NF]: ten years,
/// like the self-signed certificates of comparable gateways).
pub const CERTIFICATE_VALIDITY: chrono::Duration = chrono::Duration::days(3652);

/// Keeps the served certificate naming every interface address: when an
/// address changes (a DHCP lease) to one the certificate does not name, a
/// new one is made ([NF], as the device makes its own self-signed one),
/// stored and served from the next handshake on.
fn follow_addresses(node: &Arc<Node>, certs: Arc<tls::Reloadable>) {
    for iface in node.ctx.interface_names() {
        let Some(stack) = node.ctx.interface(&iface) else {
            continue;
        };
        let mut address = stack.watch_ipv4();
        let (n, certs) = (node.clone(), certs.clone());
        node.spawn(async move {
            // A static address never changes: `changed` then ends the task.
            while address.changed().await.is_ok() {
                let ip = *address.borrow_and_update();
                // Before the first certificate is made there is nothing to
                // follow: it will name the addresses of its time.
                let Some(served) = certs.material() else {
                    continue;
                };
                if ip.is_unspecified() || tls::names_ip(&served.cert_der, ip) {
                    continue;
                }
                let made = tls::remake_in_pool(&n.ctx.nv, certificate_spec(&n))
                    .await
                    .and_then(|m| certs.set(m));
                match made {
                    Ok(()) => n.ctx.emit(
                        "certificate",
                        format!("new self-signed certificate for {iface} address {ip}"),
                    ),
                    Err(e) => tracing::error!("{}: certificate for {ip}: {e}", n.ctx.id),
                }
            }
        });
    }
}

/// What the Panel Server's certificate says (subject and SAN).
pub fn certificate_spec(node: &Node) -> tls::CertificateSpec {
    let mut names: Vec<String> = tls::addresses(&node.ctx)
        .iter()
        .map(|ip| ip.to_string())
        .collect();
    names.push(node.ps.id.clone());
    tls::CertificateSpec {
        common_name: format!(
            "{} {}",
            node.ps.identity.commercial_reference, node.ps.identity.serial
        ),
        organization: "Schneider Electric".into(),
        names,
        not_before: node.ctx.rtc.now(),
        validity: CERTIFICATE_VALIDITY,
    }
}

type St = State<Arc<Node>>;

/// A method a route does not have: without a session, the same answer as
/// any protected page (the login redirect, or 401 on the API); with one,
/// 405.
async fn method_not_allowed(State(node): St, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    if uri.path().starts_with("/api/") {
        if let Err(r) = https::api_auth(&*node, &headers) {
            return *r;
        }
    } else if let Err(r) = https::page_auth(&*node, &headers) {
        return *r;
    }
    StatusCode::METHOD_NOT_ALLOWED.into_response()
}

fn router(node: Arc<Node>) -> Router {
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login_form))
        .route("/logout", post(logout))
        .route("/settings", get(settings_page))
        .route("/settings/network-communication", post(save_netcomm))
        .route("/settings/wifi", post(save_wifi))
        .route("/settings/wireless", post(save_wireless))
        .route("/settings/wireless/add", post(add_wireless))
        .route("/settings/wireless/remove", post(remove_wireless))
        .route("/settings/wireless/rebuild", post(rebuild_wireless))
        .route("/settings/modbus-devices/add", post(add_modbus_device))
        .route(
            "/settings/modbus-devices/remove",
            post(remove_modbus_device),
        )
        .route("/settings/datetime", post(save_datetime))
        .route(
            "/settings/wireless-permanent-off",
            post(wireless_permanent_off),
        )
        .route("/datalog", get(datalog_page))
        .route("/datalog/logging", post(save_logging))
        .route("/datalog/publication", post(save_publication))
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
        .route("/api/datalog", get(api_datalog).put(api_put_datalog))
        .route("/api/firmware", post(api_firmware))
        .route("/api/reboot", post(api_reboot))
        .route("/api/factory-reset", post(api_factory_reset))
        .merge(sftp::routes())
        .merge(alarms::routes())
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .method_not_allowed_fallback(method_not_allowed);
    https::finish(app, node, MAX_UPLOAD)
}

impl https::Pages for Node {
    fn message_page(&self, title: &str, text: &str) -> String {
        pages::message(title, text)
    }
}

fn text(f: &HashMap<String, Vec<u8>>, k: &str) -> String {
    f.get(k)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
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
