//! `GET /api/datalog`: the data log's configuration and state (read-only;
//! configuration is in the site file, docs/panel-server.md "Data logging and
//! publication").

use super::*;

pub(super) async fn api_datalog(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    let ps = &node.ps;
    let ids: Vec<String> = ps
        .serial_specs
        .iter()
        .chain(&ps.wireless_specs)
        .map(|s| s.id.clone())
        .collect();
    let mut v = crate::panel_server::datalog::details(&node.ctx.nv, &ids);
    v["logging"] = serde_json::to_value(&ps.datalog).unwrap_or_default();
    v["publication"] = serde_json::to_value(&ps.publication).unwrap_or_default();
    super::sftp::redact(&mut v["publication"]);
    v["retention_days"] = crate::panel_server::datalog::retention_days(ps.model).into();
    Json(v).into_response()
}
