//! Home page and `GET /api/status`: the device identification, firmware
//! and the RTC.

use super::*;

pub(super) async fn home(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::home(&node, &a.csrf)).into_response()
}

pub(super) async fn api_status(State(node): St, headers: HeaderMap) -> Response {
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
