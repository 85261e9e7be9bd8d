//! Signed firmware at boot and at install (DOCA0211 "Security Features":
//! only vendor-signed firmware installs, and the signature is checked at
//! every boot). The image format is [`crate::proto::firmware`].
//!
//! Contract: the installed image is kept raw in NV memory under [`IMAGE_KEY`];
//! [`verify_stored`] fails the boot (a [`BootError::Firmware`]) when it does
//! not verify against the vendor key for the model's `family`.

use fieldtwin_emulator::device::BootError;
use fieldtwin_emulator::storage::Nv;

use crate::proto::firmware::{self, FirmwareError, Image};

/// NV key of the installed firmware image.
pub const IMAGE_KEY: &str = "firmware_image";

/// Verifies `bytes` as an image of `family` signed by the vendor key.
pub fn verify(bytes: &[u8], family: &str) -> Result<Image, FirmwareError> {
    Image::verify(bytes, &firmware::lab_vendor_key(), family)
}

/// Verifies the stored image, if any.
pub fn verify_stored(nv: &Nv, family: &str) -> Result<Option<Image>, BootError> {
    match nv.get_raw(IMAGE_KEY)? {
        None => Ok(None),
        Some(bytes) => verify(&bytes, family).map(Some).map_err(|e| {
            BootError::Firmware(format!(
                "stored firmware image failed verification at boot: {e}"
            ))
        }),
    }
}
