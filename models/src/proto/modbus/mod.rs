//! Modbus application protocol: PDU codec (Modbus Application Protocol
//! Specification V1.1b3), MBAP framing for TCP ([`mbap`]) and the server loop
//! ([`server`]).
//!
//! Contract:
//! - [`Request::decode`] is total: any byte string gives either a request or
//!   the [`Exception`] a server must answer (0x01 unknown function, 0x03 a
//!   malformed or out-of-range field), never a panic.
//! - [`Response::encode`] produces exactly the bytes of a conforming server.
//! - Schneider's function 100 sub-function 4 ("read scattered registers",
//!   Panel Server Modbus file) is decoded as [`Request::ReadScattered`].

pub mod mbap;
pub mod server;

/// Modbus exception codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exception {
    IllegalFunction = 0x01,
    IllegalDataAddress = 0x02,
    IllegalDataValue = 0x03,
    ServerDeviceFailure = 0x04,
    ServerDeviceBusy = 0x06,
    GatewayPathUnavailable = 0x0A,
    GatewayTargetFailedToRespond = 0x0B,
}

impl Exception {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Function codes.
pub mod function {
    pub const READ_HOLDING_REGISTERS: u8 = 0x03;
    pub const READ_INPUT_REGISTERS: u8 = 0x04;
    pub const WRITE_SINGLE_REGISTER: u8 = 0x06;
    pub const WRITE_MULTIPLE_REGISTERS: u8 = 0x10;
    pub const ENCAPSULATED_INTERFACE: u8 = 0x2B;
    pub const SCHNEIDER: u8 = 0x64;
    /// Sub-function of [`SCHNEIDER`]: read scattered registers.
    pub const SCHNEIDER_READ_SCATTERED: u8 = 0x04;
    /// MEI type of [`ENCAPSULATED_INTERFACE`]: read device identification.
    pub const MEI_READ_DEVICE_ID: u8 = 0x0E;
}

/// Most registers one read may ask for.
pub const MAX_READ: u16 = 125;
/// Most registers one FC16 write may carry.
pub const MAX_WRITE: u16 = 123;
/// Most registers one scattered read may ask for ([NF]: we allow 100).
pub const MAX_SCATTERED: usize = 100;

/// A decoded request PDU. Addresses are protocol addresses (register - 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ReadHolding { addr: u16, count: u16 },
    ReadInput { addr: u16, count: u16 },
    WriteSingle { addr: u16, value: u16 },
    WriteMultiple { addr: u16, values: Vec<u16> },
    ReadScattered { addrs: Vec<u16> },
    ReadDeviceId { code: u8, object: u8 },
}

/// A response PDU, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to FC3/FC4 (and the data part of FC100-4).
    Registers {
        function: u8,
        values: Vec<u16>,
    },
    WriteSingle {
        addr: u16,
        value: u16,
    },
    WriteMultiple {
        addr: u16,
        count: u16,
    },
    Scattered {
        values: Vec<u16>,
    },
    /// Read Device Identification: conformity level and (id, value) objects.
    DeviceId {
        code: u8,
        conformity: u8,
        objects: Vec<(u8, Vec<u8>)>,
    },
    Exception {
        function: u8,
        exception: Exception,
    },
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

