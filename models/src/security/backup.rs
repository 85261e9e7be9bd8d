//! Backup file encryption (DOCA0211 "Backup Function"): the configuration is
//! sealed with AES-256-GCM under a key derived from the backup password with
//! PBKDF2-HMAC-SHA256.
//!
//! File format: `FTBK` | version 1 (u8) | iterations (u32 BE) | salt (16) |
//! nonce (12) | ciphertext+tag. The header is authenticated as associated
//! data, so any change to the file or a wrong password fails [`open`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"FTBK";
const HEADER: usize = 4 + 1 + 4 + 16 + 12;

/// Why a backup file cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a Panel Server backup file (bad header)")]
    NotABackup,
    #[error("wrong backup password, or the backup file was modified")]
    WrongPassword,
}

fn key(password: &str, salt: &[u8], iterations: u32) -> Aes256Gcm {
    let mut k = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations.max(1), &mut k);
    Aes256Gcm::new(&k.into())
}

/// Encrypts `plain` with `password`.
pub fn seal(plain: &[u8], password: &str, iterations: u32) -> Vec<u8> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(HEADER + plain.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(1);
    out.extend_from_slice(&iterations.max(1).to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let ct = key(password, &salt, iterations)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &out,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer");
    out.extend_from_slice(&ct);
    out
}

/// Decrypts a file made by [`seal`].
pub fn open(file: &[u8], password: &str) -> Result<Vec<u8>, BackupError> {
    if file.len() < HEADER + 16 || &file[..4] != MAGIC || file[4] != 1 {
        return Err(BackupError::NotABackup);
    }
    let iterations = u32::from_be_bytes(file[5..9].try_into().expect("4 bytes"));
    // A crafted header must not make the device hash for minutes: no
    // Panel Server seals with more than the site file allows.
    if iterations > *fieldtwin_emulator::site::PBKDF2_ITERATIONS.end() {
        return Err(BackupError::NotABackup);
    }
    let (salt, nonce) = (&file[9..25], &file[25..37]);
    key(password, salt, iterations)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &file[HEADER..],
                aad: &file[..HEADER],
            },
        )
        .map_err(|_| BackupError::WrongPassword)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_wrong_password() {
        let f = seal(b"{\"a\":1}", "Back-up!", 10);
        assert_eq!(open(&f, "Back-up!").unwrap(), b"{\"a\":1}");
        assert_eq!(open(&f, "Back-up?"), Err(BackupError::WrongPassword));
        let mut t = f.clone();
        let n = t.len() - 1;
        t[n] ^= 1;
        assert_eq!(open(&t, "Back-up!"), Err(BackupError::WrongPassword));
        assert_eq!(open(b"hello", "x"), Err(BackupError::NotABackup));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(open(&b, "pw").is_err());
        }
    }
}
