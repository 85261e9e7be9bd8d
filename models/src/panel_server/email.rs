//! Alarms of the Panel Server and their notification by email (SMTP with
//! STARTTLS), on the models whose matrix has "Notification of alarms by
//! email" (PAS800*).
//!
//! Contract (docs/panel-server.md "Alarms and email notification"):
//! - The alarms are a field device not connected, a threshold on a logged
//!   measurement ([`Rule`], checked on the newest row each time rows are
//!   logged, [`check_row`]) and the SFTP server's host key change
//!   ([`super::datalog`]). [`raise`] records them in the alarm list
//!   ([`super::alarms`], one active alarm per code) and emits an `alarm`
//!   event; [`clear`] ends them when the cause went away.
//! - A new alarm on a model with the feature and an email configuration
//!   ([`Stored`], in NV memory: the site file's `[device.panel_server.email]`
//!   at first boot, then `PUT /api/email`) becomes a mail in the NV outbox
//!   ([`OUTBOX_KEY`]) before anything is sent: a power cut or an SMTP
//!   server away does not lose it. [`flush`] sends the outbox oldest first
//!   and removes each mail once the server accepted it (`250` after the
//!   data); a failure keeps it for the retry a minute (virtual time) later.
//!   At most [`MAX_OUTBOX`] mails wait; beyond, the oldest is dropped and
//!   counted.
//! - SMTP ([`send`]): TCP on the device's own transport
//!   ([`Stack::connect_tcp`], so TAP mode works), `EHLO`, `STARTTLS`
//!   (required: a server that does not offer it gets no mail), TLS 1.2+
//!   verified against the configured CA and the server's IP address, `EHLO`
//!   again, `AUTH PLAIN` only inside TLS when a user is configured, one
//!   `RCPT TO` per recipient, the data dot-stuffed. Every step has a
//!   wall-time limit ([`SMTP_TIMEOUT`]).
//! - Models without the feature record alarms the same way but never
//!   mail; their `PUT /api/email` is refused.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fieldtwin_emulator::net::Stack;
use fieldtwin_emulator::site::{AlarmRule, EmailConfig};
use fieldtwin_emulator::storage::Nv;
use rustls::pki_types::{IpAddr, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::alarms;
use super::datalog::store::Row;
use super::node::Node;
use crate::field::Measure;

/// NV key of the email settings.
pub const CONFIG_KEY: &str = "email/config";
/// NV key of the mails not sent yet.
pub const OUTBOX_KEY: &str = "email/outbox";
/// NV key of the threshold rules.
pub const RULES_KEY: &str = "alarms/rules";
/// NV key set once the site file's settings were copied (a later removal
/// through the API is not undone by the next boot).
pub const COMMISSIONED_KEY: &str = "email/commissioned";
/// Most mails waiting in the outbox.
pub const MAX_OUTBOX: usize = 100;
/// Wall-time limit of each SMTP step.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Virtual time between two attempts at a waiting mail.
pub const RETRY: Duration = Duration::from_secs(60);

/// A threshold alarm rule (as in the site file).
pub type Rule = AlarmRule;

/// Email settings in NV memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub server: Ipv4Addr,
    pub port: u16,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The CA certificate(s) the SMTP server's certificate must chain to.
    pub ca_pem: String,
}

impl Stored {
    /// From the site file (reads the CA file).
    pub fn from_site(c: &EmailConfig) -> Result<Self, String> {
        let ca_pem = std::fs::read_to_string(&c.ca_file)
            .map_err(|e| format!("cannot read the CA file {}: {e}", c.ca_file.display()))?;
        Ok(Self {
            server: c.server,
            port: c.port,
            from: c.from.clone(),
            to: c.to.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
            ca_pem,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        (self.server, self.port).into()
    }

    /// What the page and the API show (no password).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "server": self.server.to_string(),
            "port": self.port,
            "from": self.from,
            "to": self.to,
            "user": self.user,
            "password_set": self.password.is_some(),
            "ca_set": !self.ca_pem.trim().is_empty(),
        })
    }

    /// The TLS client that checks the server against the CA.
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector, String> {
        crate::security::tls::client_connector(
            self.ca_pem.as_bytes(),
            "the CA certificate",
            "no CA certificate to verify the SMTP server with",
        )
    }
}

