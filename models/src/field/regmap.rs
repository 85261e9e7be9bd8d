//! Register maps of field devices, loaded as data from
//! `models/data/registers.json` (generated once by
//! `scripts/convert_registers.py` from the Panel Server Modbus file sheets
//! and devices.md §2; never hand-typed).
//!
//! Contract:
//! - A [`Map`] lists the registers of one device family: number (1-based),
//!   size, type, writability, no-value marker and function codes.
//! - [`Map::read`] answers FC3/FC4 reads word by word: every word asked for
//!   must belong to a listed register, otherwise 0x02 (the same rule as the
//!   Panel Server's own registers). A read may start or end inside a
//!   multi-word register. Values are encoded big-endian, most significant
//!   register first; [`Value::Invalid`] gives the sheet's no-value marker.
//! - [`Map::check_write`] accepts an FC16 only if it covers exactly one
//!   register the sheet marks RW (0x02 otherwise, 0x03 for a wrong length).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::proto::modbus::{Exception, encode};

/// One register of a sheet.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// Register number (1-based; protocol address = reg - 1).
    pub reg: u16,
    pub section: String,
    pub words: u16,
    pub rw: bool,
    #[serde(rename = "type")]
    pub typ: String,
    pub unit: String,
    pub invalid: String,
    pub functions: Vec<u8>,
    pub description: String,
}

impl Entry {
    /// Whether the value is a measurement (no value while out of contact).
    pub fn is_measurement(&self) -> bool {
        ["Metering", "Energy", "Ambient", "Alarm", "Diagnostic"]
            .iter()
            .any(|s| self.section.contains(s))
    }

    /// The no-value marker of the sheet, as register words.
    pub fn invalid_words(&self) -> Vec<u16> {
        let hex = self.invalid.trim_start_matches("0x");
        let mut words: Vec<u16> = hex
            .as_bytes()
            .chunks(4)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .filter_map(|c| u16::from_str_radix(c, 16).ok())
            .collect();
        if words.len() != usize::from(self.words) {
            // Markers shorter than the register (e.g. "0x00" for ASCII) repeat their first word.
            let fill = if hex.chars().all(|c| c == '0') {
                0
            } else {
                0xFFFF
            };
            words = vec![fill; usize::from(self.words)];
        }
        words
    }
}

/// A value before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F32(f32),
    I64(i64),
    U16(u16),
    U32(u32),
    U64(u64),
    Text(String),
    Invalid,
}

/// The register map of one device family.
#[derive(Debug)]
pub struct Map {
    pub name: &'static str,
    pub entries: Vec<Entry>,
    /// protocol address of every word -> (entry index, word offset)
    words: BTreeMap<u16, (usize, u16)>,
}

/// Families in the data file.
pub const FAMILIES: [&str; 5] = ["powertag_energy", "th110", "trh", "co2", "meter"];

const DATA: &str = include_str!("../../data/registers.json");

/// The map of family `name` (one of [`FAMILIES`]).
pub fn map(name: &str) -> &'static Map {
    static MAPS: OnceLock<Vec<Map>> = OnceLock::new();
    let maps = MAPS.get_or_init(|| {
        let mut data: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(DATA).expect("models/data/registers.json is valid JSON");
        FAMILIES
            .iter()
            .map(|f| {
                let entries: Vec<Entry> =
                    serde_json::from_value(data.remove(*f).expect("family in registers.json"))
                        .expect("registers.json rows");
                Map::new(f, entries)
            })
            .collect()
    });
    maps.iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no register map {name}"))
}

