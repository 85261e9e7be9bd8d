//! Maintenance page and `/api/reboot`, `/api/factory-reset`.
//!
//! Contract (DOCA0211: erasing the device needs physical access): a factory
//! reset asked for remotely (page or API) erases nothing; it is audited and
//! the device reboots. Only the Restart button held at least 10 s (the
//! `restart_button` command) erases it.

use super::*;

pub(super) async fn maintenance_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::maintenance(&a.csrf)).into_response()
}

pub(super) async fn reboot(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let _a = post_auth!(node, headers, &f.csrf);
    node.audit(Kind::Reboot, "reboot requested on the webpages");
    node.restart("reboot requested on the webpages", false);
    Html(pages::message(
        "Rebooting",
        "The Panel Server is rebooting; log in again in a few seconds.",
    ))
    .into_response()
}

pub(super) async fn factory_reset(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let _a = post_auth!(node, headers, &f.csrf);
    remote_factory_reset(&node, "webpages");
    Html(pages::message(
        "Factory reset needs physical access",
        REMOTE_RESET_ANSWER,
    ))
    .into_response()
}

/// What a remote factory-reset request answers.
pub(super) const REMOTE_RESET_ANSWER: &str = "Nothing was erased: a factory reset needs physical access (hold the Restart button of the Panel Server for at least 10 seconds). The Panel Server is rebooting; log in again in a few seconds.";

/// A factory reset asked for remotely: audited, nothing erased, reboot.
pub(super) fn remote_factory_reset(node: &Arc<Node>, via: &str) {
    node.audit(
        Kind::Reboot,
        format!(
            "factory reset requested remotely ({via}): refused, it needs the Restart button; rebooting without erasing"
        ),
    );
    node.restart(
        &format!("reboot after a remote factory-reset request ({via})"),
        false,
    );
}

pub(super) async fn api_reboot(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    node.audit(Kind::Reboot, "reboot requested through the API");
    node.restart("reboot requested through the API", false);
    Json(serde_json::json!({ "rebooting": true })).into_response()
}

pub(super) async fn api_factory_reset(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    remote_factory_reset(&node, "api");
    Json(serde_json::json!({
        "factory_reset": false,
        "rebooting": true,
        "message": REMOTE_RESET_ANSWER,
    }))
    .into_response()
}