/// One mail waiting to be sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    pub id: u64,
    pub subject: String,
    pub body: String,
    /// RTC time of the alarm (the `Date` header).
    pub date: DateTime<Utc>,
    #[serde(default)]
    pub tries: u32,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The outbox in NV memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub next_id: u64,
    pub mails: Vec<Mail>,
    /// Mails the server accepted.
    pub sent: u64,
    /// Mails dropped because the outbox was full.
    pub dropped: u64,
    pub last_error: Option<String>,
}

static OUTBOX_LOCK: Mutex<()> = Mutex::new(());

fn outbox(nv: &Nv) -> Outbox {
    nv.get(OUTBOX_KEY).ok().flatten().unwrap_or_default()
}

/// Whether this model can notify alarms by email.
pub fn offered(node: &Node) -> bool {
    node.ps.model.capabilities().is_some_and(|c| c.email)
}

/// The email settings in force, if any.
pub fn settings(nv: &Nv) -> Option<Stored> {
    nv.get(CONFIG_KEY).ok().flatten()
}

/// The threshold rules in force.
pub fn rules(nv: &Nv) -> Vec<Rule> {
    nv.get(RULES_KEY).ok().flatten().unwrap_or_default()
}

/// The state shown by the device details and `GET /api/email`.
pub fn details(nv: &Nv) -> serde_json::Value {
    let o = outbox(nv);
    serde_json::json!({
        "settings": settings(nv).map(|s| s.view()),
        "waiting": o.mails.len(),
        "sent": o.sent,
        "dropped": o.dropped,
        "last_error": o.last_error,
    })
}

/// Boot: the site file's settings at the first boot (none at the first
/// boot after a factory reset, `after_reset`), then the retry loop.
pub fn start(node: &Arc<Node>, after_reset: bool) {
    let nv = &node.ctx.nv;
    if after_reset {
        let _ = nv.put(COMMISSIONED_KEY, &true);
    }
    if nv.get::<bool>(COMMISSIONED_KEY).ok().flatten().is_none() {
        let ps = &node.ps;
        let mut ok = true;
        if let Some(c) = ps.email.as_ref().filter(|_| offered(node)) {
            match Stored::from_site(c) {
                Ok(s) => ok &= nv.put(CONFIG_KEY, &s).is_ok(),
                Err(e) => node
                    .ctx
                    .emit("email", format!("email settings not used: {e}")),
            }
        }
        if !ps.alarm_rules.is_empty() {
            ok &= nv.put(RULES_KEY, &ps.alarm_rules).is_ok();
        }
        if ok {
            let _ = nv.put(COMMISSIONED_KEY, &true);
        }
    }
    if !offered(node) {
        return;
    }
    let n = node.clone();
    node.spawn(async move {
        let clock = n.ctx.clock.clone();
        loop {
            if !outbox(&n.ctx.nv).mails.is_empty() {
                flush(&n).await;
            }
            clock.sleep_until(clock.now() + RETRY).await;
        }
    });
}

/// Raises alarm `code` (see the module contract); a new one is mailed.
pub fn raise(node: &Arc<Node>, code: &str, kind: &str, source: &str, text: &str) {
    let ctx = &node.ctx;
    let at = ctx.rtc.now();
    let a = match alarms::raise(&ctx.nv, code, kind, source, text, at) {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => {
            tracing::error!("{}: alarm list write failed: {e}", ctx.id);
            return;
        }
    };
    ctx.emit("alarm", format!("raised {}: {}", a.code, a.text));
    if !offered(node) || settings(&ctx.nv).is_none() {
        return;
    }
    let subject = format!(
        "[{} {}] Alarm: {}",
        node.ps.identity.product_model, node.ps.id, a.text
    );
    let body = format!(
        "Alarm raised by {} {} (serial number {}).\r\n\r\nAlarm: {}\r\nCode: {}\r\nSource: {}\r\nTime (UTC): {}\r\n",
        node.ps.identity.product_model,
        node.ps.id,
        node.ps.identity.serial,
        a.text,
        a.code,
        a.source,
        a.raised.format("%Y-%m-%d %H:%M:%S")
    );
    {
        let _g = OUTBOX_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = outbox(&ctx.nv);
        o.mails.push(Mail {
            id: o.next_id,
            subject,
            body,
            date: at,
            tries: 0,
            last_error: None,
        });
        o.next_id += 1;
        while o.mails.len() > MAX_OUTBOX {
            o.mails.remove(0);
            o.dropped += 1;
        }
        if let Err(e) = ctx.nv.put(OUTBOX_KEY, &o) {
            tracing::error!("{}: outbox write failed: {e}", ctx.id);
            return;
        }
    }
    let n = node.clone();
    node.spawn(async move { flush(&n).await });
}

