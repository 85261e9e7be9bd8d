//! `fieldtwin datalogger decode`: turns Data Logger MQTT payloads (hex, as
//! `mosquitto_sub -F %x` prints them) into JSON rows, one line per record
//! (docs/datalogger.md "Topic and payload").

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, bail};
use fieldtwin_emulator::site::{Site, default_inputs};
use fieldtwin_models::datalogger::payload;

/// Input names of logger `device` in the site (the default site if `None`).
fn names(site: Option<&Path>, device: &str) -> anyhow::Result<Vec<String>> {
    let site = match site {
        Some(p) => Site::load(p)?,
        None => Site::default_site(),
    };
    let dev = site
        .device(device)
        .with_context(|| format!("the site has no device {device:?}"))?;
    let inputs = dev
        .datalogger
        .as_ref()
        .map(|d| d.input.clone())
        .unwrap_or_else(default_inputs);
    Ok(inputs.into_iter().map(|i| i.name).collect())
}

fn hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !t.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..t.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&t[i..i + 2], 16)
                .with_context(|| format!("{:?} is not hex", &t[i..i + 2]))
        })
        .collect()
}

/// Decodes `payload` (hex) or every line of stdin; prints JSON rows.
pub fn decode(payload_hex: Option<&str>, site: Option<&Path>, device: &str) -> anyhow::Result<()> {
    let names = names(site, device)?;
    let one = |text: &str| -> anyhow::Result<()> {
        let d = payload::decode(&hex(text)?).map_err(anyhow::Error::msg)?;
        for row in payload::rows(&d, &names) {
            println!("{}", serde_json::to_string(&row)?);
        }
        Ok(())
    };
    match payload_hex {
        Some(h) => one(h),
        None => {
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                one(&line).with_context(|| format!("line {}", n + 1))?;
            }
            Ok(())
        }
    }
}

/// `fieldtwin ble`: plays the mobile app on a logger's BLE link: the
/// handshake with the pairing key, then `request`; prints the answer. With
/// `replay`, sends the same sealed request a second time and reports that
/// the logger slammed the connection.
pub fn ble(socket: &Path, key: &str, request: &str, replay: bool) -> anyhow::Result<()> {
    use fieldtwin_models::datalogger::ble::{App, frame};
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("cannot reach the BLE link at {}", socket.display()))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let read = |s: &mut std::os::unix::net::UnixStream| -> anyhow::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 2];
        match s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut b = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut b)?;
        Ok(Some(b))
    };
    let mut app = App::new(key.as_bytes());
    s.write_all(&frame(&app.hello()))?;
    let ack = read(&mut s)?.context("the logger slammed the connection: wrong pairing key?")?;
    app.on_hello_ack(&ack).map_err(anyhow::Error::msg)?;
    let req = app.request(request.as_bytes()).context("no session keys")?;
    s.write_all(&frame(&req))?;
    let ans = read(&mut s)?.context("the logger slammed the connection")?;
    let plain = app
        .open(&ans)
        .context("the logger's answer does not authenticate; slamming")?;
    println!("{}", String::from_utf8_lossy(&plain));
    if replay {
        s.write_all(&frame(&req))?;
        match read(&mut s) {
            Ok(None) => println!("replay: the logger slammed the connection"),
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset) =>
            {
                println!("replay: the logger slammed the connection")
            }
            Ok(Some(_)) => bail!("the logger answered a replayed message"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
