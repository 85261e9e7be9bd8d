//! HTTPS attacks on a device's webpages: login attempts and firmware
//! uploads, with a real TLS client (rustls) and HTTP/1.1 client (hyper)
//! over the Workstation's own stream.
//!
//! Contract:
//! - The attacker does not verify the device's certificate (a self-signed
//!   one is what the Panel Server shows); TLS 1.2 and 1.3 are offered.
//! - A login is `POST /login` with the form fields `username` and
//!   `password`; the outcome is read from the answer: a redirect with a
//!   session cookie is [`LoginOutcome::Ok`], 401 a wrong password, 403 (or
//!   a message that says "locked") a lockout. The message is the page's
//!   `id="message"` text.
//! - A firmware upload logs in, reads the CSRF token of `GET /firmware`
//!   and posts the image as `multipart/form-data` (`csrf`, `image`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fieldtwin_emulator::attack::{AttackResult, LoginOutcome};
use fieldtwin_emulator::net::Stack;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use rand::{RngCore, SeedableRng};
use rustls::pki_types::ServerName;

use super::{ANSWER_TIMEOUT, connect};

/// HTTPS port of a device.
pub const HTTPS_PORT: u16 = 443;
/// Largest firmware image an attack sends.
pub const MAX_IMAGE: usize = 64 << 20;

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut cfg = fieldtwin_emulator::tls_client::any_certificate()
                .expect("ring supports the default TLS versions");
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(cfg)
        })
        .clone()
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The page's message (`id="message"`), unescaped.
    pub fn message(&self) -> Option<String> {
        page_message(&self.body)
    }

    /// The value of cookie `name` set by this answer.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, v)| k.trim() == name && !v.is_empty())
            .map(|(_, v)| v.trim().to_string())
    }

    fn location(&self) -> Option<String> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }
}

