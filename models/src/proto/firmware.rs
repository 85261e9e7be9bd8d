//! Signed firmware image format of the twin (DOCA0211 "Security Features":
//! only vendor-signed firmware installs, and the signature is checked at
//! every boot). [NF] layout, documented in docs/panel-server.md:
//!
//! ```text
//! "FTFW"            4  magic
//! format            1  = 1
//! family length     1  then the target model family (UTF-8)
//! version length    1  then the version "MMM.mmm.ppp"
//! payload length    4  big-endian
//! payload           n
//! signature        64  Ed25519 over every byte before it
//! ```
//!
//! Contract: [`Image::parse`] never panics; every rejection is a
//! [`FirmwareError`] whose message starts with "wrong signature" when the
//! file is not an image signed by the vendor key, so a random upload reports
//! exactly that. [`LAB_VENDOR_PUBLIC`] is the lab-only vendor key built into
//! the twin (keys/lab-vendor.pub).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::security::password::unhex;

pub const MAGIC: &[u8; 4] = b"FTFW";
/// Target family accepted by every Panel Server model.
pub const PANEL_SERVER_FAMILY: &str = "Panel Server";
/// Largest accepted image (64 MiB).
pub const MAX_LEN: usize = 64 << 20;

/// The lab vendor public key (hex), lab-only.
pub const LAB_VENDOR_PUBLIC: &str = include_str!("../../../keys/lab-vendor.pub");

/// Why an image is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirmwareError {
    #[error("wrong signature: the file is not a firmware image (no FTFW header)")]
    NotAnImage,
    #[error("wrong signature: the image is truncated or malformed ({0})")]
    Malformed(&'static str),
    #[error("wrong signature: the image is not signed by the vendor key")]
    BadSignature,
    #[error("the image is for {got:?}, this device accepts only {want:?}")]
    WrongFamily { got: String, want: String },
    #[error("the version {0:?} is not of the form MMM.mmm.ppp (three groups of three digits)")]
    BadVersion(String),
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("the image is larger than {MAX_LEN} bytes")]
    TooLarge,
}

/// A verified image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub family: String,
    pub version: String,
    pub payload_len: usize,
}

/// Checks a version string `MMM.mmm.ppp`.
pub fn check_version(v: &str) -> Result<(), FirmwareError> {
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        Ok(())
    } else {
        Err(FirmwareError::BadVersion(v.to_string()))
    }
}

/// Parses a hex public key.
pub fn public_key(hex: &str) -> Result<VerifyingKey, FirmwareError> {
    let b: [u8; 32] = unhex(hex)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| FirmwareError::BadKey("a public key is 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&b).map_err(|e| FirmwareError::BadKey(e.to_string()))
}

/// Parses a hex signing key (32-byte seed).
pub fn signing_key(hex: &str) -> Result<SigningKey, FirmwareError> {
    let b: [u8; 32] = unhex(hex)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| FirmwareError::BadKey("a private key is 64 hex digits".into()))?;
    Ok(SigningKey::from_bytes(&b))
}

/// The lab vendor key.
pub fn lab_vendor_key() -> VerifyingKey {
    public_key(LAB_VENDOR_PUBLIC).expect("keys/lab-vendor.pub is a valid key")
}

/// Builds and signs an image.
pub fn sign(
    key: &SigningKey,
    family: &str,
    version: &str,
    payload: &[u8],
) -> Result<Vec<u8>, FirmwareError> {
    check_version(version)?;
    if family.len() > 255 {
        return Err(FirmwareError::Malformed("family longer than 255 bytes"));
    }
    if payload.len() > MAX_LEN {
        return Err(FirmwareError::TooLarge);
    }
    let mut out = Vec::with_capacity(payload.len() + 100);
    out.extend_from_slice(MAGIC);
    out.push(1);
    out.push(family.len() as u8);
    out.extend_from_slice(family.as_bytes());
    out.push(version.len() as u8);
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let sig = key.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    Ok(out)
}

