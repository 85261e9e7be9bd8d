//! The Panel Server's Modbus gateway: routing of Modbus TCP requests by unit
//! id (DOCA0172 "Modbus addressing", devices.md §1.1, §1.4).
//!
//! Contract:
//! - 255: the Panel Server's own registers (handled by the caller).
//! - Only the unit ids of the configured topology ([`super::topology`]) and
//!   of the paired wireless devices are routed; the line's other slaves and
//!   unconfigured TCP devices are not reached (0x0A).
//! - A unit id of a configured Modbus-SL slave: forwarded transparently over the
//!   simulated RS-485 line ([`crate::serial_bus`]), RTU-framed with CRC;
//!   its answer (data or the slave's exception) is relayed unchanged.
//! - A virtual server id of a Modbus TCP downstream device: forwarded over
//!   the network, from the interface on the device's segment, with a real
//!   Modbus TCP client (tokio-modbus) on a connection kept open between
//!   requests.
//! - A wireless device's address (first free from 100): answered by the
//!   Panel Server from the values the device last sent over the radio.
//! - Errors, as documented in docs/gateway.md: 0x0A when no device has
//!   that unit id; 0x0B when a configured device does not answer (serial
//!   timeout, TCP connection refused or no answer within
//!   [`TCP_TIMEOUT`] of wall time — network timeouts stay in wall time).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fieldtwin_emulator::device::DeviceContext;
use fieldtwin_emulator::net::BoxStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_modbus::Slave;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{Reader, SlaveContext, Writer};

use crate::field::FieldDevice;
use crate::proto::modbus::{Exception, Request, Response, function};
use crate::serial_bus::Line;

/// How long the gateway waits for a Modbus TCP downstream device ([NF]).
pub const TCP_TIMEOUT: Duration = Duration::from_millis(800);

/// A Modbus TCP device behind the gateway.
pub struct TcpTarget {
    pub device: String,
    /// Virtual server id on the gateway.
    pub unit: u8,
    /// Interface of the Panel Server on the device's segment.
    pub interface: String,
    pub addr: SocketAddr,
    conn: tokio::sync::Mutex<Option<Context>>,
}

impl TcpTarget {
    pub fn new(device: String, unit: u8, interface: String, addr: SocketAddr) -> Self {
        Self {
            device,
            unit,
            interface,
            addr,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the gateway holds a connection to the target now (`None`
    /// while a request is using it).
    pub fn is_connected(&self) -> Option<bool> {
        self.conn.try_lock().ok().map(|c| c.is_some())
    }
}

/// Routes requests by unit id.
pub struct Router {
    pub line: Arc<Line>,
    /// Slave addresses configured on the Modbus-SL port.
    pub serial_units: Vec<u8>,
    pub wireless: Vec<Arc<FieldDevice>>,
    pub tcp: Vec<Arc<TcpTarget>>,
}

/// A transport stream with the `Debug` that tokio-modbus asks for.
struct Transport(BoxStream);

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport")
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// What one forwarded call gave.
enum Outcome {
    Answer(Response),
    /// The connection failed: retry once on a new connection.
    Broken,
}

fn exception_pdu(function: u8, code: u8) -> Response {
    Response::Raw(vec![function | 0x80, code])
}

async fn call(ctx: &mut Context, req: &Request) -> Outcome {
    use tokio_modbus::Request as R;
    use tokio_modbus::Response as A;
    let fc = req.function();
    let r = match req {
        Request::ReadHolding { addr, count } => {
            ctx.read_holding_registers(*addr, *count).await.map(|r| {
                r.map(|values| Response::Registers {
                    function: function::READ_HOLDING_REGISTERS,
                    values,
                })
            })
        }
        Request::ReadInput { addr, count } => {
            ctx.read_input_registers(*addr, *count).await.map(|r| {
                r.map(|values| Response::Registers {
                    function: function::READ_INPUT_REGISTERS,
                    values,
                })
            })
        }
        Request::WriteSingle { addr, value } => {
            ctx.write_single_register(*addr, *value).await.map(|r| {
                r.map(|()| Response::WriteSingle {
                    addr: *addr,
                    value: *value,
                })
            })
        }
        Request::WriteMultiple { addr, values } => {
            ctx.write_multiple_registers(*addr, values).await.map(|r| {
                r.map(|()| Response::WriteMultiple {
                    addr: *addr,
                    count: values.len() as u16,
                })
            })
        }
        Request::ReadScattered { .. } | Request::ReadDeviceId { .. } => {
            let pdu = req.encode();
            ctx.call(R::Custom(fc, pdu[1..].to_vec().into()))
                .await
                .map(|r| {
                    r.map(|a| match a {
                        A::Custom(f, bytes) => {
                            let mut v = vec![f];
                            v.extend_from_slice(&bytes);
                            Response::Raw(v)
                        }
                        _ => exception_pdu(fc, Exception::ServerDeviceFailure.code()),
                    })
                })
        }
    };
    match r {
        Ok(Ok(resp)) => Outcome::Answer(resp),
        Ok(Err(code)) => Outcome::Answer(exception_pdu(fc, u8::from(code))),
        Err(_) => Outcome::Broken,
    }
}

impl Router {
    /// Whether some device has unit id `unit`.
    pub fn knows(&self, unit: u8) -> bool {
        self.serial_units.contains(&unit)
            || self.wireless.iter().any(|w| w.unit == unit)
            || self.tcp.iter().any(|t| t.unit == unit)
    }

    /// Answers a request for a downstream unit.
    pub async fn route(
        &self,
        ctx: &DeviceContext,
        unit: u8,
        req: Request,
    ) -> Result<Response, Exception> {
        if let Some(w) = self.wireless.iter().find(|w| w.unit == unit) {
            let t = ctx.clock.now().as_secs_f64();
            return w
                .handle(t, &req)
                .unwrap_or(Err(Exception::GatewayTargetFailedToRespond));
        }
        if self.serial_units.contains(&unit) {
            let pdu = self.line.transact(&ctx.clock, unit, &req.encode()).await?;
            return Ok(Response::Raw(pdu));
        }
        if let Some(target) = self.tcp.iter().find(|t| t.unit == unit) {
            return forward_tcp(ctx, target, &req).await;
        }
        Err(Exception::GatewayPathUnavailable)
    }
}

async fn forward_tcp(
    ctx: &DeviceContext,
    target: &TcpTarget,
    req: &Request,
) -> Result<Response, Exception> {
    let stack = ctx
        .interface(&target.interface)
        .ok_or(Exception::GatewayPathUnavailable)?;
    let mut conn = target.conn.lock().await;
    for _attempt in 0..2 {
        if conn.is_none() {
            let stream = tokio::time::timeout(TCP_TIMEOUT, stack.connect_tcp(target.addr))
                .await
                .map_err(|_| Exception::GatewayTargetFailedToRespond)?
                .map_err(|_| Exception::GatewayTargetFailedToRespond)?;
            let mut c = tokio_modbus::client::tcp::attach_slave(Transport(stream), Slave(1));
            c.set_slave(Slave(1));
            *conn = Some(c);
        }
        let Some(c) = conn.as_mut() else { break };
        match tokio::time::timeout(TCP_TIMEOUT, call(c, req)).await {
            Ok(Outcome::Answer(r)) => return Ok(r),
            Ok(Outcome::Broken) => *conn = None,
            Err(_) => {
                *conn = None;
                return Err(Exception::GatewayTargetFailedToRespond);
            }
        }
    }
    Err(Exception::GatewayTargetFailedToRespond)
}
