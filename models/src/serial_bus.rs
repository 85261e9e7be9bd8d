//! A simulated RS-485 line (Modbus over Serial Line V1.02): the Panel
//! Server's Modbus-SL port as master, field devices as slaves.
//!
//! Contract:
//! - One request at a time on the line: [`Line::transact`] holds the line
//!   from the first request byte to the end of the answer (or the timeout).
//! - Every frame is really RTU-encoded with its CRC-16 ([`rtu`]); each slave
//!   decodes and checks the request frame, the addressed one answers with an
//!   RTU frame that the master decodes and checks again. A frame with a bad
//!   CRC is ignored, as on a real line.
//! - Frames take their transmission time in virtual time: bits per character
//!   (start + 8 data + parity + stop bits) / baud, plus the 3.5-character
//!   silence. When no slave answers, the master waits the response timeout
//!   ([`RESPONSE_TIMEOUT`], [NF] 500 ms) and reports 0x0B. Waits are on the
//!   virtual clock, but never longer than the same duration (+50 ms) of wall
//!   time, so a paused clock does not hang a SCADA client.
//! - [`serve_pty`] optionally exposes the line on a pseudo-terminal so that
//!   a real RTU master (`mbpoll -m rtu PATH`) talks to the slaves directly:
//!   request frames are delimited by line silence ([NF]: 20 ms of wall time
//!   without a byte ends a frame that is not yet complete), checked (CRC)
//!   and answered by the addressed slave; nothing is answered to a frame
//!   with a bad CRC, an unknown unit or a silent slave, as on a real line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::site::{Parity, SerialLineConfig};

use crate::field::FieldDevice;
use crate::proto::modbus::{Exception, Request, Response, rtu};

/// How long the master waits for an answer ([NF]; configurable on the real device).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Counters of a line.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub answers: AtomicU64,
    pub timeouts: AtomicU64,
    /// Virtual time the line was busy, in microseconds.
    pub busy_us: AtomicU64,
}

/// One serial line and the slaves on it.
#[derive(Debug)]
pub struct Line {
    pub baud: u32,
    pub bits_per_char: u32,
    pub slaves: Vec<Arc<FieldDevice>>,
    pub stats: Stats,
    busy: tokio::sync::Mutex<()>,
}

/// Waits `d` of virtual time (capped in wall time, see the module docs).
async fn wait(clock: &Clock, d: Duration) {
    tokio::select! {
        _ = clock.sleep(d) => {}
        _ = tokio::time::sleep(d + Duration::from_millis(50)) => {}
    }
}

