//! Stations page: the charging stations SSDP discovered, which the
//! administrator enrolls one by one, and the enrolled ones, which can be
//! removed (DOCA0349 "Enrollment of EV charging stations", "Charging
//! stations management"). Only a station in the discovered list can be
//! enrolled; both acts are audited.

use std::net::Ipv4Addr;

use super::*;
use crate::evce::enrollment::{self, Station};

pub(super) async fn page(State(web): St, headers: HeaderMap) -> Response {
    let a = page!(web, headers);
    Html(pages::stations(&web, &a.csrf, None)).into_response()
}

/// Enrolls discovered station `box_id` seen at `ip`.
fn enroll(web: &Web, box_id: &str, ip: &str, via: &str) -> Result<String, String> {
    let ip: Ipv4Addr = ip
        .trim()
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let seen = web
        .discovered
        .list(web.now())
        .into_iter()
        .find(|s| s.box_id == box_id && s.ip == ip)
        .ok_or_else(|| {
            format!("no station {box_id:?} was discovered at {ip}: only discovered stations can be enrolled (see the Stations page)")
        })?;
    let changed = enrollment::enroll(
        &web.ctx.nv,
        Station {
            box_id: seen.box_id.clone(),
            ip,
            uuid: seen.uuid.clone(),
        },
    )
    .map_err(|e| e.to_string())?;
    if changed {
        web.audit(
            Kind::StationEnrolled,
            format!("{via}: station {} at {ip} enrolled", seen.box_id),
        );
        Ok(format!("Station {} at {ip} enrolled.", seen.box_id))
    } else {
        Ok(format!(
            "Station {} at {ip} was already enrolled.",
            seen.box_id
        ))
    }
}

fn remove(web: &Web, box_id: &str, via: &str) -> Result<String, String> {
    if enrollment::remove(&web.ctx.nv, box_id).map_err(|e| e.to_string())? {
        web.audit(
            Kind::StationRemoved,
            format!("{via}: station {box_id} removed"),
        );
        Ok(format!("Station {box_id} removed."))
    } else {
        Err(format!("station {box_id:?} is not enrolled"))
    }
}

#[derive(Deserialize)]
pub(super) struct StationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    box_id: String,
    #[serde(default)]
    ip: String,
}

pub(super) async fn enroll_form(
    State(web): St,
    headers: HeaderMap,
    Form(f): Form<StationForm>,
) -> Response {
    let a = post_auth!(web, headers, &f.csrf);
    match enroll(&web, &f.box_id, &f.ip, "webpages") {
        Ok(m) => Html(pages::stations(&web, &a.csrf, Some(&m))).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Html(pages::stations(
                &web,
                &a.csrf,
                Some(&format!("Not enrolled: {e}.")),
            )),
        )
            .into_response(),
    }
}

pub(super) async fn remove_form(
    State(web): St,
    headers: HeaderMap,
    Form(f): Form<StationForm>,
) -> Response {
    let a = post_auth!(web, headers, &f.csrf);
    match remove(&web, &f.box_id, "webpages") {
        Ok(m) => Html(pages::stations(&web, &a.csrf, Some(&m))).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Html(pages::stations(
                &web,
                &a.csrf,
                Some(&format!("Not removed: {e}.")),
            )),
        )
            .into_response(),
    }
}

pub(super) async fn api_list(State(web): St, headers: HeaderMap) -> Response {
    api!(web, headers);
    Json(serde_json::json!({
        "discovered": web.discovered.list(web.now()),
        "enrolled": enrollment::list(&web.ctx.nv),
        "online": web.host.stations_online(),
    }))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct ApiStation {
    #[serde(default)]
    box_id: String,
    #[serde(default)]
    ip: String,
}

fn parse(body: &[u8]) -> Result<ApiStation, Box<Response>> {
    serde_json::from_slice(body).map_err(|_| {
        Box::new(api_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"box_id\": \"...\", \"ip\": \"a.b.c.d\"}",
        ))
    })
}

pub(super) async fn api_enroll(
    State(web): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(web, headers);
    let s = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match enroll(&web, &s.box_id, &s.ip, "api") {
        Ok(m) => Json(serde_json::json!({ "done": m })).into_response(),
        Err(e) => api_error(StatusCode::BAD_REQUEST, &e),
    }
}

pub(super) async fn api_remove(
    State(web): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(web, headers);
    let s = match parse(&body) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match remove(&web, &s.box_id, "api") {
        Ok(m) => Json(serde_json::json!({ "done": m })).into_response(),
        Err(e) => api_error(StatusCode::NOT_FOUND, &e),
    }
}
