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
