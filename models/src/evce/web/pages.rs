//! Server-rendered HTML of the EV Charging Expert's webpages (plain forms,
//! no JavaScript). Every form carries the session's CSRF token in a hidden
//! `csrf` field; every text from outside is escaped.

use super::Web;
use crate::evce::enrollment;
use crate::evce::policy::SUPPORT_USER;
use crate::security::accounts;
use crate::security::audit::Entry;
use crate::security::html;
pub use crate::security::html::esc;

/// The header of the EV Charging Expert's pages.
const CHROME: html::Chrome = html::Chrome {
    product: "EV Charging Expert",
    brand: "EcoStruxure EV Charging Expert",
    links: r#"<a href="/">Home</a><a href="/stations">Charging stations</a><a href="/firmware">Firmware update</a><a href="/logs">Audit log</a><a href="/maintenance">Maintenance</a><a href="/password">Password</a>"#,
};

fn layout(title: &str, csrf: Option<&str>, msg: Option<&str>, body: &str) -> String {
    html::layout(&CHROME, title, csrf, msg, body)
}

fn hidden(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// A message outside a session.
pub fn message(title: &str, text: &str) -> String {
    layout(
        title,
        None,
        Some(text),
        r#"<p><a href="/">Home</a> · <a href="/login">Log in</a></p>"#,
    )
}

/// A message inside a session.
pub fn message_in(csrf: &str, title: &str, text: &str) -> String {
    layout(title, Some(csrf), Some(text), "")
}

pub fn login(msg: Option<&str>) -> String {
    layout(
        "Login",
        None,
        msg,
        r#"<section><form method="post" action="/login"><label>User name <input id="username" name="username" autocomplete="username"></label><label>Password <input id="password" type="password" name="password" autocomplete="current-password"></label><button id="login" type="submit">Log in</button></form></section>"#,
    )
}

/// The password page; `forced`: the factory password is still in use.
pub fn password(csrf: &str, forced: bool, msg: Option<&str>) -> String {
    let why = if forced {
        r#"<p id="forced">The factory password is still in use: change it before anything else. The other pages stay closed until then.</p>"#
    } else {
        ""
    };
    // Before the change the navigation is hidden: only this form works.
    let nav = (!forced).then_some(csrf);
    let body = format!(
        r#"{why}<section><form method="post" action="/password">{h}<label>Current password <input type="password" name="current" autocomplete="current-password"></label><label>New password <input type="password" name="new" autocomplete="new-password"></label><label>Confirm <input type="password" name="confirm" autocomplete="new-password"></label><p>8 to 64 characters with three of: upper case, lower case, digits, symbols.</p><button type="submit">Change password</button></form></section>"#,
        h = hidden(csrf)
    );
    layout("Change password", nav, msg, &body)
}

pub fn home(web: &Web, csrf: &str) -> String {
    let enrolled = enrollment::list(&web.ctx.nv).len();
    let rows = [
        ("Device", web.ctx.id.to_string()),
        ("Firmware", web.host.firmware()),
        ("Enrolled charging stations", enrolled.to_string()),
        (
            "SSH",
            if web.ssh.enabled(&web.ctx.nv) {
                "enabled".into()
            } else {
                "disabled".into()
            },
        ),
        ("Date", web.ctx.rtc.now().to_rfc3339()),
    ];
    let mut t = String::from("<section><table>");
    for (k, v) in rows {
        t += &format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    t += "</table></section>";
    layout("Status", Some(csrf), None, &t)
}

pub fn stations(web: &Web, csrf: &str, msg: Option<&str>) -> String {
    let nv = &web.ctx.nv;
    let enrolled = enrollment::list(nv);
    let online = web.host.stations_online();
    let mut body = String::from(
        r#"<section><h2>Discovered charging stations</h2><p>Stations found on the network (SSDP). Check each one before enrolling it: only enrolled stations may connect.</p><table id="discovered"><tr><th>Box id</th><th>Address</th><th>Server</th><th></th></tr>"#,
    );
    for s in web.discovered.list(web.now()) {
        let done = enrolled
            .iter()
            .any(|e| e.box_id == s.box_id && e.ip == s.ip);
        let action = if done {
            "enrolled".to_string()
        } else {
            format!(
                r#"<form method="post" action="/stations/enroll">{}<input type="hidden" name="box_id" value="{}"><input type="hidden" name="ip" value="{}"><button type="submit">Enroll</button></form>"#,
                hidden(csrf),
                esc(&s.box_id),
                s.ip
            )
        };
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            esc(&s.box_id),
            s.ip,
            esc(s.server.as_deref().unwrap_or(""))
        );
    }
    body += r#"</table></section><section><h2>Enrolled charging stations</h2><table id="enrolled"><tr><th>Box id</th><th>Address</th><th>State</th><th></th></tr>"#;
    for e in enrolled {
        let state = online
            .iter()
            .find(|(b, _)| *b == e.box_id)
            .map_or("offline", |(_, s)| s.as_str());
        body += &format!(
            r#"<tr><td>{b}</td><td>{ip}</td><td>{st}</td><td><form method="post" action="/stations/remove">{h}<input type="hidden" name="box_id" value="{b}"><button type="submit">Remove</button></form></td></tr>"#,
            b = esc(&e.box_id),
            ip = e.ip,
            st = esc(state),
            h = hidden(csrf)
        );
    }
    body += "</table></section>";
    layout("Charging stations", Some(csrf), msg, &body)
}

pub fn maintenance(web: &Web, csrf: &str, msg: Option<&str>) -> String {
    let nv = &web.ctx.nv;
    let ssh = web.ssh.enabled(nv);
    let support = accounts::load(nv).is_some_and(|a| a.support.is_some());
    let h = hidden(csrf);
    let body = format!(
        r#"<section><h2>SSH</h2><p>SSH is for the vendor's support engineers (account <code>{SUPPORT_USER}</code>). It is <strong id="ssh-state">{state}</strong>.</p><form method="post" action="/maintenance/ssh">{h}<input type="hidden" name="ssh" value="{next}"><button id="ssh-toggle" type="submit">{label}</button></form></section><section><h2>Support account</h2><p>The <code>{SUPPORT_USER}</code> account is <strong id="support-state">{sstate}</strong>. Set its password (an empty one disables it).</p><form method="post" action="/maintenance/support">{h}<label>Your current password <input type="password" name="current"></label><label>Support password <input type="password" name="password"></label><label>Confirm <input type="password" name="confirm"></label><button type="submit">Save</button></form></section><section><h2>Reboot</h2><form method="post" action="/maintenance/reboot">{h}<button type="submit">Reboot</button></form></section><section><h2>Reset to factory settings</h2><p>Erases accounts, enrolled stations, RFID badges and the history of charge transactions.</p><form method="post" action="/maintenance/factory-reset">{h}<button type="submit">Reset to factory settings</button></form></section>"#,
        state = if ssh { "enabled" } else { "disabled" },
        next = if ssh { "off" } else { "on" },
        label = if ssh { "Disable SSH" } else { "Enable SSH" },
        sstate = if support { "enabled" } else { "disabled" },
    );
    layout("Maintenance", Some(csrf), msg, &body)
}

pub fn firmware(web: &Web, csrf: &str, msg: Option<&str>) -> String {
    let body = format!(
        r#"<section><p>Installed firmware: <strong id="firmware">{v}</strong>. Only images signed by the vendor install; the EV Charging Expert reboots after the update.</p><form method="post" action="/firmware" enctype="multipart/form-data">{h}<input type="file" name="image"><button type="submit">Update</button></form></section>"#,
        v = esc(&web.host.firmware()),
        h = hidden(csrf)
    );
    layout("Firmware update", Some(csrf), msg, &body)
}

pub fn logs(csrf: &str, log: &[Entry]) -> String {
    let mut t = String::from(
        r#"<section><table id="audit"><tr><th>Time</th><th>Event</th><th>Detail</th></tr>"#,
    );
    for e in log.iter().rev() {
        t += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.time.to_rfc3339(),
            esc(e.kind.name()),
            esc(&e.detail)
        );
    }
    t += "</table></section>";
    layout("Audit log", Some(csrf), None, &t)
}
