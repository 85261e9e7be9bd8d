//! Site-file configuration of a Panel Server's data logging and publication
//! (`[device.panel_server.datalog]`, `[device.panel_server.publication]`;
//! devices.md §1.6, docs/site-file.md).
//!
//! Contract: both tables are optional (no table: the device logs nothing,
//! publishes nothing). [`DatalogConfig::validate`] and
//! [`PublicationConfig::validate`] refuse values the product does not offer,
//! naming the field and what is allowed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SiteError, invalid};

/// Logging periods the Panel Server offers, in minutes ([NF]: devices.md
/// §1.6 names 5 and 10 in examples; the plausible set is these).
pub const LOGGING_PERIODS_MIN: [u32; 6] = [1, 5, 10, 15, 30, 60];

/// `[device.panel_server.datalog]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatalogConfig {
    /// Logging period in minutes: 1, 5, 10, 15, 30 or 60.
    #[serde(default = "ten")]
    pub period_min: u32,
    /// Field devices logged (ids of the site file); default: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Measurement codes logged (e.g. "VAN", "P", "E", "T"); default: every
    /// measurement each device offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurements: Option<Vec<String>>,
}

fn ten() -> u32 {
    10
}

fn sixty() -> u32 {
    60
}

fn datafile1() -> String {
    "datafile1".into()
}

impl Default for DatalogConfig {
    fn default() -> Self {
        Self {
            period_min: 10,
            devices: None,
            measurements: None,
        }
    }
}

/// Measurement codes a field device may offer (the device's kind decides
/// which of them it has: meters and PowerTags VAN IA P PF E, ambient
/// sensors T RH CO2).
pub const MEASUREMENT_CODES: [&str; 8] = ["VAN", "IA", "P", "PF", "E", "T", "RH", "CO2"];

impl DatalogConfig {
    /// `field_ids`: the ids of the Panel Server's serial and wireless devices.
    pub fn validate(&self, at: &str, field_ids: &[&str]) -> Result<(), SiteError> {
        for (i, d) in self.devices.iter().flatten().enumerate() {
            if !field_ids.contains(&d.as_str()) {
                return Err(invalid(
                    format!("{at}.devices[{i}]"),
                    format!(
                        "{d:?} is not a serial or wireless device of this Panel Server; it has: {}",
                        field_ids.join(", ")
                    ),
                ));
            }
        }
        for (i, m) in self.measurements.iter().flatten().enumerate() {
            if !MEASUREMENT_CODES.iter().any(|c| c.eq_ignore_ascii_case(m)) {
                return Err(invalid(
                    format!("{at}.measurements[{i}]"),
                    format!(
                        "{m:?} is not a measurement; use {}",
                        MEASUREMENT_CODES.join(", ")
                    ),
                ));
            }
        }
        if !LOGGING_PERIODS_MIN.contains(&self.period_min) {
            return Err(invalid(
                format!("{at}.period_min"),
                format!(
                    "{} is not a logging period; use 1, 5, 10, 15, 30 or 60 (minutes)",
                    self.period_min
                ),
            ));
        }
        Ok(())
    }
}

/// Publication method.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublicationMethod {
    #[default]
    Https,
}

/// Layout of the published files (devices.md §1.6: SFTP and HTTPS carry
/// JSON or CSV). A property of the publication, whatever carries the files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublicationFormat {
    #[default]
    Csv,
    Json,
}

impl PublicationFormat {
    /// The file name extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            PublicationFormat::Csv => "csv",
            PublicationFormat::Json => "json",
        }
    }
}

/// `[device.panel_server.publication]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublicationConfig {
    /// Only "https" so far.
    #[serde(default)]
    pub method: PublicationMethod,
    /// Upload URL, `https://HOST[:PORT]/PATH` (HOST an IPv4 address).
    pub url: String,
    /// PEM file of the CA that signed the server's certificate (or
    /// `ca_pem`, or `pin_sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The CA certificate(s) themselves, PEM (what the web page and the
    /// device API store; a site file may use it instead of `ca_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// SHA-256 of the server's certificate (DER), 64 hex digits (colons
    /// allowed): the certificate is pinned instead of checked against a CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_sha256: Option<String>,
    /// File layout: "csv" (default) or "json".
    #[serde(default)]
    pub format: PublicationFormat,
    /// Minutes from the end of one publication to the start of the next
    /// (default 60, 1..=1440).
    #[serde(default = "sixty")]
    pub period_min: u32,
    /// Name of the multipart form field that carries the file.
    #[serde(default = "datafile1")]
    pub field: String,
}

