//! The published file of one cut of rows, in the publication's format
//! (CSV or JSON, devices.md §1.6): whatever carries the files (HTTPS,
//! SFTP) asks this module for the name and the bytes.
//!
//! Contract: [`name`] and [`render`] are pure; the same rows, header, time
//! and format give the same name and bytes (a resent file is identical);
//! [`content_type`] follows the name's extension.

use chrono::{DateTime, Utc};
use fieldtwin_emulator::site::PublicationFormat;

use super::csv::{self, Header};
use super::json;
use super::store::Row;

/// The file name of the `n`-th file of that name in a publication at `at`.
pub fn name(format: PublicationFormat, h: &Header, at: DateTime<Utc>, n: usize) -> String {
    match format {
        PublicationFormat::Csv => csv::file_name(h, at, n),
        PublicationFormat::Json => json::file_name(h, at, n),
    }
}

/// The file's content.
pub fn render(format: PublicationFormat, h: &Header, rows: &[Row]) -> Vec<u8> {
    match format {
        PublicationFormat::Csv => csv::render(h, rows).into_bytes(),
        PublicationFormat::Json => json::render(h, rows).into_bytes(),
    }
}

/// The MIME type of a published file, by its name.
pub fn content_type(file_name: &str) -> &'static str {
    if file_name.ends_with(".json") {
        "application/json"
    } else {
        "text/csv"
    }
}
