//! Data logging page (`/datalog`) and `GET/PUT /api/datalog`: what is
//! logged (devices, measurements, period) and how it is published (method,
//! period, HTTPS target and its verification, file format), with the state
//! of the data log (docs/panel-server.md "Data logging and publication").
//!
//! Contract:
//! - Every change goes through [`change`]: validated as the site file's
//!   tables are ([`DatalogConfig::validate`], [`PublicationConfig::validate`])
//!   plus what only the device can check (the CA certificate parses; a
//!   `ca_file` path is refused: the device cannot read the host's files),
//!   saved in NV memory by [`Node::set_datalog`], which restarts logging,
//!   and written to the audit log as "configuration changed" naming what
//!   changed ([`describe`]). No change: nothing saved, nothing audited.
//! - The audit detail names the changed fields and the old and new values
//!   of periods, method, format, devices and measurements; the URL, CA and
//!   pin are named, not copied (they are no secret, but the audit log is
//!   kept short and free of endpoint details).
//! - A bad value answers 400 with what was wrong and what is allowed, and
//!   changes nothing.
//! - One publication method at a time: the configuration holds one
//!   publication (or none).

use fieldtwin_emulator::site::{
    DatalogConfig, LOGGING_PERIODS_MIN, MEASUREMENT_CODES, PublicationConfig, PublicationFormat,
    PublicationMethod,
};

use super::*;
use crate::panel_server::datalog::{self as dl, Setup};

/// The ids of the Panel Server's serial and wireless devices.
fn field_ids(node: &Node) -> Vec<String> {
    let ps = &node.ps;
    ps.serial_specs
        .iter()
        .chain(&ps.wireless_specs)
        .map(|s| s.id.clone())
        .collect()
}

/// Refuses what the device cannot take; `None` if `new` is acceptable.
fn check(node: &Node, new: &Setup) -> Result<(), String> {
    let ids = field_ids(node);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    if let Some(l) = &new.logging {
        l.validate("logging", &refs).map_err(|e| e.to_string())?;
    }
    if let Some(p) = &new.publication {
        if p.ca_file.is_some() {
            return Err("publication.ca_file: the device cannot read files of the host; give the CA certificate itself as ca_pem (PEM text) or the server certificate's SHA-256 as pin_sha256".into());
        }
        p.validate("publication").map_err(|e| e.to_string())?;
        dl::target(p).map_err(|e| format!("publication: {e}"))?;
    }
    Ok(())
}

fn list(v: &Option<Vec<String>>) -> String {
    match v {
        None => "all".into(),
        Some(v) if v.is_empty() => "none".into(),
        Some(v) => v.join(", "),
    }
}

fn method(p: &Option<PublicationConfig>) -> String {
    match p {
        None => "none".into(),
        Some(p) => format!("{:?}", p.method).to_lowercase(),
    }
}

fn verification(p: &PublicationConfig) -> &'static str {
    if p.pin_sha256.is_some() {
        "pinned certificate"
    } else {
        "CA certificate"
    }
}

