//! Site-file configuration of a Panel Server's SFTP publication target,
//! its alarms and their notification by email
//! (`[device.panel_server.publication.sftp]`, `[device.panel_server.email]`,
//! `[[device.panel_server.alarm]]`; devices.md §1.6, DOCA0211 "SFTP Server
//! Key Fingerprint" and the model matrix "Notification of alarms by email";
//! docs/site-file.md).
//!
//! Contract: every table is optional. [`SftpConfig::validate`],
//! [`EmailConfig::validate`] and [`AlarmRule::validate`] refuse values the
//! product does not offer, naming the field and what is allowed. These are
//! the commissioning values: the device copies them into its NV memory at
//! first boot, and its webpages and JSON API change them from then on.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SiteError, invalid};

fn port_22() -> u16 {
    22
}

fn port_25() -> u16 {
    25
}

fn dot() -> String {
    ".".into()
}

/// `[device.panel_server.publication.sftp]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    /// SFTP server (an IPv4 address: the device has no DNS resolver here).
    pub host: Ipv4Addr,
    /// TCP port (default 22).
    #[serde(default = "port_22")]
    pub port: u16,
    pub user: String,
    /// Password authentication (one of `password` and `key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM/OpenSSH private key file for public-key authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Remote directory the files go to (default: the login directory).
    #[serde(default = "dot")]
    pub dir: String,
    /// Host-key fingerprint to pin (`SHA256:...`, as `ssh-keygen -lf`
    /// prints it); default: the key the server shows at the first
    /// connection is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// A remote path or user name: printable, no control characters.
fn printable(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

impl SftpConfig {
    pub fn validate(&self, at: &str) -> Result<(), SiteError> {
        if self.port == 0 {
            return Err(invalid(
                format!("{at}.port"),
                "0 is not a port; use 1 to 65535",
            ));
        }
        if !printable(&self.user) || self.user.len() > 64 {
            return Err(invalid(
                format!("{at}.user"),
                "the user name must be 1 to 64 printable characters",
            ));
        }
        match (&self.password, &self.key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{at}.key_file"),
                    "give either password or key_file, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    at.to_string(),
                    "SFTP needs a password or a key_file (PEM private key)",
                ));
            }
            _ => {}
        }
        if !printable(&self.dir) {
            return Err(invalid(
                format!("{at}.dir"),
                "the remote directory must be printable characters (default \".\")",
            ));
        }
        if let Some(f) = &self.fingerprint
            && !valid_fingerprint(f)
        {
            return Err(invalid(
                format!("{at}.fingerprint"),
                format!(
                    "{f:?} is not a SHA256 fingerprint; write it as ssh-keygen -lf prints it: SHA256:<43 base64 characters>"
                ),
            ));
        }
        Ok(())
    }
}

/// `SHA256:` then 43 unpadded base64 characters (OpenSSH's format).
pub fn valid_fingerprint(f: &str) -> bool {
    f.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    })
}

/// `[device.panel_server.email]` (PAS800 models only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server (IPv4 address).
    pub server: Ipv4Addr,
    /// SMTP port (default 25; STARTTLS is always required).
    #[serde(default = "port_25")]
    pub port: u16,
    /// Sender address.
    pub from: String,
    /// Recipients (1 to 10).
    pub to: Vec<String>,
    /// SMTP AUTH user (AUTH PLAIN, only inside TLS); none: no AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the CA that signed the SMTP server's certificate.
    pub ca_file: PathBuf,
}

/// A mailbox the SMTP client can put in `MAIL FROM`/`RCPT TO`.
pub fn valid_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && a.len() <= 254
        && a.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'"' | b'\\'))
}

