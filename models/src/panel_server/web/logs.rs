//! Logs page, audit-log CSV download and `GET /api/audit`.

use super::*;

pub(super) async fn logs_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    let entries = audit::read(&node.ctx.nv).unwrap_or_default();
    Html(pages::logs(&a.csrf, &entries)).into_response()
}

pub(super) async fn logs_csv(State(node): St, headers: HeaderMap) -> Response {
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

pub(super) async fn api_audit(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    Json(audit::read(&node.ctx.nv).unwrap_or_default()).into_response()
}
