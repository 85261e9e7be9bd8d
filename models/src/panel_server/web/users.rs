//! Users page: the administrator's password and the SupportUser account,
//! both authorised by the administrator's current password.

use super::*;
use crate::security::password::Hashed;

/// The Users page with the SupportUser's state read from NV memory.
pub(super) fn users_html(node: &Node, csrf: &str, msg: Option<&str>) -> String {
    let support = node
        .ctx
        .nv
        .get::<accounts::Accounts>(accounts::KEY)
        .ok()
        .flatten()
        .is_some_and(|a| a.support.is_some());
    pages::users(csrf, msg, support)
}

pub(super) async fn users_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(users_html(&node, &a.csrf, None)).into_response()
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    #[serde(default)]
    csrf: String,
    /// `SecurityAdmin` (default) or `SupportUser`.
    #[serde(default)]
    account: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

pub(super) async fn change_password(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    let a = post_auth!(node, headers, &f.csrf);
    let bad = |m: String| {
        (
            StatusCode::BAD_REQUEST,
            Html(users_html(&node, &a.csrf, Some(&m))),
        )
            .into_response()
    };
    if f.new != f.confirm {
        return bad("Not changed: the new password and its confirmation differ.".into());
    }
    let _guard = node.auth.lock().await;
    let Some(acc) = node
        .ctx
        .nv
        .get::<accounts::Accounts>(accounts::KEY)
        .ok()
        .flatten()
    else {
        return bad("Not changed: no account in memory.".into());
    };
    // The administrator's current password authorises both accounts.
    let support = f.account == policy::SUPPORT_USER;
    let disable = support && f.new.is_empty() && f.confirm.is_empty();
    if !disable && let Err(e) = password::check(&node.config.rules.user, &f.new) {
        return bad(format!("Not changed: {e}."));
    }
    if let Err(refused) =
        crate::security::login::reauthenticate(&node, &f.current, "users page").await
    {
        let (code, m) = https::refusal(refused);
        return (
            code,
            Html(users_html(
                &node,
                &a.csrf,
                Some(&format!("Not changed: {m}")),
            )),
        )
            .into_response();
    }
    let (new, it) = (f.new.clone(), node.config.iterations);
    let Some(hash) = security::work::run(move || (!disable).then(|| Hashed::new(&new, it))).await
    else {
        return bad("Not changed: the new password could not be stored.".into());
    };
    let (accounts, what) = match (support, hash) {
        (false, Some(h)) => (
            accounts::Accounts { admin: h, ..acc },
            "administrator password changed",
        ),
        (true, Some(h)) => (
            accounts::Accounts {
                support: Some(h),
                ..acc
            },
            "SupportUser password set (account enabled)",
        ),
        (_, None) => (
            accounts::Accounts {
                support: None,
                ..acc
            },
            "SupportUser account disabled",
        ),
    };
    let _ = node.ctx.nv.put(accounts::KEY, &accounts);
    node.audit(Kind::PasswordChanged, what);
    Html(users_html(&node, &a.csrf, Some(&format!("Done: {what}.")))).into_response()
}
