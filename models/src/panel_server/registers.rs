//! The Panel Server's own Modbus registers, answered at unit id 255
//! (Panel Server Modbus file, sheet "Panel Server"; devices.md §1.2).
//!
//! Contract: plain state, no I/O. [`OwnRegisters::read`] answers a block
//! read only if every register of the block exists (else 0x02, as for any
//! unmapped address); [`OwnRegisters::write`] accepts only the date/time
//! block (0x0073, 4 registers, FC16) and answers 0x02 for any other address,
//! 0x03 for a date/time that does not exist. Values are big-endian, most
//! significant register first; ASCII is NUL-padded.
//! The RTC is read only for a request whose registers include the date/time
//! block ([`touches_datetime`]); a [`Live`] without it answers 0x02 there.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};

use crate::proto::modbus::{Exception, encode};

/// Protocol address (register - 1) of the date/time block.
pub const DATETIME: u16 = 0x0073;
/// Protocol address of the health register.
pub const HEALTH: u16 = 0x009E;
/// Protocol address of the firmware version.
pub const FIRMWARE: u16 = 0x0078;
/// Protocol address of the commercial reference.
pub const COMMERCIAL_REFERENCE: u16 = 0x003C;
/// First register of the wireless device table (RF-ID of device 1).
pub const WIRELESS_TABLE: u16 = 0x01F4;
/// Number of slots in the wireless device table.
pub const WIRELESS_SLOTS: u16 = 100;

/// Health state register values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Nominal = 0,
    Degraded = 1,
    OutOfOrder = 2,
}

/// Identification strings of a Panel Server.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub range: String,
    pub family: String,
    pub vendor_url: String,
    pub commercial_reference: String,
    pub hardware_version: String,
    pub serial: String,
    pub capability: String,
    pub additional_capability: String,
    pub manufacturer: String,
    pub product_id: u16,
    pub product_model: String,
    pub application_name: String,
}

/// One slot of the wireless device table: a paired device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WirelessSlot {
    pub rf_id: u64,
    pub unit: u8,
}

/// The register image at unit 255.
#[derive(Debug, Clone)]
pub struct OwnRegisters {
    fixed: Vec<(u16, u16)>,
}

/// What changes between reads: the RTC (as DATETIME words), health and,
/// on the L models, the digital inputs' registers.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// The RTC's reading; `None` when the request does not read the
    /// date/time block (see [`touches_datetime`]).
    pub datetime: Option<[u16; 4]>,
    pub health: Health,
    /// The digital inputs block ([`super::inputs`]); `None` on models
    /// without inputs, where those addresses are not registers.
    pub inputs: Option<super::inputs::Image>,
}

impl Live {
    pub fn new(rtc: DateTime<Utc>, health: Health) -> Self {
        Self {
            datetime: Some(datetime_words(rtc)),
            health,
            inputs: None,
        }
    }

    /// For a request that does not read the date/time block: the RTC is
    /// not read (most of a small read's cost).
    pub fn without_datetime(health: Health) -> Self {
        Self {
            datetime: None,
            health,
            inputs: None,
        }
    }
}

/// Last protocol address of the date/time block.
const DATETIME_LAST: u16 = DATETIME + 3;

/// Whether the block of `count` registers from `addr` includes a date/time
/// register (the only ones that need the RTC).
pub fn touches_datetime(addr: u16, count: u16) -> bool {
    let end = u32::from(addr) + u32::from(count);
    addr <= DATETIME_LAST && end > u32::from(DATETIME)
}

fn put(map: &mut Vec<(u16, u16)>, addr: u16, words: &[u16]) {
    map.extend((addr..).zip(words.iter().copied()));
}