/// Ends alarm `code` if it is active.
pub fn clear(node: &Node, code: &str) {
    let ctx = &node.ctx;
    if let Ok(Some(a)) = alarms::clear(&ctx.nv, code, ctx.rtc.now()) {
        ctx.emit("alarm", format!("cleared {}: {}", a.code, a.text));
    }
}

/// The alarms of one device's newest row: not connected (every value
/// invalid) and its threshold rules.
pub fn check_row(node: &Arc<Node>, device: &str, measures: &[Measure], row: &Row) {
    let code = format!("device_not_connected:{device}");
    if !row.values.is_empty() && row.values.iter().all(Option::is_none) {
        raise(
            node,
            &code,
            "device_not_connected",
            device,
            &format!("field device {device} is not connected"),
        );
        return;
    }
    clear(node, &code);
    for r in rules(&node.ctx.nv).iter().filter(|r| r.device == device) {
        let Some(i) = measures
            .iter()
            .position(|m| m.code().eq_ignore_ascii_case(&r.measurement))
        else {
            continue;
        };
        let Some(v) = row.values.get(i).copied().flatten() else {
            continue;
        };
        let m = measures[i].code();
        let code = format!("threshold:{device}:{m}");
        let why = match (r.above, r.below) {
            (Some(a), _) if v > a => Some(format!("above {a}")),
            (_, Some(b)) if v < b => Some(format!("below {b}")),
            _ => None,
        };
        match why {
            Some(why) => raise(
                node,
                &code,
                "threshold",
                device,
                &format!("{device} {m} = {v} is {why}"),
            ),
            None => clear(node, &code),
        }
    }
}

/// One sender at a time per device (a raise and the retry loop may meet).
fn sender_lock(id: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: Mutex<Vec<(String, Arc<tokio::sync::Mutex<()>>)>> = Mutex::new(Vec::new());
    let mut l = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = l.iter().find(|(k, _)| k == id) {
        return m.clone();
    }
    let m = Arc::new(tokio::sync::Mutex::new(()));
    l.push((id.to_string(), m.clone()));
    m
}