/// A certificate pin as 32 bytes: 64 hex digits, colons and spaces
/// allowed between them, any case.
pub fn parse_pin(pin: &str) -> Result<[u8; 32], String> {
    let hex: String = pin.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    let bad = || {
        format!(
            "{pin:?} is not a SHA-256 fingerprint; give 64 hex digits (e.g. as `openssl x509 -noout -fingerprint -sha256` prints it)"
        )
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl PublicationConfig {
    /// How the server is verified: exactly one of a CA (`ca_file` or
    /// `ca_pem`) and a pin; the message names what is allowed.
    pub fn check_trust(&self) -> Result<(), String> {
        let ca = usize::from(self.ca_file.is_some()) + usize::from(self.ca_pem.is_some());
        match (ca, &self.pin_sha256) {
            (0, None) => Err(
                "the server certificate must be verified: give a CA certificate (ca_file or ca_pem) or the SHA-256 pin of the server certificate (pin_sha256)".into(),
            ),
            (1, None) => Ok(()),
            (0, Some(p)) => parse_pin(p).map(|_| ()),
            _ => Err(
                "give one way to verify the server: a CA certificate (ca_file or ca_pem) or a pin (pin_sha256), not several".into(),
            ),
        }
    }

    pub fn validate(&self, at: &str) -> Result<(), SiteError> {
        if let Err(e) = self.check_trust() {
            let field =
                if self.pin_sha256.is_some() && self.ca_file.is_none() && self.ca_pem.is_none() {
                    "pin_sha256"
                } else {
                    "ca_file"
                };
            return Err(invalid(format!("{at}.{field}"), e));
        }
        if !(1..=1440).contains(&self.period_min) {
            return Err(invalid(
                format!("{at}.period_min"),
                format!(
                    "{} minutes is not a publication period; use 1 to 1440",
                    self.period_min
                ),
            ));
        }
        if let Err(e) = parse_https_url(&self.url) {
            return Err(invalid(format!("{at}.url"), e));
        }
        if self.field.is_empty()
            || !self
                .field
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"')
        {
            return Err(invalid(
                format!("{at}.field"),
                "the form field name must be printable ASCII without quotes",
            ));
        }
        Ok(())
    }
}

/// `https://A.B.C.D[:PORT][/PATH]` -> (address, port, path).
pub fn parse_https_url(url: &str) -> Result<(std::net::Ipv4Addr, u16, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} is not an https:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} in {url:?} is not a port number"))?,
        ),
        None => (authority, 443),
    };
    let ip = host.parse().map_err(|_| {
        format!("{host:?} in {url:?} is not an IPv4 address (the device has no DNS resolver here)")
    })?;
    if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "the path of {url:?} has spaces or control characters"
        ));
    }
    Ok((ip, port, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why() {
        assert_eq!(
            parse_https_url("https://127.0.0.1:8443/upload").unwrap(),
            ("127.0.0.1".parse().unwrap(), 8443, "/upload".into())
        );
        assert_eq!(
            parse_https_url("https://10.0.0.2").unwrap(),
            ("10.0.0.2".parse().unwrap(), 443, "/".into())
        );
        assert!(parse_https_url("http://10.0.0.2/").is_err());
        assert!(parse_https_url("https://server.example/").is_err());
        assert!(parse_https_url("https://10.0.0.2:99999/").is_err());
    }

    fn publication(extra: &str) -> Result<PublicationConfig, String> {
        let p: PublicationConfig =
            toml::from_str(&format!("url = \"https://10.0.0.2:8443/up\"\n{extra}"))
                .map_err(|e| e.to_string())?;
        p.validate("p").map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn a_ca_or_a_pin_verifies_the_server_and_the_format_is_chosen() {
        let pin = "AB:".repeat(31) + "CD";
        let p = publication(&format!("pin_sha256 = \"{pin}\"\nformat = \"json\"")).unwrap();
        assert_eq!(p.format, PublicationFormat::Json);
        assert_eq!(parse_pin(&pin).unwrap()[31], 0xCD);
        let p = publication("ca_file = \"/x/ca.pem\"").unwrap();
        assert_eq!(p.format, PublicationFormat::Csv, "CSV by default");
        let e = publication("").unwrap_err();
        assert!(e.contains("p.ca_file") && e.contains("pin_sha256"), "{e}");
        let e = publication(&format!("ca_file = \"/x\"\npin_sha256 = \"{pin}\"")).unwrap_err();
        assert!(e.contains("not several"), "{e}");
        let e = publication("pin_sha256 = \"abc\"").unwrap_err();
        assert!(
            e.contains("p.pin_sha256") && e.contains("64 hex digits"),
            "{e}"
        );
        let e = publication("ca_file = \"/x\"\nformat = \"xml\"").unwrap_err();
        assert!(e.contains("xml"), "{e}");
    }

    #[test]
    fn periods_outside_the_offer_are_refused() {
        let mut d = DatalogConfig::default();
        assert!(d.validate("x", &[]).is_ok());
        d.period_min = 7;
        let e = d.validate("x", &[]).unwrap_err().to_string();
        assert!(e.contains("1, 5, 10, 15, 30 or 60"), "{e}");
        d.period_min = 5;
        d.devices = Some(vec!["pt-x".into()]);
        let e = d.validate("x", &["pt-a"]).unwrap_err().to_string();
        assert!(e.contains("x.devices[0]") && e.contains("pt-a"), "{e}");
        d.devices = None;
        d.measurements = Some(vec!["p".into(), "kWh".into()]);
        let e = d.validate("x", &[]).unwrap_err().to_string();
        assert!(e.contains("x.measurements[1]"), "{e}");
    }
}
