//! Firmware update page and `POST /api/firmware`: only images of the EV
//! Charging Expert family signed by the vendor key install
//! ([`crate::security::firmware`]); the image is kept in NV memory (its
//! signature is checked again at every boot by the node) and the device
//! reboots. A refused image is audited and changes nothing.

use super::*;
use crate::evce::policy::FIRMWARE_FAMILY;
use crate::security::firmware as sfw;

pub(super) async fn page(State(web): St, headers: HeaderMap) -> Response {
    let a = page!(web, headers);
    Html(pages::firmware(&web, &a.csrf, None)).into_response()
}

/// Verifies and installs an image through `via`; `Ok(version)`, then the
/// device reboots.
pub fn install(web: &Web, bytes: &[u8], via: &str) -> Result<String, String> {
    let img = sfw::verify(bytes, FIRMWARE_FAMILY).map_err(|e| {
        web.audit(
            Kind::FirmwareUpdateFailed,
            format!("{via}: image rejected: {e}"),
        );
        e.to_string()
    })?;
    if let Err(e) = web.ctx.nv.put_raw(sfw::IMAGE_KEY, bytes) {
        web.audit(
            Kind::FirmwareUpdateFailed,
            format!("{via}: image could not be stored: {e}"),
        );
        return Err(format!("the image could not be stored: {e}"));
    }
    web.audit(
        Kind::FirmwareUpdated,
        format!("{via}: firmware {} -> {}", web.host.firmware(), img.version),
    );
    web.host.restart(
        &format!("reboot after firmware update to {}", img.version),
        false,
    );
    Ok(img.version)
}

pub(super) async fn upload(State(web): St, headers: HeaderMap, m: Multipart) -> Response {
    let f = match fields(m).await {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::message(
                    "Firmware update failed",
                    &format!("The upload could not be read ({e}); send a multipart form with fields csrf and image."),
                )),
            )
                .into_response();
        }
    };
    let csrf = String::from_utf8_lossy(f.get("csrf").map_or(&[][..], |v| v)).to_string();
    let a = post_auth!(web, headers, &csrf);
    let bytes = f.get("image").cloned().unwrap_or_default();
    match install(&web, &bytes, "webpages") {
        Ok(v) => Html(pages::message(
            "Firmware installed",
            &format!("Firmware {v} verified and installed. The EV Charging Expert is rebooting; log in again in a few seconds."),
        ))
        .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Html(pages::firmware(
                &web,
                &a.csrf,
                Some(&format!("Firmware update failed: {e}")),
            )),
        )
            .into_response(),
    }
}

pub(super) async fn api_upload(
    State(web): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(web, headers);
    match install(&web, &body, "api") {
        Ok(v) => Json(serde_json::json!({ "installed": v, "rebooting": true })).into_response(),
        Err(e) => api_error(StatusCode::BAD_REQUEST, &e),
    }
}