/// Sends the outbox, oldest first, until one fails.
pub async fn flush(node: &Arc<Node>) {
    let ctx = &node.ctx;
    let lock = sender_lock(&ctx.id);
    let _g = lock.lock().await;
    let Some(cfg) = settings(&ctx.nv) else {
        return;
    };
    let Some(stack) = ctx.interface("eth1") else {
        return;
    };
    let pending = outbox(&ctx.nv).mails;
    for mail in pending {
        let r = send(stack.as_ref(), &cfg, &node.ps.id, &mail).await;
        let _g = OUTBOX_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = outbox(&ctx.nv);
        let failed = r.as_ref().err().map(ToString::to_string);
        match &failed {
            None => {
                o.mails.retain(|m| m.id != mail.id);
                o.sent += 1;
                o.last_error = None;
            }
            Some(e) => {
                if let Some(m) = o.mails.iter_mut().find(|m| m.id == mail.id) {
                    m.tries += 1;
                    m.last_error = Some(e.clone());
                }
                o.last_error = Some(e.clone());
            }
        }
        if let Err(e) = ctx.nv.put(OUTBOX_KEY, &o) {
            tracing::error!("{}: outbox write failed: {e}", ctx.id);
        }
        match failed {
            None => ctx.emit("email", format!("alarm mail sent: {}", mail.subject)),
            Some(e) => {
                ctx.emit("email", format!("alarm mail not sent: {e}; retried later"));
                return;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot connect to the SMTP server {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("the SMTP server {0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("the SMTP server {0} does not offer STARTTLS: no mail is sent in clear")]
    NoStartTls(SocketAddr),
    #[error("TLS with the SMTP server {0} failed: {1}")]
    Tls(SocketAddr, String),
    #[error("the SMTP server {addr} answered {code} to {step}: {text}")]
    Refused {
        addr: SocketAddr,
        step: &'static str,
        code: u16,
        text: String,
    },
    #[error("the SMTP server {0} broke the protocol: {1}")]
    Protocol(SocketAddr, String),
}

/// One SMTP reply: its code and text lines.
async fn reply<S: AsyncRead + Unpin>(
    s: &mut BufReader<S>,
    addr: SocketAddr,
) -> Result<(u16, Vec<String>), SmtpError> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(SMTP_TIMEOUT, s.read_line(&mut line))
            .await
            .map_err(|_| SmtpError::Timeout(addr, SMTP_TIMEOUT))?
            .map_err(|e| SmtpError::Protocol(addr, e.to_string()))?;
        if n == 0 {
            return Err(SmtpError::Protocol(addr, "connection closed".into()));
        }
        if line.len() > 4096 || lines.len() > 100 {
            return Err(SmtpError::Protocol(addr, "reply too long".into()));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| SmtpError::Protocol(addr, format!("not a reply: {line:?}")))?;
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").to_string());
        if !more {
            return Ok((code, lines));
        }
    }
}

/// Sends `line` and reads the reply, expecting `want` (the first digit).
async fn step<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    addr: SocketAddr,
    name: &'static str,
    line: &str,
    want: u16,
) -> Result<Vec<String>, SmtpError> {
    let w = async {
        s.get_mut().write_all(line.as_bytes()).await?;
        s.get_mut().write_all(b"\r\n").await?;
        s.get_mut().flush().await
    };
    tokio::time::timeout(SMTP_TIMEOUT, w)
        .await
        .map_err(|_| SmtpError::Timeout(addr, SMTP_TIMEOUT))?
        .map_err(|e| SmtpError::Protocol(addr, e.to_string()))?;
    expect(s, addr, name, want).await
}

async fn expect<S: AsyncRead + Unpin>(
    s: &mut BufReader<S>,
    addr: SocketAddr,
    name: &'static str,
    want: u16,
) -> Result<Vec<String>, SmtpError> {
    let (code, text) = reply(s, addr).await?;
    if code / 100 != want {
        return Err(SmtpError::Refused {
            addr,
            step: name,
            code,
            text: text.join(" "),
        });
    }
    Ok(text)
}

/// The message: headers and body, CRLF lines, dot-stuffed, ending with
/// the lone dot.
pub fn message(cfg: &Stored, device: &str, mail: &Mail) -> String {
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    let mut m = format!(
        "Date: {}\r\nFrom: <{}>\r\nTo: {}\r\nSubject: {}\r\nMessage-ID: <alarm-{}-{}@{}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        mail.date.to_rfc2822(),
        cfg.from,
        cfg.to
            .iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", "),
        clean(&mail.subject),
        mail.id,
        mail.date.timestamp(),
        clean(device)
    );
    for line in mail.body.replace("\r\n", "\n").split('\n') {
        if line.starts_with('.') {
            m.push('.');
        }
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.push_str(".\r\n");
    m
}

/// Sends one mail (see the module contract).
pub async fn send(
    stack: &dyn Stack,
    cfg: &Stored,
    device: &str,
    mail: &Mail,
) -> Result<(), SmtpError> {
    let addr = cfg.addr();
    let connector = cfg.connector().map_err(|e| SmtpError::Tls(addr, e))?;
    let tcp = tokio::time::timeout(SMTP_TIMEOUT, stack.connect_tcp(addr))
        .await
        .map_err(|_| SmtpError::Timeout(addr, SMTP_TIMEOUT))?
        .map_err(|e| SmtpError::Connect(addr, e))?;
    let helo = format!("EHLO {}", ehlo_name(stack));
    let mut s = BufReader::new(tcp);
    expect(&mut s, addr, "the greeting", 2).await?;
    let ext = step(&mut s, addr, "EHLO", &helo, 2).await?;
    if !ext
        .iter()
        .any(|l| l.split_whitespace().next() == Some("STARTTLS"))
    {
        return Err(SmtpError::NoStartTls(addr));
    }
    step(&mut s, addr, "STARTTLS", "STARTTLS", 2).await?;
    if !s.buffer().is_empty() {
        return Err(SmtpError::Protocol(
            addr,
            "data after the STARTTLS reply (injection?)".into(),
        ));
    }
    let name = ServerName::IpAddress(IpAddr::from(std::net::IpAddr::V4(cfg.server)));
    let tls = tokio::time::timeout(SMTP_TIMEOUT, connector.connect(name, s.into_inner()))
        .await
        .map_err(|_| SmtpError::Timeout(addr, SMTP_TIMEOUT))?
        .map_err(|e| SmtpError::Tls(addr, e.to_string()))?;
    let mut s = BufReader::new(tls);
    step(&mut s, addr, "EHLO", &helo, 2).await?;
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        let token = base64_plain(format!("\0{u}\0{p}").as_bytes());
        step(
            &mut s,
            addr,
            "AUTH PLAIN",
            &format!("AUTH PLAIN {token}"),
            2,
        )
        .await?;
    }
    step(
        &mut s,
        addr,
        "MAIL FROM",
        &format!("MAIL FROM:<{}>", cfg.from),
        2,
    )
    .await?;
    for t in &cfg.to {
        step(&mut s, addr, "RCPT TO", &format!("RCPT TO:<{t}>"), 2).await?;
    }
    step(&mut s, addr, "DATA", "DATA", 3).await?;
    let body = message(cfg, device, mail);
    let w = async {
        s.get_mut().write_all(body.as_bytes()).await?;
        s.get_mut().flush().await
    };
    tokio::time::timeout(SMTP_TIMEOUT, w)
        .await
        .map_err(|_| SmtpError::Timeout(addr, SMTP_TIMEOUT))?
        .map_err(|e| SmtpError::Protocol(addr, e.to_string()))?;
    expect(&mut s, addr, "the message", 2).await?;
    let _ = step(&mut s, addr, "QUIT", "QUIT", 2).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), s.get_mut().shutdown()).await;
    Ok(())
}

