//! Backup page: an encrypted configuration backup
//! ([`crate::security::backup`]) and its restore.

use super::*;

/// What a backup holds ([NF]: configuration and accounts; not the logs,
/// not the data log's rows).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct BackupContent {
    device: String,
    settings: Settings,
    accounts: Option<accounts::Accounts>,
    /// Data logging and publication configuration (absent from backups
    /// made before it was kept: the one in force then stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    datalog: Option<crate::panel_server::datalog::Setup>,
}

pub(super) async fn backup_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(pages::backup(&a.csrf, None)).into_response()
}

#[derive(Deserialize)]
pub(super) struct BackupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn backup_download(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<BackupForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    if let Err(e) = password::check(&node.config.rules.backup, &f.password) {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::backup(
                &a.csrf,
                Some(&format!("No backup made: backup password: {e}.")),
            )),
        )
            .into_response();
    }
    let content = BackupContent {
        device: node.ps.identity.commercial_reference.clone(),
        settings: node.settings(),
        accounts: node.ctx.nv.get(accounts::KEY).ok().flatten(),
        datalog: Some(node.datalog_setup()),
    };
    let plain = serde_json::to_vec(&content).unwrap_or_default();
    let (pw, it) = (f.password.clone(), node.config.iterations);
    let Some(file) = security::work::run(move || sealed::seal(&plain, &pw, it)).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    node.audit(
        Kind::BackupCreated,
        "encrypted configuration backup downloaded",
    );
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"panel-server-backup.ftbk\"",
            ),
        ],
        file,
    )
        .into_response()
}

pub(super) async fn backup_restore(State(node): St, headers: HeaderMap, m: Multipart) -> Response {
    let f = match upload(m).await {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let a = post_auth!(node, headers, &text(&f, "csrf"));
    let file = f.get("file").cloned().unwrap_or_default();
    let pw = text(&f, "password");
    let opened = security::work::run(move || sealed::open(&file, &pw)).await;
    let content = match opened {
        Some(Ok(plain)) => serde_json::from_slice::<BackupContent>(&plain)
            .map_err(|e| format!("the backup content is not valid: {e}")),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the backup could not be opened".to_string()),
    };
    let content = match content {
        Ok(c) => c,
        Err(e) => {
            node.audit(Kind::RestoreFailed, format!("restore refused: {e}"));
            return (
                StatusCode::BAD_REQUEST,
                Html(pages::backup(&a.csrf, Some(&format!("Not restored: {e}.")))),
            )
                .into_response();
        }
    };
    let mut s = content.settings;
    s.firmware = node.settings().firmware;
    let _ = node.ctx.nv.put(SETTINGS_KEY, &s);
    if let Some(acc) = content.accounts {
        let _ = node.ctx.nv.put(accounts::KEY, &acc);
    }
    if let Some(d) = content.datalog {
        use crate::panel_server::datalog::{SETUP_KEY, STOPPED_KEY};
        // A restored publication is a reconfiguration: a stop ends.
        if d.publication != node.datalog_setup().publication {
            let _ = node.ctx.nv.remove(STOPPED_KEY);
        }
        let _ = node.ctx.nv.put(SETUP_KEY, &d);
    }
    node.audit(
        Kind::Restored,
        "configuration restored from a backup file; rebooting",
    );
    node.restart("reboot after configuration restore", false);
    Html(pages::message(
        "Restored",
        "The configuration was restored. The Panel Server is rebooting.",
    ))
    .into_response()
}