/// What changed from `old` to `new`, for the audit log ("" if nothing).
pub fn describe(old: &Setup, new: &Setup) -> String {
    let mut out = Vec::new();
    match (&old.logging, &new.logging) {
        (None, None) => {}
        (Some(_), None) => out.push("logging off".to_string()),
        (o, Some(n)) => {
            let d = DatalogConfig::default();
            let o = o.as_ref();
            let was = |f: &dyn Fn(&DatalogConfig) -> String| o.map(f);
            let mut parts = Vec::new();
            if o.is_none() {
                parts.push("logging on".to_string());
            }
            for (name, f) in [
                (
                    "period",
                    &(|c: &DatalogConfig| format!("{} min", c.period_min))
                        as &dyn Fn(&DatalogConfig) -> String,
                ),
                ("devices", &|c: &DatalogConfig| list(&c.devices)),
                ("measurements", &|c: &DatalogConfig| list(&c.measurements)),
            ] {
                let now = f(n);
                match was(f) {
                    Some(w) if w != now => parts.push(format!("{name} {w} -> {now}")),
                    None if now != f(&d) || name == "period" => parts.push(format!("{name} {now}")),
                    _ => {}
                }
            }
            if !parts.is_empty() {
                out.push(format!("logging: {}", parts.join(", ")));
            }
        }
    }
    let (om, nm) = (method(&old.publication), method(&new.publication));
    let mut parts = Vec::new();
    if om != nm {
        parts.push(format!("method {om} -> {nm}"));
    }
    if let Some(n) = &new.publication {
        match &old.publication {
            Some(o) => {
                if o.period_min != n.period_min {
                    parts.push(format!("period {} -> {} min", o.period_min, n.period_min));
                }
                if o.format != n.format {
                    parts.push(format!(
                        "format {} -> {}",
                        o.format.extension(),
                        n.format.extension()
                    ));
                }
                if o.url != n.url {
                    parts.push("URL changed".into());
                }
                if o.field != n.field {
                    parts.push(format!("form field {} -> {}", o.field, n.field));
                }
                if verification(o) != verification(n) {
                    parts.push(format!(
                        "server verified by {} -> {}",
                        verification(o),
                        verification(n)
                    ));
                } else if (&o.ca_pem, &o.ca_file, &o.pin_sha256)
                    != (&n.ca_pem, &n.ca_file, &n.pin_sha256)
                {
                    parts.push(format!("{} changed", verification(n)));
                }
            }
            None => parts.push(format!(
                "period {} min, format {}, server verified by {}",
                n.period_min,
                n.format.extension(),
                verification(n)
            )),
        }
    }
    if !parts.is_empty() {
        out.push(format!("publication: {}", parts.join(", ")));
    }
    if out.is_empty() {
        String::new()
    } else {
        format!("data logging changed: {}", out.join("; "))
    }
}

/// Checks, saves and audits `new` (serialised with the other setting
/// changes); `Ok(false)` when nothing changed.
pub(super) async fn change(node: &Arc<Node>, new: Setup, via: &str) -> Result<bool, String> {
    let _guard = node.auth.lock().await;
    check(node, &new)?;
    let old = node.datalog_setup();
    if old == new {
        return Ok(false);
    }
    let what = format!("{} ({via})", describe(&old, &new));
    node.set_datalog(new, what)
        .await
        .map_err(|e| format!("not saved: {e}"))?;
    Ok(true)
}

// ---- JSON API ----

pub(super) async fn api_datalog(State(node): St, headers: HeaderMap) -> Response {
    api!(node, headers);
    Json(state(&node)).into_response()
}

/// The configuration in force and the state of the log.
fn state(node: &Node) -> serde_json::Value {
    let setup = node.datalog_setup();
    let mut v = dl::details(&node.ctx.nv, &field_ids(node));
    v["logging"] = serde_json::to_value(&setup.logging).unwrap_or_default();
    v["publication"] = serde_json::to_value(&setup.publication).unwrap_or_default();
    v["retention_days"] = dl::retention_days(node.ps.model).into();
    v["offered"] = serde_json::json!({
        "logging_periods_min": LOGGING_PERIODS_MIN,
        "measurements": MEASUREMENT_CODES,
        "devices": field_ids(node),
        "methods": ["none", "https"],
        "formats": ["csv", "json"],
    });
    v
}

/// `PUT /api/datalog` `{"logging": {...} | null, "publication": {...} |
/// null}`: a key left out keeps its value, `null` turns it off.
pub(super) async fn api_put_datalog(
    State(node): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    api!(node, headers);
    let bad = |m: String| api_error(StatusCode::BAD_REQUEST, &m);
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            return bad(
                "the body must be a JSON object with \"logging\" and/or \"publication\"".into(),
            );
        }
        Err(e) => return bad(format!("invalid JSON: {e}")),
    };
    if let Some(k) = v
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "logging" && *k != "publication"))
    {
        return bad(format!(
            "unknown key {k:?}; allowed: \"logging\", \"publication\""
        ));
    }
    let mut new = node.datalog_setup();
    if let Some(l) = v.get("logging") {
        new.logging = match serde_json::from_value(l.clone()) {
            Ok(l) => l,
            Err(e) => return bad(format!("logging: {e}")),
        };
    }
    if let Some(p) = v.get("publication") {
        new.publication = match serde_json::from_value(p.clone()) {
            Ok(p) => p,
            Err(e) => return bad(format!("publication: {e}")),
        };
    }
    match change(&node, new, "JSON API").await {
        Ok(_) => Json(state(&node)).into_response(),
        Err(e) => bad(e),
    }
}