/// The EHLO argument: the device's address literal.
fn ehlo_name(stack: &dyn Stack) -> String {
    format!("[{}]", stack.ipv4())
}

/// Standard base64 with padding (AUTH PLAIN).
fn base64_plain(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Stored {
        Stored {
            server: Ipv4Addr::LOCALHOST,
            port: 25,
            from: "ps@site.example".into(),
            to: vec!["a@site.example".into(), "b@site.example".into()],
            user: None,
            password: Some("secret".into()),
            ca_pem: String::new(),
        }
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_plain(i.as_bytes()), o);
        }
    }

    #[test]
    fn messages_are_dot_stuffed_and_headers_single_line() {
        let m = Mail {
            id: 7,
            subject: "hot\r\nBcc: x@y".into(),
            body: "one\r\n.two\n..three".into(),
            date: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            tries: 0,
            last_error: None,
        };
        let text = message(&cfg(), "ps1", &m);
        assert!(text.contains("Subject: hot  Bcc: x@y\r\n"), "{text}");
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(
            text.contains("\r\none\r\n..two\r\n...three\r\n.\r\n"),
            "{text}"
        );
        assert!(text.contains("To: <a@site.example>, <b@site.example>\r\n"));
        assert!(
            text.starts_with("Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n"),
            "{text}"
        );
        assert!(!cfg().view().to_string().contains("secret"));
    }

    #[tokio::test]
    async fn a_server_without_starttls_gets_no_mail() {
        use tokio::io::AsyncReadExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"220 test ESMTP\r\n").await.unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"EHLO ["), "{:?}", &buf[..n]);
            s.write_all(b"250-test\r\n250 AUTH PLAIN\r\n")
                .await
                .unwrap();
            // Nothing else may come: no MAIL FROM in clear.
            let n = s.read(&mut buf).await.unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let stack = fieldtwin_emulator::net::host::HostStack::new(Ipv4Addr::LOCALHOST);
        let mut c = cfg();
        c.port = port;
        c.ca_pem = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])
            .unwrap()
            .cert
            .pem();
        let m = Mail {
            id: 0,
            subject: "s".into(),
            body: "b".into(),
            date: Utc::now(),
            tries: 0,
            last_error: None,
        };
        let e = send(&stack, &c, "ps1", &m).await.unwrap_err();
        assert!(matches!(e, SmtpError::NoStartTls(_)), "{e}");
        let rest = server.await.unwrap();
        assert!(!rest.contains("MAIL"), "{rest}");
    }
}
