//! Firmware update page and `POST /api/firmware`: only images signed by the
//! vendor key install ([`crate::security::firmware`]); the device reboots
//! after installing.

use super::*;

pub(super) async fn firmware_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::firmware(&node, &a.csrf, None)).into_response()
}

/// Verifies and installs an image; `Ok(version)` then the device reboots.
pub(super) fn install(node: &Arc<Node>, bytes: &[u8]) -> Result<String, String> {
    let img =
        security::firmware::verify(bytes, proto_firmware::PANEL_SERVER_FAMILY).map_err(|e| {
            node.audit(Kind::FirmwareUpdateFailed, format!("image rejected: {e}"));
            e.to_string()
        })?;
    let old = node.settings().firmware;
    let store = node
        .ctx
        .nv
        .put_raw(security::firmware::IMAGE_KEY, bytes)
        .and_then(|_| {
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

pub(super) async fn firmware_upload(State(node): St, headers: HeaderMap, m: Multipart) -> Response {
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

pub(super) async fn api_firmware(
    State(node): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(node, headers);
    match install(&node, &body) {
        Ok(v) => Json(serde_json::json!({ "installed": v, "rebooting": true })).into_response(),
        Err(e) => api_error(StatusCode::BAD_REQUEST, &e),
    }
}