/// The header of an image, without checking the signature.
pub fn header(b: &[u8]) -> Result<(Image, usize), FirmwareError> {
    if b.len() > MAX_LEN + 1024 {
        return Err(FirmwareError::TooLarge);
    }
    if b.len() < 5 || &b[..4] != MAGIC {
        return Err(FirmwareError::NotAnImage);
    }
    if b[4] != 1 {
        return Err(FirmwareError::Malformed("unknown format version"));
    }
    let mut at = 5;
    let mut field = |what: &'static str| -> Result<String, FirmwareError> {
        let n = *b.get(at).ok_or(FirmwareError::Malformed(what))? as usize;
        let s = b
            .get(at + 1..at + 1 + n)
            .ok_or(FirmwareError::Malformed(what))?;
        at += 1 + n;
        String::from_utf8(s.to_vec()).map_err(|_| FirmwareError::Malformed(what))
    };
    let family = field("family")?;
    let version = field("version")?;
    let len = b
        .get(at..at + 4)
        .ok_or(FirmwareError::Malformed("payload length"))?;
    let payload_len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    let signed = at + 4 + payload_len;
    if b.len() != signed + 64 {
        return Err(FirmwareError::Malformed("length does not match the header"));
    }
    Ok((
        Image {
            family,
            version,
            payload_len,
        },
        signed,
    ))
}

impl Image {
    /// Verifies `b` with `key` and checks it targets `family`.
    pub fn verify(b: &[u8], key: &VerifyingKey, family: &str) -> Result<Image, FirmwareError> {
        let (img, signed) = header(b)?;
        let sig = Signature::from_bytes(b[signed..].try_into().expect("64 bytes"));
        key.verify(&b[..signed], &sig)
            .map_err(|_| FirmwareError::BadSignature)?;
        if img.family != family {
            return Err(FirmwareError::WrongFamily {
                got: img.family,
                want: family.to_string(),
            });
        }
        check_version(&img.version)?;
        Ok(img)
    }
}

/// A new key pair as hex (secret seed, public key).
pub fn keygen() -> (String, String) {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let sk = SigningKey::from_bytes(&seed);
    (hex(&seed), hex(sk.verifying_key().as_bytes()))
}

/// A human-readable report of an image: header fields and whether the
/// signature verifies with `public` (hex) or, without it, the lab vendor key.
pub fn inspect(b: &[u8], public: Option<&str>) -> Result<String, FirmwareError> {
    let (img, signed) = header(b)?;
    let key = match public {
        Some(p) => public_key(p)?,
        None => lab_vendor_key(),
    };
    let verdict = match Image::verify(b, &key, &img.family) {
        Ok(_) => "valid".to_string(),
        Err(e) => e.to_string(),
    };
    Ok(format!(
        "format:    FTFW v1\nfamily:    {}\nversion:   {}\npayload:   {} bytes\nsigned:    {} bytes\nsignature: {}\nkey:       {}\n",
        img.family,
        img.version,
        img.payload_len,
        signed,
        verdict,
        hex(key.as_bytes())
    ))
}

use crate::security::password::hex;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn signed_image_verifies_and_tampering_fails() {
        let k = key();
        let img = sign(&k, PANEL_SERVER_FAMILY, "002.003.000", b"payload").unwrap();
        let v = Image::verify(&img, &k.verifying_key(), PANEL_SERVER_FAMILY).unwrap();
        assert_eq!(v.version, "002.003.000");
        assert_eq!(v.payload_len, 7);
        let mut bad = img.clone();
        bad[20] ^= 1;
        assert!(Image::verify(&bad, &k.verifying_key(), PANEL_SERVER_FAMILY).is_err());
        assert_eq!(
            Image::verify(&img, &lab_vendor_key(), PANEL_SERVER_FAMILY),
            Err(FirmwareError::BadSignature)
        );
        assert!(matches!(
            Image::verify(&img, &k.verifying_key(), "Other"),
            Err(FirmwareError::WrongFamily { .. })
        ));
        let text =
            Image::verify(b"hello world\n", &k.verifying_key(), PANEL_SERVER_FAMILY).unwrap_err();
        assert!(text.to_string().starts_with("wrong signature"), "{text}");
        assert!(sign(&k, PANEL_SERVER_FAMILY, "2.3", b"").is_err());
    }

    #[test]
    fn lab_key_pair_matches() {
        let sk = signing_key(include_str!("../../../keys/lab-vendor.key")).unwrap();
        assert_eq!(sk.verifying_key(), lab_vendor_key());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..300), magic: bool) {
            if magic && b.len() > 5 { b[..4].copy_from_slice(MAGIC); b[4] = 1; }
            prop_assert!(Image::verify(&b, &lab_vendor_key(), PANEL_SERVER_FAMILY).is_err());
        }

        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..500), v in "[0-9]{3}\\.[0-9]{3}\\.[0-9]{3}") {
            let img = sign(&key(), PANEL_SERVER_FAMILY, &v, &payload).unwrap();
            let h = Image::verify(&img, &key().verifying_key(), PANEL_SERVER_FAMILY).unwrap();
            prop_assert_eq!(h.version, v);
            prop_assert_eq!(h.payload_len, payload.len());
        }
    }
}
