//! Passwords: salted slow hashes and the composition rules of DOCA0211
//! "Password Management" and "Backup Function".
//!
//! Contract:
//! - [`Hashed::new`] stores PBKDF2-HMAC-SHA256 with a 16-byte per-account
//!   random salt and the site file's iteration count; [`Hashed::verify`]
//!   compares in constant time. Passwords are never logged or stored clear.
//! - [`check`] refuses a password with a [`RuleError`] naming the failed rule.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Default PBKDF2 iterations (OWASP 2023 recommends 600,000 for
/// PBKDF2-HMAC-SHA256; [NF] the site file can lower it for speed).
pub const DEFAULT_ITERATIONS: u32 = 100_000;

/// The seed's special characters: space and ASCII punctuation.
pub const SPECIALS: &str = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// A stored password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashed {
    pub iterations: u32,
    pub salt: String,
    pub hash: String,
}

impl Hashed {
    pub fn new(password: &str, iterations: u32) -> Self {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        Self::with_salt(password, &salt, iterations)
    }

    fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations.max(1), &mut out);
        Self {
            iterations: iterations.max(1),
            salt: hex(salt),
            hash: hex(&out),
        }
    }

    pub fn verify(&self, password: &str) -> bool {
        let Some(salt) = unhex(&self.salt) else {
            return false;
        };
        let other = Self::with_salt(password, &salt, self.iterations);
        let (a, b) = (self.hash.as_bytes(), other.hash.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Which password a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Web user and SupportUser.
    User,
    /// Wi-Fi access point.
    WifiAp,
    /// Backup file encryption.
    Backup,
}

/// A failed password rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the password must have between {min} and {max} characters (it has {got})")]
    Length { min: usize, max: usize, got: usize },
    #[error(
        "the password may contain only letters, digits, space and the special characters {SPECIALS}"
    )]
    Character,
    #[error(
        "the password must contain at least three of: uppercase, lowercase, digits, special characters"
    )]
    ThreeClasses,
    #[error("the password must contain at least one {0}")]
    Missing(&'static str),
}

/// Checks `pw` against the rules of `kind`.
pub fn check(kind: Kind, pw: &str) -> Result<(), RuleError> {
    let (min, max) = match kind {
        Kind::User => (8, 50),
        Kind::WifiAp => (8, 32),
        Kind::Backup => (6, 32),
    };
    let got = pw.chars().count();
    if got < min || got > max {
        return Err(RuleError::Length { min, max, got });
    }
    if pw
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || SPECIALS.contains(c)))
    {
        return Err(RuleError::Character);
    }
    let upper = pw.chars().any(|c| c.is_ascii_uppercase());
    let lower = pw.chars().any(|c| c.is_ascii_lowercase());
    let digit = pw.chars().any(|c| c.is_ascii_digit());
    let special = pw.chars().any(|c| SPECIALS.contains(c));
    match kind {
        Kind::User => {
            if [upper, lower, digit, special]
                .iter()
                .filter(|&&b| b)
                .count()
                < 3
            {
                return Err(RuleError::ThreeClasses);
            }
        }
        Kind::WifiAp | Kind::Backup => {
            let third = if kind == Kind::WifiAp {
                (digit, "digit")
            } else {
                (special, "special character")
            };
            for (ok, what) in [
                (upper, "uppercase letter"),
                (lower, "lowercase letter"),
                third,
            ] {
                if !ok {
                    return Err(RuleError::Missing(what));
                }
            }
        }
    }
    Ok(())
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of a hex string.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_verifies_and_is_salted() {
        let a = Hashed::new("Secret-123", 1000);
        let b = Hashed::new("Secret-123", 1000);
        assert!(a.verify("Secret-123"));
        assert!(!a.verify("Secret-124"));
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
        assert!(!a.hash.contains("Secret"));
    }

    #[test]
    fn rules_name_what_failed() {
        assert!(matches!(
            check(Kind::User, "Ab1"),
            Err(RuleError::Length { min: 8, .. })
        ));
        assert_eq!(check(Kind::User, "abcdefgh1"), Err(RuleError::ThreeClasses));
        assert_eq!(check(Kind::User, "abcdefG1"), Ok(()));
        assert_eq!(check(Kind::User, "abc def!1"), Ok(()));
        assert_eq!(check(Kind::User, "abcdéfG1"), Err(RuleError::Character));
        assert_eq!(
            check(Kind::WifiAp, "abcdefG!"),
            Err(RuleError::Missing("digit"))
        );
        assert!(matches!(
            check(Kind::WifiAp, &"aB1".repeat(11)),
            Err(RuleError::Length { max: 32, .. })
        ));
        assert_eq!(
            check(Kind::Backup, "abcDE1"),
            Err(RuleError::Missing("special character"))
        );
        assert_eq!(
            check(Kind::Backup, "abcD!"),
            Err(RuleError::Length {
                min: 6,
                max: 32,
                got: 5
            })
        );
        assert_eq!(check(Kind::Backup, "abcD!x"), Ok(()));
        assert!(RuleError::ThreeClasses.to_string().contains("three"));
    }

    proptest! {
        #[test]
        fn hex_round_trips(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unhex(&hex(&b)), Some(b));
        }

        #[test]
        fn check_never_panics(s in "\\PC{0,60}") {
            for k in [Kind::User, Kind::WifiAp, Kind::Backup] { let _ = check(k, &s); }
        }
    }
}
