//! A minimal HTTPS/1.1 client for scenarios: one request per connection
//! (`Connection: close`), no redirects followed, any server certificate
//! accepted (the devices' certificates are self-signed; the scenario tests
//! the device, not the PKI).
//!
//! Contract: [`request`] returns the status, headers, body and the cookies
//! set by the answer, or an error naming the address and what failed.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer.
#[derive(Debug, Clone, Default)]
pub struct WebResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// `(name, value)` of each Set-Cookie (empty value: deleted).
    pub set_cookies: Vec<(String, String)>,
}

impl WebResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn connector() -> Result<tokio_rustls::TlsConnector, String> {
    let config = fieldtwin_emulator::tls_client::any_certificate().map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` body of `fields`.
pub fn form(fields: &[(String, String)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// `multipart/form-data` body: text `fields` and one file part.
pub fn multipart(
    fields: &[(String, String)],
    file_field: &str,
    file_name: &str,
    content: &[u8],
) -> (String, Vec<u8>) {
    let boundary = "----fieldtwin-scenario-7d1c3e";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// One request to `target` (`host:port`); `body` is (content type, bytes).
pub async fn request(
    target: &str,
    method: &str,
    path: &str,
    cookie: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Result<WebResponse, String> {
    let work = async {
        let host = target
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(target)
            .to_string();
        let tcp = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("cannot connect to https://{target}: {e}"))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let mut tls = connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {target} failed: {e}"))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: fieldtwin-scenario\r\nAccept: */*\r\n"
        );
        if !cookie.is_empty() {
            head.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        let payload = match &body {
            Some((ctype, bytes)) => {
                head.push_str(&format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
                    bytes.len()
                ));
                bytes.as_slice()
            }
            None => &[][..],
        };
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        tls.write_all(payload)
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        tls.flush().await.map_err(|e| format!("{target}: {e}"))?;
        let mut raw = Vec::new();
        // A server that closes without close_notify still sent a whole answer.
        if let Err(e) = tls.read_to_end(&mut raw).await
            && raw.is_empty()
        {
            return Err(format!("{target}: {e}"));
        }
        parse(&raw).ok_or_else(|| format!("{target} sent a malformed HTTP answer"))
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| format!("no HTTPS answer from {target} within 30 s"))?
}

fn parse(raw: &[u8]) -> Option<WebResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut resp = WebResponse {
        status,
        ..Default::default()
    };
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            if k == "set-cookie"
                && let Some((name, value)) = v.split(';').next().and_then(|c| c.split_once('='))
            {
                let expired = v.to_ascii_lowercase().contains("max-age=0");
                resp.set_cookies.push((
                    name.trim().to_string(),
                    if expired {
                        String::new()
                    } else {
                        value.trim().to_string()
                    },
                ));
            }
            resp.headers.push((k, v));
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    }
    resp.body = String::from_utf8_lossy(&body).into_owned();
    Some(resp)
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_answers_and_cookies() {
        let raw = b"HTTP/1.1 303 See Other\r\nLocation: /login\r\nSet-Cookie: sid=abc; Secure; HttpOnly\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse(raw).unwrap();
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some("/login"));
        assert_eq!(r.body, "abcde");
        assert_eq!(r.set_cookies, vec![("sid".into(), "abc".into())]);
        assert!(parse(b"garbage").is_none());
    }

    #[test]
    fn form_encoding() {
        let f = form(&[("user".into(), "a b&c".into())]);
        assert_eq!(f, b"user=a%20b%26c");
    }
}