impl Line {
    pub fn new(cfg: &SerialLineConfig, slaves: Vec<Arc<FieldDevice>>) -> Self {
        Self {
            baud: cfg.baud,
            bits_per_char: rtu::char_bits(cfg.parity != Parity::None, cfg.stop_bits),
            slaves,
            stats: Stats::default(),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a slave with this unit id is configured.
    pub fn has_unit(&self, unit: u8) -> bool {
        self.slaves.iter().any(|s| s.unit == unit)
    }

    /// What the slaves put on the line after `frame`: the answer frame, if any.
    pub fn slaves_answer(&self, t: f64, frame: &[u8]) -> Option<Vec<u8>> {
        let (unit, pdu) = rtu::decode(frame).ok()?;
        let slave = self.slaves.iter().find(|s| s.unit == unit)?;
        let answer = match Request::decode(pdu) {
            Ok(req) => slave.handle(t, &req)?,
            Err(e) => {
                if !slave.answers() {
                    return None;
                }
                Err(e)
            }
        };
        let function = pdu.first().copied().unwrap_or(0);
        let pdu = answer
            .unwrap_or_else(|e| Response::exception(function, e))
            .encode();
        Some(rtu::encode(unit, &pdu))
    }

    /// Sends `pdu` to `unit` and returns the answer PDU (data or exception),
    /// or 0x0B if no valid answer came before the timeout.
    pub async fn transact(
        &self,
        clock: &Clock,
        unit: u8,
        pdu: &[u8],
    ) -> Result<Vec<u8>, Exception> {
        let _line = self.busy.lock().await;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let request = rtu::encode(unit, pdu);
        let t_req = rtu::frame_time(request.len(), self.baud, self.bits_per_char);
        wait(clock, t_req).await;
        let answer = self.slaves_answer(clock.now().as_secs_f64(), &request);
        let checked = answer
            .as_deref()
            .and_then(|f| rtu::decode(f).ok())
            .filter(|(u, _)| *u == unit);
        match (answer.as_ref(), checked) {
            (Some(frame), Some((_, pdu))) => {
                let t_resp = rtu::frame_time(frame.len(), self.baud, self.bits_per_char);
                wait(clock, t_resp).await;
                self.stats.answers.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .busy_us
                    .fetch_add((t_req + t_resp).as_micros() as u64, Ordering::Relaxed);
                Ok(pdu.to_vec())
            }
            _ => {
                wait(clock, RESPONSE_TIMEOUT).await;
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.stats.busy_us.fetch_add(
                    (t_req + RESPONSE_TIMEOUT).as_micros() as u64,
                    Ordering::Relaxed,
                );
                Err(Exception::GatewayTargetFailedToRespond)
            }
        }
    }
}

/// Why the PTY of a line could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("cannot open a pseudo-terminal: {0}")]
    Open(nix::Error),
    #[error(
        "cannot link the pseudo-terminal at {path}: {source} (choose a writable path for serial_pty)"
    )]
    Link {
        path: String,
        source: std::io::Error,
    },
}

/// A pseudo-terminal whose slave side is linked at a path.
pub struct Pty {
    master: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    /// Kept open so the master does not see a hang-up between clients.
    _slave: std::os::fd::OwnedFd,
    link: std::path::PathBuf,
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

impl Pty {
    /// Opens a raw pseudo-terminal and links its slave side at `path`.
    pub fn open(path: &str) -> Result<Self, PtyError> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let pty = nix::pty::openpty(None, None).map_err(PtyError::Open)?;
        let mut t = tcgetattr(&pty.slave).map_err(PtyError::Open)?;
        cfmakeraw(&mut t);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t).map_err(PtyError::Open)?;
        fcntl(&pty.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(PtyError::Open)?;
        let name = nix::unistd::ttyname(&pty.slave).map_err(PtyError::Open)?;
        let link = std::path::PathBuf::from(path);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&name, &link).map_err(|source| PtyError::Link {
            path: path.to_string(),
            source,
        })?;
        // An OwnedFd that nothing else closes or replaces: the I/O-safety
        // concern behind the deprecation does not apply.
        #[allow(deprecated)]
        let master = tokio::io::unix::AsyncFd::new(pty.master).map_err(|e| PtyError::Link {
            path: path.to_string(),
            source: e,
        })?;
        Ok(Self {
            master,
            _slave: pty.slave,
            link,
        })
    }

    /// Reads what the client wrote (EIO while no client has the terminal open).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes to the client.
    pub async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// Serves `line` to an external RTU master on `pty` until the task is dropped.
