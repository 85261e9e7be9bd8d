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
    /// SFTP to the server of the `sftp` table.
    Sftp,
}

/// `[device.panel_server.publication]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublicationConfig {
    /// "https" (default) or "sftp": one method is active at a time.
    #[serde(default)]
    pub method: PublicationMethod,
    /// Upload URL, `https://HOST[:PORT]/PATH` (HOST an IPv4 address);
    /// HTTPS only.
    #[serde(default)]
    pub url: String,
    /// PEM file of the CA that signed the server's certificate; HTTPS only.
    #[serde(default)]
    pub ca_file: PathBuf,
    /// Minutes from the end of one publication to the start of the next
    /// (default 60, 1..=1440).
    #[serde(default = "sixty")]
    pub period_min: u32,
    /// Name of the multipart form field that carries the file.
    #[serde(default = "datafile1")]
    pub field: String,
    /// The SFTP server (`method = "sftp"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp: Option<super::ps_sftp::SftpConfig>,
}

impl PublicationConfig {
    pub fn validate(&self, at: &str) -> Result<(), SiteError> {
        if !(1..=1440).contains(&self.period_min) {
            return Err(invalid(
                format!("{at}.period_min"),
                format!(
                    "{} minutes is not a publication period; use 1 to 1440",
                    self.period_min
                ),
            ));
        }
        if self.method == PublicationMethod::Sftp {
            return match &self.sftp {
                Some(s) => s.validate(&format!("{at}.sftp")),
                None => Err(invalid(
                    format!("{at}.sftp"),
                    "method = \"sftp\" needs [device.panel_server.publication.sftp] (host, user, password or key_file)",
                )),
            };
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