/// Sends one request over a fresh TLS connection from `stack` to `to`.
pub async fn https(
    stack: &dyn Stack,
    to: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(header::HeaderName, String)],
    body: Vec<u8>,
) -> Result<Answer, String> {
    let tcp = connect(stack, to).await?;
    let name = ServerName::IpAddress(to.ip().into());
    let tls = tokio::time::timeout(
        ANSWER_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("TLS handshake with {to} timed out"))?
    .map_err(|e| format!("TLS handshake with {to} failed: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP with {to} failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, to.ip().to_string())
        .header(header::USER_AGENT, "fieldtwin-workstation")
        .header(header::CONNECTION, "close");
    for (k, v) in headers {
        req = req.header(
            k,
            HeaderValue::from_str(v).map_err(|_| format!("header {k} has a bad value"))?,
        );
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{to} gave no HTTP answer: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{to} broke off its answer: {e}"))?
            .to_bytes();
        Ok::<_, String>(Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    let r = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{to} did not answer within {} s", ANSWER_TIMEOUT.as_secs()))?;
    driver.abort();
    r
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The text of the element with `id="message"` of a page, if any.
pub fn page_message(html: &str) -> Option<String> {
    let at = html.find("id=\"message\"")?;
    let start = at + html[at..].find('>')? + 1;
    let end = start + html[start..].find('<')?;
    Some(unescape(html[start..end].trim()))
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_token(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\"")?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + "value=\"".len();
    let end = v + rest[v..].find('"')?;
    Some(unescape(&rest[v..end]))
}

/// What a login attempt gave.
#[derive(Debug, Clone)]
pub struct Login {
    pub answer: Answer,
    pub outcome: LoginOutcome,
    pub session: Option<String>,
}

impl Login {
    pub fn into_result(self) -> AttackResult {
        AttackResult::HttpsLogin {
            status: self.answer.status.as_u16(),
            outcome: self.outcome,
            location: self.answer.location(),
            message: self.answer.message(),
        }
    }
}

/// Classifies the answer to `POST /login`.
pub fn login_outcome(status: StatusCode, message: Option<&str>, session: bool) -> LoginOutcome {
    let locked = message.is_some_and(|m| m.to_lowercase().contains("locked"));
    match status.as_u16() {
        _ if locked => LoginOutcome::Locked,
        200..=399 if session => LoginOutcome::Ok,
        401 => LoginOutcome::WrongPassword,
        403 | 423 | 429 => LoginOutcome::Locked,
        _ => LoginOutcome::Other,
    }
}

/// One login attempt on the webpages of `to`.
pub async fn login(
    stack: &dyn Stack,
    to: SocketAddr,
    user: &str,
    password: &str,
) -> Result<Login, String> {
    let body = format!(
        "username={}&password={}",
        form_encode(user),
        form_encode(password)
    );
    let answer = https(
        stack,
        to,
        Method::POST,
        "/login",
        &[(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".into(),
        )],
        body.into_bytes(),
    )
    .await?;
    let session = answer.cookie("session");
    let outcome = login_outcome(
        answer.status,
        answer.message().as_deref(),
        session.is_some(),
    );
    Ok(Login {
        answer,
        outcome,
        session,
    })
}

/// The image to upload: the given hex bytes, or `random_len` seeded random bytes.
pub fn image(hex: Option<&str>, random_len: Option<u32>, seed: u64) -> Result<Vec<u8>, String> {
    match (hex, random_len) {
        (Some(h), None) => {
            let h: String = h.chars().filter(|c| !c.is_whitespace()).collect();
            if !h.len().is_multiple_of(2) || h.is_empty() {
                return Err("bytes_hex needs an even, non-zero number of hex digits".into());
            }
            if h.len() / 2 > MAX_IMAGE {
                return Err(format!("the image is larger than {MAX_IMAGE} bytes"));
            }
            (0..h.len())
                .step_by(2)
                .map(|i| {
                    u8::from_str_radix(&h[i..i + 2], 16)
                        .map_err(|_| format!("bytes_hex: {:?} is not a hex byte", &h[i..i + 2]))
                })
                .collect()
        }
        (None, Some(n)) => {
            let n = n as usize;
            if n == 0 || n > MAX_IMAGE {
                return Err(format!("random_len must be 1 to {MAX_IMAGE} bytes"));
            }
            let mut v = vec![0u8; n];
            rand::rngs::SmallRng::seed_from_u64(seed).fill_bytes(&mut v);
            Ok(v)
        }
        _ => Err("give exactly one of bytes_hex (the image in hex) or random_len (a number of random bytes)".into()),
    }
}

/// Logs in and uploads `image` on the firmware page.
pub async fn firmware_upload(
    stack: &dyn Stack,
    to: SocketAddr,
    user: &str,
    password: &str,
    image: Vec<u8>,
) -> Result<AttackResult, String> {
    let bytes = image.len();
    let l = login(stack, to, user, password).await?;
    let Some(session) = l.session.filter(|_| l.outcome == LoginOutcome::Ok) else {
        return Ok(AttackResult::FirmwareUpload {
            status: l.answer.status.as_u16(),
            installed: false,
            stage: "login".into(),
            message: l.answer.message(),
            bytes,
        });
    };
    let cookie = (header::COOKIE, format!("session={session}"));
    let page = https(
        stack,
        to,
        Method::GET,
        "/firmware",
        std::slice::from_ref(&cookie),
        Vec::new(),
    )
    .await?;
    let csrf = csrf_token(&page.body).ok_or_else(|| {
        format!(
            "the firmware page of {to} has no CSRF token (HTTP {})",
            page.status
        )
    })?;
    let boundary = "----fieldtwin-workstation-7d1f";
    let mut body = Vec::with_capacity(bytes + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"firmware.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&image);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let answer = https(
        stack,
        to,
        Method::POST,
        "/firmware",
        &[
            cookie,
            (
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            ),
        ],
        body,
    )
    .await?;
    Ok(AttackResult::FirmwareUpload {
        status: answer.status.as_u16(),
        installed: answer.status.is_success(),
        stage: "upload".into(),
        message: answer.message(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_parts_are_found_and_unescaped() {
        let html = r#"<h1>Login</h1><div class="msg" id="message">Wrong user name or password. 9 more failure(s) lock the webpages.</div><form>"#;
        assert_eq!(
            page_message(html).unwrap(),
            "Wrong user name or password. 9 more failure(s) lock the webpages."
        );
        assert_eq!(page_message("<p>nothing</p>"), None);
        let html = r#"<form><input type="hidden" name="csrf" value="ab&amp;12"></form>"#;
        assert_eq!(csrf_token(html).unwrap(), "ab&12");
        assert_eq!(csrf_token("<form></form>"), None);
        // Truncated pages are no panic.
        assert_eq!(page_message(r#"<div id="message">abc"#), None);
        assert_eq!(csrf_token(r#"<input name="csrf" value="abc"#), None);
    }

    #[test]
    fn outcomes_follow_status_and_message() {
        use LoginOutcome::*;
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert_eq!(login_outcome(s(303), None, true), Ok);
        assert_eq!(login_outcome(s(303), None, false), Other);
        assert_eq!(
            login_outcome(s(401), Some("Wrong user name"), false),
            WrongPassword
        );
        assert_eq!(
            login_outcome(
                s(401),
                Some("the webpages are locked for 10 minutes"),
                false
            ),
            Locked
        );
        assert_eq!(login_outcome(s(403), None, false), Locked);
        assert_eq!(login_outcome(s(500), None, false), Other);
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn images_from_hex_or_random() {
        assert_eq!(image(Some("00ff 10"), None, 1).unwrap(), vec![0, 255, 16]);
        assert!(image(Some("0"), None, 1).unwrap_err().contains("even"));
        assert!(image(Some("zz"), None, 1).unwrap_err().contains("\"zz\""));
        let a = image(None, Some(4096), 7).unwrap();
        assert_eq!(a.len(), 4096);
        assert_eq!(a, image(None, Some(4096), 7).unwrap(), "seeded");
        assert_ne!(a, image(None, Some(4096), 8).unwrap());
        assert!(image(None, None, 1).unwrap_err().contains("exactly one"));
        assert!(image(Some("00"), Some(1), 1).is_err());
        assert!(image(None, Some(0), 1).is_err());
    }
}