impl Map {
    fn new(name: &'static str, entries: Vec<Entry>) -> Self {
        let mut words = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            for k in 0..e.words {
                words.insert(e.reg - 1 + k, (i, k));
            }
        }
        Self {
            name,
            entries,
            words,
        }
    }

    /// The entry of register number `reg`.
    pub fn entry(&self, reg: u16) -> Option<&Entry> {
        self.entries.iter().find(|e| e.reg == reg)
    }

    /// Encodes one entry's value.
    pub fn encode(entry: &Entry, v: &Value) -> Vec<u16> {
        let n = usize::from(entry.words);
        let mut w = match (v, entry.typ.as_str()) {
            (Value::Invalid, _) => return entry.invalid_words(),
            (Value::Text(s), _) => encode::ascii(s, n),
            (Value::F32(x), _) => encode::f32(*x).to_vec(),
            (Value::I64(x), _) => encode::i64(*x).to_vec(),
            (Value::U64(x), _) => encode::u64(*x).to_vec(),
            (Value::U32(x), _) if n == 1 => vec![*x as u16],
            (Value::U32(x), _) => encode::u32(*x).to_vec(),
            (Value::U16(x), _) if n == 2 => encode::u32(u32::from(*x)).to_vec(),
            (Value::U16(x), _) => vec![*x],
        };
        w.resize(n, 0);
        w
    }

    /// Reads `count` words from protocol address `addr`; `value` computes a register.
    pub fn read(
        &self,
        addr: u16,
        count: u16,
        mut value: impl FnMut(&Entry) -> Value,
    ) -> Result<Vec<u16>, Exception> {
        let mut out = Vec::with_capacity(usize::from(count));
        let mut cached: Option<(usize, Vec<u16>)> = None;
        for i in 0..count {
            let a = addr.checked_add(i).ok_or(Exception::IllegalDataAddress)?;
            let &(idx, off) = self.words.get(&a).ok_or(Exception::IllegalDataAddress)?;
            if cached.as_ref().map(|c| c.0) != Some(idx) {
                let e = &self.entries[idx];
                cached = Some((idx, Self::encode(e, &value(e))));
            }
            out.push(cached.as_ref().map(|c| c.1[usize::from(off)]).unwrap_or(0));
        }
        Ok(out)
    }

    /// Reads single words at scattered addresses (FC100-4).
    pub fn read_scattered(
        &self,
        addrs: &[u16],
        mut value: impl FnMut(&Entry) -> Value,
    ) -> Result<Vec<u16>, Exception> {
        addrs
            .iter()
            .map(|a| self.read(*a, 1, &mut value).map(|w| w[0]))
            .collect()
    }

    /// Checks an FC16 write of `len` words at `addr`; returns the register written.
    pub fn check_write(&self, addr: u16, len: usize) -> Result<&Entry, Exception> {
        let &(idx, off) = self.words.get(&addr).ok_or(Exception::IllegalDataAddress)?;
        let e = &self.entries[idx];
        if off != 0 || !e.rw {
            return Err(Exception::IllegalDataAddress);
        }
        if len != usize::from(e.words) {
            return Err(Exception::IllegalDataValue);
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_file_has_every_family() {
        for f in FAMILIES {
            assert!(map(f).entries.len() > 20, "{f}");
        }
        let pt = map("powertag_energy");
        let e = pt.entry(3204).unwrap();
        assert_eq!((e.words, e.typ.as_str(), e.rw), (4, "INT64", false));
        assert!(pt.entry(3260).unwrap().rw);
        assert_eq!(e.invalid_words(), vec![0x8000, 0, 0, 0]);
        assert_eq!(map("meter").entry(3060).unwrap().unit, "kW");
    }

    #[test]
    fn reads_cover_only_listed_words() {
        let pt = map("powertag_energy");
        let v = pt.read(3059, 2, |_| Value::F32(1.5)).unwrap();
        assert_eq!(v, encode::f32(1.5).to_vec());
        assert_eq!(
            pt.read(3059, 3, |_| Value::Invalid),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            pt.read(3203, 4, |_| Value::Invalid).unwrap(),
            vec![0x8000, 0, 0, 0]
        );
        assert_eq!(
            pt.check_write(3203, 4).map(|e| e.reg),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(pt.check_write(3259, 4).map(|e| e.reg), Ok(3260));
        assert_eq!(
            pt.check_write(3259, 2).map(|e| e.reg),
            Err(Exception::IllegalDataValue)
        );
    }
}
