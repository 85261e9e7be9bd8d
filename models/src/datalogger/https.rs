//! The Data Logger's HTTPS uplink (seed 004: the binary records are
//! "encapsulated in HTTPS or MQTTS using TLS 1.2"), the alternative to MQTTS
//! chosen with `uplink = "https"` in the site file.
//!
//! Contract (docs/datalogger.md "Uplink: HTTPS"):
//! - The same TLS 1.2 client with the seed's four suites as MQTTS
//!   ([`super::uplink::connector`]), on the stream the device's own stack
//!   opened, so it works in TAP mode and through the carrier NAT.
//! - One message = `POST PATH HTTP/1.1` with `Host`, `Authorization: Basic`
//!   (the device's user name and password), `Content-Type:
//!   application/octet-stream`, `Content-Length`, and the payload in the
//!   MQTT format ([`super::payload`], at most [`super::uplink::BATCH`]
//!   records). The records count as delivered only when a 2xx answer
//!   arrives; any other answer, a timeout or a broken connection ends the
//!   session with an error and the records go again next time.
//! - Messages follow each other on one connection (keep-alive) until the
//!   server says `Connection: close`, answers HTTP/1.0, or sends a body
//!   whose end is the connection's end (no `Content-Length`, or chunked):
//!   then the session ends after that message ([`SessionEnd::Closed`]).
//! - [`parse_response`] is incremental and total (httparse): `Ok(None)`
//!   means "need more bytes"; a head above [`MAX_HEAD`] bytes, a body above
//!   [`MAX_BODY`] or a malformed answer is an error, never a panic.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::payload;
use super::uplink::{ACK_TIMEOUT, BATCH, Session, SessionEnd, SessionReport, UplinkError};

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest response body accepted (read and discarded).
pub const MAX_BODY: usize = 64 * 1024;

/// What the logger needs of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    /// Bytes of body that follow the head (`None`: none to read, the
    /// connection closes after this answer).
    pub body: Option<usize>,
    /// The connection cannot carry another request.
    pub close: bool,
}

/// Parses an answer at the start of `buf`: `Ok(Some((answer, head_len)))`
/// or `Ok(None)` when more bytes are needed. Interim (1xx) answers are
/// skipped: `head_len` then covers them too.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let n = match r.parse(&buf[at..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(format!("answer head longer than {MAX_HEAD} bytes"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("malformed HTTP answer: {e}")),
        };
        let status = r.code.unwrap_or(0);
        at += n;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let chunked = header("transfer-encoding").is_some();
        let length = match header("content-length") {
            Some(v) if !chunked => Some(
                v.parse::<usize>()
                    .map_err(|_| format!("malformed Content-Length {v:?}"))?,
            ),
            _ => None,
        };
        if length.is_some_and(|l| l > MAX_BODY) {
            return Err(format!("answer body longer than {MAX_BODY} bytes"));
        }
        let no_body = status == 204 || status == 304;
        let body = if no_body { Some(0) } else { length };
        let close = r.version != Some(1)
            || header("connection").is_some_and(|c| c.contains("close"))
            || body.is_none();
        return Ok(Some((
            Answer {
                status,
                reason: r.reason.unwrap_or("").to_string(),
                body,
                close,
            },
            at,
        )));
    }
}

/// `Authorization: Basic` value of `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | u32::from(x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads one answer (and its body) from `s`.
async fn read_answer<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Answer, UplinkError> {
    let mut chunk = [0u8; 4096];
    let (answer, head) = loop {
        if let Some(a) = parse_response(buf).map_err(UplinkError::Protocol)? {
            break a;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(UplinkError::Protocol(
                "the server closed the connection".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    buf.drain(..head);
    if let Some(len) = answer.body {
        while buf.len() < len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(UplinkError::Protocol(
                    "the server closed the connection in an answer".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..len);
    }
    Ok(answer)
}

/// Runs the HTTPS part of a session on the open TLS stream `s`.
pub(super) async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    sess: &Session<'_>,
    mut s: S,
    path: &str,
    start: std::time::Duration,
) -> Result<SessionReport, UplinkError> {
    let auth = basic(sess.username, sess.password);
    let host = format!("{}:{}", sess.broker_name, sess.broker.port());
    let first = lock(sess.ring).sent();
    let mut messages = 0u64;
    let mut buf = Vec::new();
    let end = loop {
        if (sess.stop)() {
            break SessionEnd::Interrupted;
        }
        if sess.clock.now().saturating_sub(start) >= sess.session_max {
            break SessionEnd::TimeLimit;
        }
        let batch = lock(sess.ring).unsent(BATCH)?;
        let Some(last) = batch.last().map(|r| u64::from(r.seq)) else {
            break SessionEnd::Done;
        };
        let body = payload::encode(sess.device_id, &batch);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: DataLogger/001.000.000\r\n\
             Authorization: Basic {auth}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(&body).await?;
        s.flush().await?;
        let answer = tokio::time::timeout(ACK_TIMEOUT, read_answer(&mut s, &mut buf))
            .await
            .map_err(|_| UplinkError::Timeout(ACK_TIMEOUT))??;
        if !(200..300).contains(&answer.status) {
            let _ = Pin::new(&mut s).shutdown().await;
            return Err(UplinkError::Http(answer.status, answer.reason));
        }
        lock(sess.ring).acknowledge(last + 1)?;
        messages += 1;
        if answer.close {
            break if lock(sess.ring).pending() == 0 {
                SessionEnd::Done
            } else {
                SessionEnd::Closed
            };
        }
    };
    let _ = Pin::new(&mut s).shutdown().await;
    Ok(SessionReport {
        end,
        messages,
        delivered: (first, lock(sess.ring).sent()),
        duration: sess.clock.now().saturating_sub(start),
        firmware: 0,
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic_auth_matches_rfc_7617() {
        // RFC 7617 section 2's example.
        assert_eq!(
            basic("Aladdin", "open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic("a", ""), "YTo=");
        assert_eq!(basic("ab", "c"), "YWI6Yw==");
        assert_eq!(basic("dl1", "x"), "ZGwxOng=");
    }

    #[test]
    fn answers() {
        let ok = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\nNEXT";
        let (a, n) = parse_response(ok).unwrap().unwrap();
        assert_eq!((a.status, a.body, a.close), (204, Some(0), false));
        assert_eq!(&ok[n..], b"NEXT");
        let cont = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (a, n) = parse_response(cont).unwrap().unwrap();
        assert_eq!((a.status, a.body, a.close), (200, Some(2), false));
        assert_eq!(&cont[n..], b"ok");
        let (a, _) = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(a.close);
        let (a, _) = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((a.body, a.close), (None, true));
        let (a, _) = parse_response(
            b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (a.status, a.reason.as_str(), a.close),
            (401, "Unauthorized", true)
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-"), Ok(None));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    proptest! {
        #[test]
        fn parse_response_is_total(b in prop::collection::vec(any::<u8>(), 0..300), prefix: bool) {
            let mut v = if prefix { b"HTTP/1.1 ".to_vec() } else { Vec::new() };
            v.extend_from_slice(&b);
            if let Ok(Some((_, n))) = parse_response(&v) {
                prop_assert!(n <= v.len());
            }
        }

        #[test]
        fn a_cut_answer_needs_more_bytes(cut in 0usize..60) {
            let full = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: t\r\n\r\n";
            let cut = cut.min(full.len() - 1);
            prop_assert_eq!(parse_response(&full[..cut]), Ok(None));
        }
    }
}