impl Request {
    /// Decodes a request PDU (function code first).
    pub fn decode(pdu: &[u8]) -> Result<Request, Exception> {
        use function::*;
        let (&fc, data) = pdu.split_first().ok_or(Exception::IllegalFunction)?;
        let bad = Exception::IllegalDataValue;
        match fc {
            READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
                if data.len() != 4 {
                    return Err(bad);
                }
                let addr = be16(data, 0).ok_or(bad)?;
                let count = be16(data, 2).ok_or(bad)?;
                if count == 0 || count > MAX_READ {
                    return Err(bad);
                }
                if u32::from(addr) + u32::from(count) > 0x1_0000 {
                    return Err(Exception::IllegalDataAddress);
                }
                Ok(if fc == READ_HOLDING_REGISTERS {
                    Request::ReadHolding { addr, count }
                } else {
                    Request::ReadInput { addr, count }
                })
            }
            WRITE_SINGLE_REGISTER => {
                if data.len() != 4 {
                    return Err(bad);
                }
                Ok(Request::WriteSingle {
                    addr: be16(data, 0).ok_or(bad)?,
                    value: be16(data, 2).ok_or(bad)?,
                })
            }
            WRITE_MULTIPLE_REGISTERS => {
                let addr = be16(data, 0).ok_or(bad)?;
                let count = be16(data, 2).ok_or(bad)?;
                let bytes = *data.get(4).ok_or(bad)?;
                if count == 0
                    || count > MAX_WRITE
                    || usize::from(bytes) != 2 * usize::from(count)
                    || data.len() != 5 + usize::from(bytes)
                {
                    return Err(bad);
                }
                if u32::from(addr) + u32::from(count) > 0x1_0000 {
                    return Err(Exception::IllegalDataAddress);
                }
                let values = data[5..]
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                Ok(Request::WriteMultiple { addr, values })
            }
            SCHNEIDER => {
                // [byte count][sub-function 0x04][reserved 0x00][N][addr_1..addr_N]
                let len = usize::from(*data.first().ok_or(bad)?);
                if data.len() != 1 + len || len < 3 {
                    return Err(bad);
                }
                if data[1] != SCHNEIDER_READ_SCATTERED {
                    return Err(Exception::IllegalFunction);
                }
                let n = usize::from(data[3]);
                if n == 0 || n > MAX_SCATTERED || len != 3 + 2 * n {
                    return Err(bad);
                }
                let addrs = data[4..]
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                Ok(Request::ReadScattered { addrs })
            }
            ENCAPSULATED_INTERFACE => {
                if data.first() != Some(&MEI_READ_DEVICE_ID) {
                    return Err(Exception::IllegalFunction);
                }
                if data.len() != 3 {
                    return Err(bad);
                }
                Ok(Request::ReadDeviceId {
                    code: data[1],
                    object: data[2],
                })
            }
            _ => Err(Exception::IllegalFunction),
        }
    }

    /// The function code of this request.
    pub fn function(&self) -> u8 {
        use function::*;
        match self {
            Request::ReadHolding { .. } => READ_HOLDING_REGISTERS,
            Request::ReadInput { .. } => READ_INPUT_REGISTERS,
            Request::WriteSingle { .. } => WRITE_SINGLE_REGISTER,
            Request::WriteMultiple { .. } => WRITE_MULTIPLE_REGISTERS,
            Request::ReadScattered { .. } => SCHNEIDER,
            Request::ReadDeviceId { .. } => ENCAPSULATED_INTERFACE,
        }
    }

    /// Encodes the request PDU (what a client sends).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.function()];
        match self {
            Request::ReadHolding { addr, count } | Request::ReadInput { addr, count } => {
                out.extend_from_slice(&addr.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
            Request::WriteSingle { addr, value } => {
                out.extend_from_slice(&addr.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            Request::WriteMultiple { addr, values } => {
                out.extend_from_slice(&addr.to_be_bytes());
                out.extend_from_slice(&(values.len() as u16).to_be_bytes());
                out.push((values.len() * 2) as u8);
                values
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
            }
            Request::ReadScattered { addrs } => {
                out.push((3 + 2 * addrs.len()) as u8);
                out.extend_from_slice(&[function::SCHNEIDER_READ_SCATTERED, 0, addrs.len() as u8]);
                addrs
                    .iter()
                    .for_each(|a| out.extend_from_slice(&a.to_be_bytes()));
            }
            Request::ReadDeviceId { code, object } => {
                out.extend_from_slice(&[function::MEI_READ_DEVICE_ID, *code, *object]);
            }
        }
        out
    }
}

impl Response {
    /// The exception answer to function `function`.
    pub fn exception(function: u8, exception: Exception) -> Self {
        Response::Exception {
            function,
            exception,
        }
    }

    /// Encodes the response PDU.
    pub fn encode(&self) -> Vec<u8> {
        use function::*;
        match self {
            Response::Registers { function, values } => {
                let mut out = Vec::with_capacity(2 + 2 * values.len());
                out.push(*function);
                out.push((values.len() * 2) as u8);
                values
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
                out
            }
            Response::WriteSingle { addr, value } => {
                let mut out = vec![WRITE_SINGLE_REGISTER];
                out.extend_from_slice(&addr.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
                out
            }
            Response::WriteMultiple { addr, count } => {
                let mut out = vec![WRITE_MULTIPLE_REGISTERS];
                out.extend_from_slice(&addr.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
                out
            }
            Response::Scattered { values } => {
                let mut out = vec![SCHNEIDER, (3 + 2 * values.len()) as u8];
                out.extend_from_slice(&[SCHNEIDER_READ_SCATTERED, 0, values.len() as u8]);
                values
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
                out
            }
            Response::DeviceId {
                code,
                conformity,
                objects,
            } => {
                let mut out = vec![
                    ENCAPSULATED_INTERFACE,
                    MEI_READ_DEVICE_ID,
                    *code,
                    *conformity,
                    0, // more follows: no
                    0, // next object id
                    objects.len() as u8,
                ];
                for (id, value) in objects {
                    out.push(*id);
                    out.push(value.len() as u8);
                    out.extend_from_slice(value);
                }
                out
            }
            Response::Exception {
                function,
                exception,
            } => vec![function | 0x80, exception.code()],
        }
    }
}

/// Register encodings used by the Schneider register maps: big-endian, most
/// significant register first.
pub mod encode {
    /// ASCII text in `words` registers, NUL-padded (two characters per register).
    pub fn ascii(s: &str, words: usize) -> Vec<u16> {
        let mut bytes: Vec<u8> = s.bytes().filter(u8::is_ascii).take(words * 2).collect();
        bytes.resize(words * 2, 0);
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    pub fn f32(v: f32) -> [u16; 2] {
        let b = v.to_bits();
        [(b >> 16) as u16, b as u16]
    }

    pub fn u32(v: u32) -> [u16; 2] {
        [(v >> 16) as u16, v as u16]
    }

    pub fn i64(v: i64) -> [u16; 4] {
        u64(v as u64)
    }

    pub fn u64(v: u64) -> [u16; 4] {
        [
            (v >> 48) as u16,
            (v >> 32) as u16,
            (v >> 16) as u16,
            v as u16,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_requests_decode() {
        assert_eq!(
            Request::decode(&[3, 0, 0x3C, 0, 8]),
            Ok(Request::ReadHolding {
                addr: 0x3C,
                count: 8
            })
        );
        assert_eq!(
            Request::decode(&[0x10, 0, 0x73, 0, 1, 2, 0x12, 0x34]),
            Ok(Request::WriteMultiple {
                addr: 0x73,
                values: vec![0x1234]
            })
        );
    }

    #[test]
    fn malformed_requests_get_the_right_exception() {
        use Exception::*;
        let cases: &[(&[u8], Exception)] = &[
            (&[], IllegalFunction),
            (&[0x55], IllegalFunction),
            (&[3, 0, 0], IllegalDataValue),
            (&[3, 0, 0, 0, 0], IllegalDataValue),
            (&[3, 0, 0, 0, 126], IllegalDataValue),
            (&[3, 0xFF, 0xFF, 0, 2], IllegalDataAddress),
            (&[0x10, 0, 0, 0, 2, 2, 0, 0], IllegalDataValue),
            (&[0x10, 0, 0, 0, 1, 2, 0], IllegalDataValue),
            (&[0x64, 5, 4, 0, 2, 0, 1], IllegalDataValue),
            (&[0x64, 3, 9, 0, 1], IllegalFunction),
            (&[0x2B, 0x0D, 1, 0], IllegalFunction),
        ];
        for (pdu, exc) in cases {
            assert_eq!(Request::decode(pdu), Err(*exc), "{pdu:?}");
        }
    }

    #[test]
    fn responses_encode_like_the_spec() {
        let r = Response::Registers {
            function: 3,
            values: vec![0x5041, 0x5336],
        };
        assert_eq!(r.encode(), vec![3, 4, 0x50, 0x41, 0x53, 0x36]);
        assert_eq!(
            Response::exception(3, Exception::GatewayPathUnavailable).encode(),
            vec![0x83, 0x0A]
        );
    }

    #[test]
    fn register_encodings() {
        assert_eq!(
            encode::ascii("PAS600L", 4),
            vec![0x5041, 0x5336, 0x3030, 0x4C00]
        );
        // The Modbus file's worked example: 0, 0, 0x0017, 0x9692 = 1,545,874 Wh.
        assert_eq!(encode::i64(1_545_874), [0, 0, 0x0017, 0x9692]);
        assert_eq!(encode::f32(f32::NAN)[0] & 0x7FC0, 0x7FC0);
    }

    fn any_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u16>(), 1u16..=MAX_READ)
                .prop_filter("in range", |(a, c)| u32::from(*a) + u32::from(*c)
                    <= 0x1_0000)
                .prop_map(|(addr, count)| Request::ReadHolding { addr, count }),
            (any::<u16>(), 1u16..=MAX_READ)
                .prop_filter("in range", |(a, c)| u32::from(*a) + u32::from(*c)
                    <= 0x1_0000)
                .prop_map(|(addr, count)| Request::ReadInput { addr, count }),
            (any::<u16>(), any::<u16>())
                .prop_map(|(addr, value)| Request::WriteSingle { addr, value }),
            (
                0u16..0xFF00,
                proptest::collection::vec(any::<u16>(), 1..=MAX_WRITE as usize)
            )
                .prop_map(|(addr, values)| Request::WriteMultiple { addr, values }),
            proptest::collection::vec(any::<u16>(), 1..=MAX_SCATTERED)
                .prop_map(|addrs| Request::ReadScattered { addrs }),
            (any::<u8>(), any::<u8>())
                .prop_map(|(code, object)| Request::ReadDeviceId { code, object }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in any_request()) {
            prop_assert_eq!(Request::decode(&req.encode()), Ok(req));
        }

        #[test]
        fn any_bytes_decode_without_panic(pdu in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Request::decode(&pdu);
        }
    }
}