// ---- page ----

pub(super) async fn datalog_page(State(node): St, headers: HeaderMap) -> Response {
    let a = page!(node, headers);
    Html(page(&node, &a.csrf, None)).into_response()
}

/// Answers a form: the page with the outcome.
async fn answer(node: &Arc<Node>, csrf: &str, new: Result<Setup, String>) -> Response {
    let r = match new {
        Ok(new) => change(node, new, "web page").await,
        Err(e) => Err(e),
    };
    match r {
        Ok(true) => Html(page(node, csrf, Some("Saved."))).into_response(),
        Ok(false) => Html(page(node, csrf, Some("No change."))).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Html(page(node, csrf, Some(&format!("Not saved: {e}")))),
        )
            .into_response(),
    }
}

/// A form's fields (a name may repeat: check boxes).
type Fields = Vec<(String, String)>;

fn one<'a>(f: &'a Fields, k: &str) -> Option<&'a str> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim())
}

fn all(f: &Fields, k: &str) -> Vec<String> {
    f.iter()
        .filter(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The items ticked under `k`, `None` when the `all` box is ticked (all,
/// including those added later); nothing ticked is refused.
fn chosen(f: &Fields, k: &str, all_box: &str, what: &str) -> Result<Option<Vec<String>>, String> {
    if one(f, all_box).is_some() {
        return Ok(None);
    }
    let v = all(f, k);
    if v.is_empty() {
        return Err(format!(
            "tick at least one {what} or \"All {what}s\" (to log nothing, untick \"Log data\")"
        ));
    }
    Ok(Some(v))
}

fn minutes(f: &Fields, k: &str, what: &str) -> Result<u32, String> {
    let v = one(f, k).unwrap_or("");
    v.parse()
        .map_err(|_| format!("{what} {v:?} is not a number of minutes"))
}

pub(super) async fn save_logging(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    let a = post_auth!(node, headers, one(&f, "csrf").unwrap_or(""));
    let mut new = node.datalog_setup();
    let r = (|| {
        new.logging = if one(&f, "enabled").is_some() {
            Some(DatalogConfig {
                period_min: minutes(&f, "period_min", "logging period")?,
                devices: chosen(&f, "device", "all_devices", "device")?,
                measurements: chosen(&f, "measurement", "all_measurements", "measurement")?,
            })
        } else {
            None
        };
        Ok(new)
    })();
    answer(&node, &a.csrf, r).await
}

pub(super) async fn save_publication(
    State(node): St,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    let a = post_auth!(node, headers, one(&f, "csrf").unwrap_or(""));
    let mut new = node.datalog_setup();
    let old = new.publication.clone();
    let r = (|| {
        new.publication = match one(&f, "method").unwrap_or("none") {
            "none" => None,
            "https" => {
                let format = match one(&f, "format").unwrap_or("csv") {
                    "csv" => PublicationFormat::Csv,
                    "json" => PublicationFormat::Json,
                    other => return Err(format!("format {other:?}: use csv or json")),
                };
                let (mut ca_pem, mut pin) = (None, None);
                match one(&f, "verify").unwrap_or("ca") {
                    "ca" => {
                        // An empty box keeps the CA in force.
                        ca_pem = match one(&f, "ca_pem") {
                            Some(p) if !p.is_empty() => Some(p.replace("\r\n", "\n")),
                            _ => old.as_ref().and_then(|o| o.ca_pem.clone()),
                        };
                        if ca_pem.is_none() {
                            return Err("paste the PEM of the CA that signed the server's certificate, or choose a pinned certificate".into());
                        }
                    }
                    "pin" => pin = one(&f, "pin_sha256").map(str::to_string),
                    other => return Err(format!("server verification {other:?}: use ca or pin")),
                }
                Some(PublicationConfig {
                    method: PublicationMethod::Https,
                    url: one(&f, "url").unwrap_or("").to_string(),
                    ca_file: None,
                    ca_pem,
                    pin_sha256: pin,
                    format,
                    period_min: minutes(&f, "period_min", "publication period")?,
                    field: one(&f, "field")
                        .filter(|s| !s.is_empty())
                        .unwrap_or("datafile1")
                        .to_string(),
                })
            }
            other => return Err(format!("method {other:?}: use none or https")),
        };
        Ok(new)
    })();
    answer(&node, &a.csrf, r).await
}

fn selected(b: bool) -> &'static str {
    if b { " selected" } else { "" }
}

/// The page.
pub fn page(node: &Node, csrf: &str, msg: Option<&str>) -> String {
    use pages::{checked, esc, hidden};
    let setup = node.datalog_setup();
    let h = hidden(csrf);
    let l = setup.logging.clone();
    let lc = l.clone().unwrap_or_default();
    let periods: String = LOGGING_PERIODS_MIN
        .iter()
        .map(|p| {
            format!(
                "<option value=\"{p}\"{}>{p} min</option>",
                selected(*p == lc.period_min)
            )
        })
        .collect();
    let devices: String = field_ids(node)
        .iter()
        .map(|d| {
            let on = lc.devices.as_ref().is_some_and(|v| v.contains(d));
            format!(
                "<label><input type=\"checkbox\" name=\"device\" value=\"{d}\"{}> {d}</label>",
                checked(on),
                d = esc(d)
            )
        })
        .collect();
    let measures: String = MEASUREMENT_CODES
        .iter()
        .map(|m| {
            let on = lc
                .measurements
                .as_ref()
                .is_some_and(|v| v.iter().any(|x| x.eq_ignore_ascii_case(m)));
            format!(
                "<label><input type=\"checkbox\" name=\"measurement\" value=\"{m}\"{}> {m}</label>",
                checked(on)
            )
        })
        .collect();
    let p = setup.publication.clone();
    let pc = p.clone();
    let (url, field, period, format, pin, pinned) = match &pc {
        Some(p) => (
            p.url.clone(),
            p.field.clone(),
            p.period_min,
            p.format,
            p.pin_sha256.clone().unwrap_or_default(),
            p.pin_sha256.is_some(),
        ),
        None => (
            String::new(),
            "datafile1".into(),
            60,
            PublicationFormat::Csv,
            String::new(),
            false,
        ),
    };
    let ca_state = match pc.as_ref().and_then(|p| p.ca_pem.as_ref()) {
        Some(_) => "A CA certificate is in force (leave the box empty to keep it).",
        None => "No CA certificate.",
    };
    let st = state(node);
    let counters: String = st["devices"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(d, c)| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(d),
                        c["head"],
                        c["head"].as_u64().unwrap_or(0) - c["published"].as_u64().unwrap_or(0),
                        c["dropped"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let stats = &st["stats"];
    let stopped = st["stopped"]
        .as_str()
        .map(|s| {
            format!(
                "<p id=\"publication-stopped\"><strong>Publication stopped:</strong> {}</p>",
                esc(s)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<section id="logging"><h2>Logging</h2><form method="post" action="/datalog/logging">{h}
<label><input type="checkbox" name="enabled"{le}> Log data</label>
<label>Logging period <select name="period_min">{periods}</select></label>
<fieldset><legend>Devices</legend><label><input type="checkbox" name="all_devices"{ad}> All devices (also those added later)</label> or only: {devices}</fieldset>
<fieldset><legend>Measurements</legend><label><input type="checkbox" name="all_measurements"{am}> All measurements each device offers</label> or only: {measures}</fieldset>
<button id="save-logging" type="submit">Save</button></form>
<p>Kept for {days} days, oldest dropped first.</p></section>
<section id="publication"><h2>Publication</h2><form method="post" action="/datalog/publication">{h}
<label>Method <select name="method"><option value="none"{mn}>None</option><option value="https"{mh}>HTTPS</option></select></label>
<label>Publication period (minutes, 1-1440) <input name="period_min" value="{period}" size="5"></label>
<label>Format <select name="format"><option value="csv"{fc}>CSV</option><option value="json"{fj}>JSON</option></select></label>
<label>URL (https://IPv4[:port]/path) <input name="url" value="{url}" size="50"></label>
<label>Form field <input name="field" value="{field}"></label>
<fieldset><legend>Server certificate</legend>
<label><input type="radio" name="verify" value="ca"{vc}> Signed by this CA (PEM) <textarea name="ca_pem" rows="4" cols="64"></textarea></label><p>{ca_state}</p>
<label><input type="radio" name="verify" value="pin"{vp}> Pinned: SHA-256 of the server certificate <input name="pin_sha256" value="{pin}" size="100"></label></fieldset>
<button id="save-publication" type="submit">Save</button></form>{stopped}
<p id="publication-stats">Publications: {np}, failed: {nf}, files: {files}, rows: {rows}. Last error: {last}</p></section>
<section id="log-state"><h2>Data log</h2><table><tr><th>Device</th><th>Rows logged</th><th>Waiting</th><th>Dropped unpublished</th></tr>{counters}</table></section>"#,
        le = checked(l.is_some()),
        ad = checked(lc.devices.is_none()),
        am = checked(lc.measurements.is_none()),
        days = dl::retention_days(node.ps.model),
        mn = selected(p.is_none()),
        mh = selected(p.is_some()),
        fc = selected(format == PublicationFormat::Csv),
        fj = selected(format == PublicationFormat::Json),
        url = esc(&url),
        field = esc(&field),
        vc = checked(!pinned),
        vp = checked(pinned),
        pin = esc(&pin),
        np = stats["publications"],
        nf = stats["failures"],
        files = stats["files"],
        rows = stats["rows_published"],
        last = esc(stats["last_error"].as_str().unwrap_or("none")),
    );
    pages::layout("Data logging", Some(csrf), msg, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication() -> PublicationConfig {
        PublicationConfig {
            method: PublicationMethod::Https,
            url: "https://10.0.0.2/up".into(),
            ca_file: None,
            ca_pem: Some("PEM".into()),
            pin_sha256: None,
            format: PublicationFormat::Csv,
            period_min: 60,
            field: "datafile1".into(),
        }
    }

    #[test]
    fn the_audit_detail_names_what_changed_without_the_url() {
        let old = Setup::default();
        let mut new = Setup {
            logging: Some(DatalogConfig::default()),
            publication: None,
        };
        assert_eq!(
            describe(&old, &new),
            "data logging changed: logging: logging on, period 10 min"
        );
        assert_eq!(describe(&new, &new), "");
        let before = new.clone();
        new.logging.as_mut().unwrap().period_min = 5;
        new.logging.as_mut().unwrap().devices = Some(vec!["m1".into()]);
        new.publication = Some(publication());
        let d = describe(&before, &new);
        assert_eq!(
            d,
            "data logging changed: logging: period 10 min -> 5 min, devices all -> m1; publication: method none -> https, period 60 min, format csv, server verified by CA certificate"
        );
        let before = new.clone();
        let p = new.publication.as_mut().unwrap();
        p.format = PublicationFormat::Json;
        p.url = "https://10.0.0.3/up".into();
        p.ca_pem = None;
        p.pin_sha256 = Some("ab".repeat(32));
        let d = describe(&before, &new);
        assert_eq!(
            d,
            "data logging changed: publication: format csv -> json, URL changed, server verified by CA certificate -> pinned certificate"
        );
        assert!(!d.contains("10.0.0"), "{d}");
        let before = new.clone();
        new.publication = None;
        new.logging = None;
        assert_eq!(
            describe(&before, &new),
            "data logging changed: logging off; publication: method https -> none"
        );
    }
}