pub async fn serve_pty(line: Arc<Line>, clock: Clock, pty: Pty) {
    let mut frame: Vec<u8> = Vec::with_capacity(rtu::MAX_FRAME);
    let mut buf = [0u8; 512];
    loop {
        let read = if frame.is_empty() {
            pty.read(&mut buf).await.map(Some)
        } else {
            match tokio::time::timeout(Duration::from_millis(20), pty.read(&mut buf)).await {
                Ok(r) => r.map(Some),
                Err(_silence) => Ok(None),
            }
        };
        match read {
            Ok(Some(n)) => frame.extend_from_slice(&buf[..n]),
            Ok(None) => frame.clear(), // silence ended an incomplete or corrupt frame
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => {
                // No client has the terminal open: wait and retry.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => return,
        }
        if frame.len() > rtu::MAX_FRAME {
            frame.clear();
            continue;
        }
        if rtu::decode(&frame).is_err() {
            continue;
        }
        let request = std::mem::take(&mut frame);
        let _busy = line.busy.lock().await;
        line.stats.requests.fetch_add(1, Ordering::Relaxed);
        wait(
            &clock,
            rtu::frame_time(request.len(), line.baud, line.bits_per_char),
        )
        .await;
        if let Some(answer) = line.slaves_answer(clock.now().as_secs_f64(), &request) {
            wait(
                &clock,
                rtu::frame_time(answer.len(), line.baud, line.bits_per_char),
            )
            .await;
            line.stats.answers.fetch_add(1, Ordering::Relaxed);
            if pty.write_all(&answer).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::{GatewayCopy, Spec};
    use fieldtwin_emulator::clock::FACTORY_EPOCH;

    fn line(baud: u32) -> Line {
        let meter = FieldDevice::new(
            &Spec {
                id: "m".into(),
                model: "iEM3155".into(),
                unit: 5,
                rf_id: None,
                profile: Some("office".into()),
                powered: true,
                seed: 1,
                day0: 0.0,
            },
            GatewayCopy::default(),
        )
        .unwrap();
        let cfg = SerialLineConfig {
            baud,
            parity: Parity::Even,
            stop_bits: 1,
        };
        Line::new(&cfg, vec![Arc::new(meter)])
    }

    #[tokio::test]
    async fn a_request_takes_its_transmission_time_in_virtual_time() {
        let clock = Clock::start(FACTORY_EPOCH, 1.0).unwrap();
        clock.set_paused(true);
        let l = line(9600);
        let t0 = clock.now();
        let pdu = Request::ReadHolding {
            addr: 3027,
            count: 2,
        }
        .encode();
        // The clock is paused: the answer comes when virtual time has moved
        // on. It moves 5 ms per real millisecond tick, so it stays ahead of
        // the line's real-time fallback (frame time + 50 ms) even when a
        // loaded machine delays the ticks.
        let ticker = {
            let clock = clock.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    clock.advance(Duration::from_millis(5));
                }
            })
        };
        let answer = l.transact(&clock, 5, &pdu).await.unwrap();
        ticker.abort();
        let took = clock.now() - t0;
        // 8-byte request + 9-byte answer at 9600 8E1: 13.2 ms + 14.3 ms.
        assert!(took >= Duration::from_millis(27), "{took:?}");
        assert_eq!(answer[..2], [3, 4]);
        let v = f32::from_bits(u32::from_be_bytes([
            answer[2], answer[3], answer[4], answer[5],
        ]));
        assert!((220.0..240.0).contains(&v), "{v}");
        assert_eq!(l.stats.answers.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn silent_or_absent_slaves_time_out_with_0x0b() {
        let clock = Clock::start(FACTORY_EPOCH, 1000.0).unwrap();
        let l = line(19200);
        let pdu = Request::ReadHolding {
            addr: 3027,
            count: 2,
        }
        .encode();
        l.slaves[0].set_power(0.0, false);
        assert_eq!(
            l.transact(&clock, 5, &pdu).await,
            Err(Exception::GatewayTargetFailedToRespond)
        );
        assert_eq!(l.stats.timeouts.load(Ordering::Relaxed), 1);
        // The slave's own exceptions come back unchanged.
        l.slaves[0].set_power(0.0, true);
        let bad = Request::ReadHolding { addr: 9, count: 1 }.encode();
        assert_eq!(l.transact(&clock, 5, &bad).await, Ok(vec![0x83, 0x02]));
        // A corrupted frame is ignored by the slave.
        let mut frame = rtu::encode(5, &pdu);
        frame[2] ^= 1;
        assert_eq!(l.slaves_answer(1.0, &frame), None);
    }
}
