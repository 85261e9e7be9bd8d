//! Firmware over the air for the Data Logger (issue 12 item 9; seed 004:
//! no firmware over USB, the cellular path only).
//!
//! Contract (docs/datalogger.md "Firmware over the air"):
//! - An image arrives as the payload of a PUBLISH on `PREFIX/ID/firmware`
//!   (the broker keeps it retained; the logger subscribes every session).
//! - [`judge`] decides what to do with it, as plain state: the image must
//!   be in the project's signed format ([`crate::proto::firmware`]) and
//!   verify against the vendor key for family [`FAMILY`] — that check is
//!   [`crate::security::firmware::verify`], the one the Panel Server uses.
//!   A verified image newer than the running version installs (the logger
//!   stores it and reboots into it); the running version again is nothing
//!   new (a retained image is seen at every session); an older one is
//!   ignored; anything else is refused with the verifier's reason, and the
//!   logger keeps running what it runs (no reboot).
//! - [`Outcome::report`] is the JSON the logger publishes on
//!   `PREFIX/ID/firmware/status` (retained) so the server sees every
//!   refusal and installation.

use serde_json::json;

/// Firmware family of signed Data Logger images.
pub const FAMILY: &str = "Data Logger";
/// Factory firmware version of the logger.
pub const FACTORY_VERSION: &str = "001.000.000";

/// What the logger does with a received image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and newer: store it and reboot into it.
    Install { version: String },
    /// The version already running (a retained image seen again).
    Current,
    /// Verified but older than the running version: not installed.
    Older { version: String },
    /// Not a vendor-signed Data Logger image; the reason says why.
    Refused(String),
}

/// Decides what to do with `image` while `running` runs.
pub fn judge(image: &[u8], running: &str) -> Outcome {
    match crate::security::firmware::verify(image, FAMILY) {
        Err(e) => Outcome::Refused(e.to_string()),
        // Versions are checked as MMM.mmm.ppp (fixed width): string order
        // is version order.
        Ok(img) if img.version.as_str() > running => Outcome::Install {
            version: img.version,
        },
        Ok(img) if img.version == running => Outcome::Current,
        Ok(img) => Outcome::Older {
            version: img.version,
        },
    }
}

/// An image the transport could not take (larger than the MQTT packet
/// limit); reported like a refusal.
pub fn too_large(len: usize, limit: usize) -> Outcome {
    Outcome::Refused(format!(
        "the image message is {len} bytes; the logger takes at most {limit}"
    ))
}

impl Outcome {
    /// The status report (JSON) for the server; `None` when there is
    /// nothing new to say.
    pub fn report(&self, running: &str) -> Option<String> {
        let (result, image, detail) = match self {
            Outcome::Current => return None,
            Outcome::Install { version } => (
                "installed",
                Some(version),
                format!("firmware {version} verified and installed; rebooting"),
            ),
            Outcome::Older { version } => (
                "ignored",
                Some(version),
                format!("image {version} is older than the running {running}"),
            ),
            Outcome::Refused(why) => ("refused", None, format!("image refused: {why}")),
        };
        Some(
            json!({
                "result": result,
                "image": image,
                "running": running,
                "detail": detail,
            })
            .to_string(),
        )
    }

    /// A one-line message for events and the device's details.
    pub fn message(&self, running: &str) -> Option<String> {
        let r: serde_json::Value = serde_json::from_str(&self.report(running)?).ok()?;
        r["detail"].as_str().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::firmware::{self, PANEL_SERVER_FAMILY};

    fn vendor() -> ed25519_dalek::SigningKey {
        firmware::signing_key(include_str!("../../../keys/lab-vendor.key")).unwrap()
    }

    #[test]
    fn only_newer_vendor_signed_data_logger_images_install() {
        let img = firmware::sign(&vendor(), FAMILY, "001.001.000", b"fw").unwrap();
        assert_eq!(
            judge(&img, FACTORY_VERSION),
            Outcome::Install {
                version: "001.001.000".into()
            }
        );
        assert_eq!(judge(&img, "001.001.000"), Outcome::Current);
        assert_eq!(
            judge(&img, "002.000.000"),
            Outcome::Older {
                version: "001.001.000".into()
            }
        );
        // Tampered payload: the signature no longer verifies.
        let mut bad = img.clone();
        let n = bad.len();
        bad[n - 66] ^= 0x55;
        match judge(&bad, FACTORY_VERSION) {
            Outcome::Refused(why) => assert!(why.starts_with("wrong signature"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Signed by another key.
        let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let foreign = firmware::sign(&other, FAMILY, "009.000.000", b"fw").unwrap();
        assert!(matches!(
            judge(&foreign, FACTORY_VERSION),
            Outcome::Refused(w) if w.contains("not signed by the vendor key")
        ));
        // A vendor image of another family.
        let ps = firmware::sign(&vendor(), PANEL_SERVER_FAMILY, "009.000.000", b"fw").unwrap();
        assert!(matches!(
            judge(&ps, FACTORY_VERSION),
            Outcome::Refused(w) if w.contains("\"Panel Server\"") && w.contains("\"Data Logger\"")
        ));
        // Not an image at all.
        assert!(matches!(
            judge(b"#!/bin/sh\nreboot\n", FACTORY_VERSION),
            Outcome::Refused(w) if w.contains("no FTFW header")
        ));
    }

    #[test]
    fn reports_name_the_outcome() {
        let r: serde_json::Value = serde_json::from_str(
            &Outcome::Refused("wrong signature: x".into())
                .report(FACTORY_VERSION)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r["result"], "refused");
        assert_eq!(r["running"], FACTORY_VERSION);
        assert!(r["detail"].as_str().unwrap().contains("wrong signature"));
        assert_eq!(Outcome::Current.report(FACTORY_VERSION), None);
        let m = Outcome::Install {
            version: "001.001.000".into(),
        }
        .message(FACTORY_VERSION)
        .unwrap();
        assert!(m.contains("001.001.000") && m.contains("installed"), "{m}");
        assert!(matches!(too_large(5, 4), Outcome::Refused(w) if w.contains("at most 4")));
    }
}