impl OwnRegisters {
    /// The image of one boot: identity, installed firmware, paired devices.
    pub fn new(id: &Identity, firmware: &str, wireless: &[WirelessSlot]) -> Self {
        let mut m = Vec::with_capacity(256 + 5 * usize::from(WIRELESS_SLOTS));
        put(&mut m, FIRMWARE, &encode::ascii(firmware, 6));
        put(&mut m, 0x000A, &encode::ascii(&id.range, 16));
        put(&mut m, 0x001A, &encode::ascii(&id.family, 16));
        put(&mut m, 0x002A, &encode::ascii(&id.vendor_url, 17));
        put(
            &mut m,
            COMMERCIAL_REFERENCE,
            &encode::ascii(&id.commercial_reference, 16),
        );
        put(&mut m, 0x0050, &encode::ascii(&id.hardware_version, 6));
        put(&mut m, 0x0064, &encode::ascii(&id.serial, 6));
        put(&mut m, 0x007E, &encode::ascii(&id.capability, 16));
        put(
            &mut m,
            0x008E,
            &encode::ascii(&id.additional_capability, 16),
        );
        put(&mut m, 0x009F, &encode::ascii(&id.manufacturer, 16));
        put(&mut m, 0x1605, &encode::ascii(&id.application_name, 32));
        put(&mut m, 0xF002, &[id.product_id]);
        put(&mut m, 0xF003, &encode::ascii(&id.product_model, 16));
        for n in 0..WIRELESS_SLOTS {
            let base = WIRELESS_TABLE + 5 * n;
            match wireless.get(usize::from(n)) {
                Some(s) => {
                    put(&mut m, base, &encode::u64(s.rf_id));
                    put(&mut m, base + 4, &[u16::from(s.unit)]);
                }
                None => put(&mut m, base, &[0xFFFF; 5]),
            }
        }
        // Sorted by address, the last word put at an address winning.
        m.reverse();
        m.sort_by_key(|&(a, _)| a);
        m.dedup_by_key(|&mut (a, _)| a);
        Self { fixed: m }
    }

    /// The register at `addr`. `hint` is where the image is looked at
    /// first (then set past the entry found): the registers of a block are
    /// consecutive entries, so a block read searches the image once.
    fn word(&self, addr: u16, live: &Live, hint: &mut usize) -> Option<u16> {
        match addr {
            DATETIME..=DATETIME_LAST => live.datetime.map(|d| d[usize::from(addr - DATETIME)]),
            HEALTH => Some(live.health as u16),
            super::inputs::FIRST..=super::inputs::LAST => live.inputs.as_ref()?.word(addr),
            _ => {
                let i = match self.fixed.get(*hint) {
                    Some(&(a, _)) if a == addr => *hint,
                    _ => self.fixed.binary_search_by_key(&addr, |&(a, _)| a).ok()?,
                };
                *hint = i + 1;
                Some(self.fixed[i].1)
            }
        }
    }

    /// Reads `count` registers from `addr`.
    pub fn read(&self, addr: u16, count: u16, live: &Live) -> Result<Vec<u16>, Exception> {
        let mut hint = usize::MAX;
        // A Modbus read is at most 125 registers.
        let mut out = Vec::with_capacity(usize::from(count.min(125)));
        for i in 0..count {
            let word = addr
                .checked_add(i)
                .and_then(|a| self.word(a, live, &mut hint))
                .ok_or(Exception::IllegalDataAddress)?;
            out.push(word);
        }
        Ok(out)
    }

    /// Reads a list of single registers (FC100-4).
    pub fn read_scattered(&self, addrs: &[u16], live: &Live) -> Result<Vec<u16>, Exception> {
        let mut hint = usize::MAX;
        addrs
            .iter()
            .map(|a| {
                self.word(*a, live, &mut hint)
                    .ok_or(Exception::IllegalDataAddress)
            })
            .collect()
    }

    /// Validates an FC16 write; returns the new date/time it sets.
    pub fn write(&self, addr: u16, values: &[u16]) -> Result<DateTime<Utc>, Exception> {
        if addr != DATETIME || values.len() != 4 {
            return Err(Exception::IllegalDataAddress);
        }
        parse_datetime([values[0], values[1], values[2], values[3]])
            .ok_or(Exception::IllegalDataValue)
    }
}

