//! The Data Logger's serial sensors (seed 004: "serial (RS485 and RS232)"
//! inputs): a Modbus RTU transmitter on the RS-485 line and an ASCII
//! transmitter on the RS-232 port, each read once per sample.
//!
//! Contract (docs/datalogger.md "Serial sensors"):
//! - RS-485: the logger is the Modbus RTU master. Every frame is really
//!   encoded with its CRC-16 by the project's RTU framing
//!   ([`crate::proto::modbus::rtu`], the serial-bus model's), decoded and
//!   checked by the sensor, whose answer the logger decodes and checks
//!   again. **[NF] register map** of the transmitter (holding or input
//!   registers, function 3 or 4): 0-1 the process value (float32, big
//!   endian, most significant register first), 2 the status (0 = ok). Other
//!   addresses get exception 0x02, other functions 0x01; a frame for
//!   another unit or with a bad CRC gets no answer, as on a real line.
//! - RS-232: **[NF] protocol** of the transmitter: the logger sends `M` CR,
//!   the transmitter answers `+0012.345*CC` CR LF, where CC is the XOR of
//!   every byte before `*` in two upper-case hex digits; `I` CR answers its
//!   identification; anything else `ERR` CR LF. The logger accepts an
//!   answer only if its checksum matches.
//! - Both transmitters run at [`SENSOR_BAUD`], 8N1; with the logger's
//!   ports at another rate (USB `baud set`) nothing readable comes back.
//!   An unpowered, disconnected or mismatched sensor answers nothing: the
//!   sample is `no_response`. Every parser here is total (proptest).

use crate::proto::modbus::{Exception, Request, Response, encode, rtu};

/// Baud rate of the serial transmitters ([NF]).
pub const SENSOR_BAUD: u32 = 9600;

/// A Modbus RTU transmitter on the RS-485 line.
#[derive(Debug, Clone)]
pub struct ModbusSensor {
    pub unit: u8,
    pub reading: f32,
    pub connected: bool,
}

impl ModbusSensor {
    pub fn new(unit: u8) -> Self {
        Self {
            unit,
            reading: 0.0,
            connected: true,
        }
    }

    fn registers(&self) -> [u16; 3] {
        let [hi, lo] = encode::f32(self.reading);
        [hi, lo, 0]
    }

    /// What the sensor puts on the line after the request `frame`.
    pub fn answer(&self, frame: &[u8]) -> Option<Vec<u8>> {
        if !self.connected {
            return None;
        }
        let (unit, pdu) = rtu::decode(frame).ok()?;
        if unit != self.unit {
            return None;
        }
        let function = pdu.first().copied().unwrap_or(0);
        let answer = match Request::decode(pdu) {
            Ok(Request::ReadHolding { addr, count } | Request::ReadInput { addr, count }) => {
                let regs = self.registers();
                let (a, n) = (usize::from(addr), usize::from(count));
                match regs.get(a..a + n) {
                    Some(values) if n > 0 => Response::Registers {
                        function,
                        values: values.to_vec(),
                    },
                    _ => Response::exception(function, Exception::IllegalDataAddress),
                }
            }
            Ok(_) => Response::exception(function, Exception::IllegalFunction),
            Err(e) => Response::exception(function, e),
        };
        Some(rtu::encode(unit, &answer.encode()))
    }
}

/// The logger reads the process value of the transmitter at `unit`:
/// function 3, registers 0-1. `None` when no valid answer comes.
pub fn modbus_measure(sensor: &ModbusSensor, unit: u8) -> Option<f64> {
    let request = rtu::encode(unit, &Request::ReadHolding { addr: 0, count: 2 }.encode());
    let frame = sensor.answer(&request)?;
    modbus_value(&frame, unit)
}

/// The value in an answer frame from `unit` to "function 3, registers 0-1".
pub fn modbus_value(frame: &[u8], unit: u8) -> Option<f64> {
    let (u, pdu) = rtu::decode(frame).ok()?;
    if u != unit || pdu.len() != 6 || pdu[0] != 3 || pdu[1] != 4 {
        return None;
    }
    let bits = u32::from_be_bytes([pdu[2], pdu[3], pdu[4], pdu[5]]);
    let v = f32::from_bits(bits);
    v.is_finite().then_some(f64::from(v))
}

/// An ASCII transmitter on the RS-232 port.
#[derive(Debug, Clone)]
pub struct AsciiSensor {
    pub reading: f64,
    pub connected: bool,
}

fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0, |c, x| c ^ x)
}