impl EmailConfig {
    pub fn validate(&self, at: &str) -> Result<(), SiteError> {
        if self.port == 0 {
            return Err(invalid(
                format!("{at}.port"),
                "0 is not a port; use 1 to 65535",
            ));
        }
        if !valid_address(&self.from) {
            return Err(invalid(
                format!("{at}.from"),
                format!("{:?} is not an email address (name@domain)", self.from),
            ));
        }
        if self.to.is_empty() || self.to.len() > 10 {
            return Err(invalid(
                format!("{at}.to"),
                "give 1 to 10 recipient addresses",
            ));
        }
        for (i, t) in self.to.iter().enumerate() {
            if !valid_address(t) {
                return Err(invalid(
                    format!("{at}.to[{i}]"),
                    format!("{t:?} is not an email address (name@domain)"),
                ));
            }
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(invalid(
                format!("{at}.user"),
                "SMTP authentication needs both user and password (or neither)",
            ));
        }
        Ok(())
    }
}

/// `[[device.panel_server.alarm]]`: a threshold on a logged measurement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlarmRule {
    /// Field device id (a serial or wireless device of this Panel Server).
    pub device: String,
    /// Measurement code (VAN, IA, P, PF, E, T, RH, CO2).
    pub measurement: String,
    /// Raised while the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Raised while the value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

impl AlarmRule {
    pub fn validate(&self, at: &str, field_ids: &[&str]) -> Result<(), SiteError> {
        if !field_ids.contains(&self.device.as_str()) {
            return Err(invalid(
                format!("{at}.device"),
                format!(
                    "{:?} is not a serial or wireless device of this Panel Server; it has: {}",
                    self.device,
                    field_ids.join(", ")
                ),
            ));
        }
        if !super::ps_datalog::MEASUREMENT_CODES
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&self.measurement))
        {
            return Err(invalid(
                format!("{at}.measurement"),
                format!(
                    "{:?} is not a measurement; use {}",
                    self.measurement,
                    super::ps_datalog::MEASUREMENT_CODES.join(", ")
                ),
            ));
        }
        if self.above.is_none() && self.below.is_none() {
            return Err(invalid(
                at.to_string(),
                "a threshold alarm needs above = X and/or below = Y",
            ));
        }
        if [self.above, self.below]
            .iter()
            .flatten()
            .any(|v| !v.is_finite())
        {
            return Err(invalid(at.to_string(), "thresholds must be finite numbers"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sftp() -> SftpConfig {
        SftpConfig {
            host: "127.0.0.1".parse().unwrap(),
            port: 22,
            user: "ps".into(),
            password: Some("x".into()),
            key_file: None,
            dir: ".".into(),
            fingerprint: None,
        }
    }

    #[test]
    fn sftp_needs_one_credential_and_a_real_fingerprint() {
        assert!(sftp().validate("p").is_ok());
        let mut c = sftp();
        c.key_file = Some("/k".into());
        assert!(
            c.validate("p")
                .unwrap_err()
                .to_string()
                .contains("p.key_file")
        );
        c.password = None;
        c.key_file = None;
        assert!(
            c.validate("p")
                .unwrap_err()
                .to_string()
                .contains("password or a key_file")
        );
        let mut c = sftp();
        c.fingerprint = Some("MD5:aa:bb".into());
        assert!(
            c.validate("p")
                .unwrap_err()
                .to_string()
                .contains("p.fingerprint")
        );
        assert!(valid_fingerprint(
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
        ));
    }

    #[test]
    fn email_addresses_and_alarm_rules_are_checked() {
        let e = EmailConfig {
            server: "127.0.0.1".parse().unwrap(),
            port: 25,
            from: "ps@site.example".into(),
            to: vec!["ops@site.example".into(), "bad".into()],
            user: None,
            password: None,
            ca_file: "/ca.pem".into(),
        };
        assert!(e.validate("m").unwrap_err().to_string().contains("m.to[1]"));
        let r = AlarmRule {
            device: "pt-a".into(),
            measurement: "P".into(),
            above: None,
            below: None,
        };
        assert!(
            r.validate("a", &["pt-a"])
                .unwrap_err()
                .to_string()
                .contains("above")
        );
        let r = AlarmRule {
            above: Some(10.0),
            ..r
        };
        assert!(r.validate("a", &["pt-a"]).is_ok());
        assert!(
            r.validate("a", &["x"])
                .unwrap_err()
                .to_string()
                .contains("a.device")
        );
    }
}