/// Encodes a date/time as the 4-register DATETIME type.
pub fn datetime_words(t: DateTime<Utc>) -> [u16; 4] {
    let year = (t.year() - 2000).clamp(0, 127) as u16;
    let ms = (t.second() * 1000 + t.timestamp_subsec_millis().min(999)) as u16;
    [
        year,
        ((t.month() as u16) << 8) | t.day() as u16,
        ((t.hour() as u16) << 8) | t.minute() as u16,
        ms,
    ]
}

/// Decodes the 4-register DATETIME type; `None` if it is not a real date.
pub fn parse_datetime(w: [u16; 4]) -> Option<DateTime<Utc>> {
    let year = 2000 + i32::from(w[0] & 0x7F);
    let month = u32::from((w[1] >> 8) & 0x0F);
    let day = u32::from(w[1] & 0x1F);
    let hour = u32::from((w[2] >> 8) & 0x1F);
    let minute = u32::from(w[2] & 0x3F);
    if w[3] > 59_999 {
        return None;
    }
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_milli_opt(
        hour,
        minute,
        u32::from(w[3]) / 1000,
        u32::from(w[3]) % 1000,
    )?;
    Utc.from_local_datetime(&naive).single()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identity() -> Identity {
        Identity {
            range: "EcoStruxure".into(),
            family: "Panel Server Universal".into(),
            vendor_url: "www.se.com".into(),
            commercial_reference: "PAS600L".into(),
            hardware_version: "000.000.002".into(),
            serial: "NK231730251".into(),
            capability: "Gateway".into(),
            additional_capability: "".into(),
            manufacturer: "Schneider Electric".into(),
            product_id: 1,
            product_model: "PAS600L".into(),
            application_name: "".into(),
        }
    }

    fn live() -> Live {
        Live::new(
            Utc.with_ymd_and_hms(2026, 11, 22, 10, 30, 15).unwrap(),
            Health::Nominal,
        )
    }

    #[test]
    fn commercial_reference_reads_as_ascii() {
        let r = OwnRegisters::new(&identity(), "002.002.000", &[]);
        let words = r.read(COMMERCIAL_REFERENCE, 8, &live()).unwrap();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(&bytes[..7], b"PAS600L");
        assert!(bytes[7..].iter().all(|b| *b == 0));
    }

    #[test]
    fn datetime_and_health() {
        let r = OwnRegisters::new(&identity(), "002.002.000", &[]);
        let w = r.read(DATETIME, 4, &live()).unwrap();
        assert_eq!(w, vec![26, (11 << 8) | 22, (10 << 8) | 30, 15_000]);
        assert_eq!(r.read(HEALTH, 1, &live()).unwrap(), vec![0]);
    }

    #[test]
    fn unmapped_and_read_only_addresses() {
        let r = OwnRegisters::new(&identity(), "002.002.000", &[]);
        assert_eq!(
            r.read(0x0000, 1, &live()),
            Err(Exception::IllegalDataAddress)
        );
        // A block running off the end of the health register.
        assert_eq!(
            r.read(0x00AE, 2, &live()),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            r.write(COMMERCIAL_REFERENCE, &[0x4142]),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            r.write(DATETIME, &[26, 0x0D01, 0, 0]),
            Err(Exception::IllegalDataValue)
        );
        assert_eq!(
            r.write(DATETIME, &[26, 0x0101]),
            Err(Exception::IllegalDataAddress)
        );
    }

    #[test]
    fn digital_inputs_exist_only_with_an_image() {
        let r = OwnRegisters::new(&identity(), "002.002.000", &[]);
        // A model without inputs: not registers (0x02).
        assert_eq!(
            r.read(super::super::inputs::FIRST, 1, &live()),
            Err(Exception::IllegalDataAddress)
        );
        // An L model: the inputs' image answers, even with nothing wired.
        let mut l = live();
        l.inputs = Some(super::super::inputs::Bank::new(&[]).image(std::time::Duration::ZERO));
        assert_eq!(
            r.read(super::super::inputs::FIRST, 2, &l),
            Ok(vec![0xFFFF, 0xFFFF])
        );
        // A block from the wireless table into the inputs reads across.
        assert_eq!(r.read(0x03E7, 2, &l), Ok(vec![0xFFFF, 0xFFFF]));
    }

    #[test]
    fn wireless_table_lists_slots_and_empty_ones() {
        let slots = [WirelessSlot {
            rf_id: 0x2A3B0001,
            unit: 100,
        }];
        let r = OwnRegisters::new(&identity(), "002.002.000", &slots);
        assert_eq!(
            r.read(WIRELESS_TABLE, 5, &live()).unwrap(),
            vec![0, 0, 0x2A3B, 0x0001, 100]
        );
        assert_eq!(
            r.read(WIRELESS_TABLE + 9, 1, &live()).unwrap(),
            vec![0xFFFF]
        );
        assert_eq!(
            r.read(WIRELESS_TABLE + 5 * 99 + 4, 1, &live()).unwrap(),
            vec![0xFFFF]
        );
    }

    #[test]
    fn the_rtc_is_needed_exactly_for_the_datetime_block() {
        assert!(!touches_datetime(0, DATETIME));
        assert!(touches_datetime(0, DATETIME + 1));
        assert!(touches_datetime(DATETIME + 3, 1));
        assert!(!touches_datetime(DATETIME + 4, 10));
        assert!(touches_datetime(0x0070, 10));
        assert!(!touches_datetime(0xFFFF, 1));
        let r = OwnRegisters::new(&identity(), "002.002.000", &[]);
        // Without the RTC everything else reads the same.
        let bare = Live::without_datetime(Health::Nominal);
        for (addr, count) in [(COMMERCIAL_REFERENCE, 8), (HEALTH, 1), (FIRMWARE, 6)] {
            assert!(!touches_datetime(addr, count));
            assert_eq!(r.read(addr, count, &bare), r.read(addr, count, &live()));
        }
        assert_eq!(
            r.read(DATETIME, 1, &bare),
            Err(Exception::IllegalDataAddress)
        );
    }

    /// Every block read equals reading its registers one at a time (the
    /// block read walks the image instead of searching every register).
    #[test]
    fn block_reads_match_single_reads() {
        let slots = [WirelessSlot {
            rf_id: 0x2A3B0001,
            unit: 100,
        }];
        let r = OwnRegisters::new(&identity(), "002.002.000", &slots);
        let l = live();
        let single = |a: u16| r.read(a, 1, &l).ok().map(|w| w[0]);
        let mut found = 0;
        for addr in (0u16..0x0700).chain(0xF000..0xF020) {
            for count in [1u16, 2, 7, 16, 125] {
                let want: Option<Vec<u16>> = (0..count)
                    .map(|i| addr.checked_add(i).and_then(single))
                    .collect();
                let got = r.read(addr, count, &l).ok();
                assert_eq!(got, want, "{addr:#06x} x {count}");
                found += usize::from(got.is_some());
            }
        }
        assert!(found > 1000, "{found} readable blocks");
        let addrs = [FIRMWARE + 1, FIRMWARE, DATETIME, HEALTH, 0xF002];
        let want: Vec<u16> = addrs.iter().map(|a| single(*a).unwrap()).collect();
        assert_eq!(r.read_scattered(&addrs, &l), Ok(want));
        assert_eq!(
            r.read_scattered(&[FIRMWARE, 0x0000], &l),
            Err(Exception::IllegalDataAddress)
        );
    }

    proptest! {
        #[test]
        fn datetime_round_trips(secs in 946_684_800i64..4_102_444_800i64, ms in 0u32..1000) {
            let t = Utc.timestamp_opt(secs, ms * 1_000_000).unwrap();
            prop_assert_eq!(parse_datetime(datetime_words(t)), Some(t));
        }

        #[test]
        fn any_words_parse_without_panic(w: [u16; 4]) {
            let _ = parse_datetime(w);
        }
    }
}