impl AsciiSensor {
    pub fn new() -> Self {
        Self {
            reading: 0.0,
            connected: true,
        }
    }

    /// What the transmitter answers to the bytes `line` (a command and CR).
    pub fn answer(&self, line: &[u8]) -> Option<Vec<u8>> {
        if !self.connected {
            return None;
        }
        let body = match line {
            b"M\r" => format!("{:+09.3}", self.reading.clamp(-99_999.0, 99_999.0)),
            b"I\r" => "FTX-232 v1.0".to_string(),
            _ => return Some(b"ERR\r\n".to_vec()),
        };
        Some(format!("{body}*{:02X}\r\n", checksum(body.as_bytes())).into_bytes())
    }
}

impl Default for AsciiSensor {
    fn default() -> Self {
        Self::new()
    }
}

/// The value in an answer to `M`: `None` unless well formed with a
/// matching checksum.
pub fn ascii_value(answer: &[u8]) -> Option<f64> {
    let line = answer.strip_suffix(b"\r\n")?;
    let star = line.iter().position(|&b| b == b'*')?;
    let (body, cs) = (&line[..star], &line[star + 1..]);
    let cs = std::str::from_utf8(cs).ok()?;
    if cs.len() != 2 || u8::from_str_radix(cs, 16).ok()? != checksum(body) {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    if !text.starts_with(['+', '-']) {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The logger reads the RS-232 transmitter.
pub fn ascii_measure(sensor: &AsciiSensor) -> Option<f64> {
    ascii_value(&sensor.answer(b"M\r")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn modbus_sensor_answers_its_registers() {
        let mut s = ModbusSensor::new(7);
        s.reading = 2.5;
        assert_eq!(modbus_measure(&s, 7), Some(2.5));
        // Another unit: silence, as on a real line.
        assert_eq!(modbus_measure(&s, 8), None);
        // Registers beyond the map: exception 0x02.
        let req = rtu::encode(7, &Request::ReadHolding { addr: 2, count: 2 }.encode());
        let a = s.answer(&req).unwrap();
        assert_eq!(rtu::decode(&a).unwrap(), (7, &[0x83, 0x02][..]));
        // A write: exception 0x01.
        let req = rtu::encode(7, &Request::WriteSingle { addr: 0, value: 1 }.encode());
        let a = s.answer(&req).unwrap();
        assert_eq!(rtu::decode(&a).unwrap(), (7, &[0x86, 0x01][..]));
        // A bad CRC: silence.
        let mut req = rtu::encode(7, &Request::ReadHolding { addr: 0, count: 2 }.encode());
        req[2] ^= 1;
        assert_eq!(s.answer(&req), None);
        s.connected = false;
        assert_eq!(modbus_measure(&s, 7), None);
    }

    #[test]
    fn ascii_sensor_answers_with_a_checksum() {
        let mut s = AsciiSensor::new();
        s.reading = 12.345;
        let a = s.answer(b"M\r").unwrap();
        assert!(
            a.starts_with(b"+0012.345*"),
            "{}",
            String::from_utf8_lossy(&a)
        );
        assert_eq!(ascii_measure(&s), Some(12.345));
        s.reading = -3.5;
        assert_eq!(ascii_measure(&s), Some(-3.5));
        assert_eq!(s.answer(b"X\r").unwrap(), b"ERR\r\n");
        let mut bad = s.answer(b"M\r").unwrap();
        bad[3] = b'9';
        assert_eq!(ascii_value(&bad), None);
        s.connected = false;
        assert_eq!(ascii_measure(&s), None);
    }

    proptest! {
        #[test]
        fn parsers_are_total(b in prop::collection::vec(any::<u8>(), 0..64), unit: u8) {
            let _ = ascii_value(&b);
            let _ = modbus_value(&b, unit);
            let _ = AsciiSensor::new().answer(&b);
            let _ = ModbusSensor::new(unit).answer(&b);
            let crc_ok = rtu::encode(unit, &b);
            let _ = ModbusSensor::new(unit).answer(&crc_ok);
            let _ = modbus_value(&crc_ok, unit);
        }

        #[test]
        fn values_roundtrip(v in -9999.0f64..9999.0) {
            let mut a = AsciiSensor::new();
            a.reading = v;
            let got = ascii_measure(&a).unwrap();
            prop_assert!((got - v).abs() <= 0.0005 + 1e-9, "{} {}", got, v);
            let mut m = ModbusSensor::new(1);
            m.reading = v as f32;
            prop_assert_eq!(modbus_measure(&m, 1), Some(f64::from(v as f32)));
        }
    }
}
