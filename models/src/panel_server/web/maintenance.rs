//! Maintenance page and `/api/reboot`, `/api/factory-reset`.

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
    do_factory_reset(&node, "webpages");
    Html(pages::message(
        "Factory reset",
        "Configuration, accounts, logs and certificate are being erased; the Panel Server restarts with factory settings.",
    ))
    .into_response()
}

pub(super) fn do_factory_reset(node: &Arc<Node>, via: &str) {
    node.audit(
        Kind::FactoryReset,
        format!("factory reset requested ({via})"),
    );
    node.ctx
        .emit("factory_reset", format!("factory reset requested ({via})"));
    node.restart(&format!("factory reset ({via})"), true);
}

pub(super) async fn api_reboot(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    node.audit(Kind::Reboot, "reboot requested through the API");
    node.restart("reboot requested through the API", false);
    Json(serde_json::json!({ "rebooting": true })).into_response()
}

pub(super) async fn api_factory_reset(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    do_factory_reset(&node, "api");
    Json(serde_json::json!({ "factory_reset": true })).into_response()
}
