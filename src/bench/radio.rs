//! `fieldtwin bench radio`: the IEEE 802.15.4 medium at site scale.
//!
//! Contract: N coordinators (Panel Servers, 100 m apart on a grid) with M
//! wireless devices each (on a circle of 3 m) on a few channels, through
//! the real medium ([`fieldtwin_emulator::radio`]: CSMA-CA, propagation,
//! SINR, collisions) and the real link table of the Panel Server
//! ([`fieldtwin_models::panel_server::radio::LinkTable`]), driven by its
//! own task on a clock at speed 1 for D wall seconds. With `--joins`
//! every device starts out of the network and joins over the air (join
//! request, join accept through CSMA-CA, during the warm-up; every device
//! listens until accepted, too heavy for the default scale: the default
//! run starts them paired). Devices report every P seconds
//! asking for a MAC acknowledgement: the coordinator sends it without
//! CSMA 192 µs after the report, the device listens for it for 864 µs
//! after its report left. Prints the CPU used per virtual second (as a
//! share of one core), the RSS the radios added (per radio), frames per
//! second, deliveries, losses, joins, acknowledgements received and
//! missed, and how far the medium lags the clock at the end. Measures;
//! asserts nothing.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::radio::air::{Act, Air, Node};
use fieldtwin_emulator::radio::frame::{Mac, TYPE_ACK};
use fieldtwin_emulator::radio::join;
use fieldtwin_emulator::radio::phy::{mix, radio_id};
use fieldtwin_emulator::radio::report::{Quantity, Report};
use fieldtwin_emulator::radio::{ACK_WAIT, Delivery, Position, RadioConfig, RadioId, TURNAROUND};
use fieldtwin_models::panel_server::radio::{LinkTable, ack_psdu};

use super::cpu_s;

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Panel Servers (coordinators).
    #[arg(long, default_value_t = 1000)]
    pub panel_servers: usize,
    /// Wireless devices per Panel Server.
    #[arg(long, default_value_t = 100)]
    pub radios: usize,
    /// Reporting period, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub period_s: f64,
    /// Channels used (from 11 up).
    #[arg(long, default_value_t = 4)]
    pub channels: u8,
    /// Wall seconds measured, at speed 1.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Devices start out of the network and join over the air (every
    /// device listening until its accept: heavy at full scale).
    #[arg(long)]
    pub joins: bool,
}

/// Counters of the devices and coordinators.
#[derive(Default)]
struct Counts {
    joins: AtomicU64,
    acked: AtomicU64,
    missed: AtomicU64,
}

struct Reporter {
    radio: RadioId,
    rf_id: u64,
    pan: u16,
    period: Duration,
    counter: AtomicU32,
    joined: AtomicBool,
    /// The report waiting for its acknowledgement: (sequence number, when
    /// the next report is due).
    waiting: Mutex<Option<(u8, Duration)>>,
    air: Air,
    counts: Arc<Counts>,
}

impl Reporter {
    fn missed(&self, next: Duration, at: Duration) -> Act {
        self.counts.missed.fetch_add(1, Ordering::Relaxed);
        self.air.medium().set_listening(self.radio, false);
        Act {
            wake_at: Some(next.max(at)),
            ..Act::default()
        }
    }
}

impl Node for Reporter {
    fn wake(&self, at: Duration) -> Act {
        let waited = self.waiting.lock().unwrap().take();
        if let Some((_, next)) = waited {
            return self.missed(next, at);
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let next = at + self.period;
        if !self.joined.load(Ordering::Relaxed) {
            let q = join::Request {
                pan: self.pan,
                rf_id: self.rf_id,
                seq: n as u8,
                nonce: n,
                kind: 1,
                mic: [0; 4],
            };
            return Act {
                send: vec![q.to_psdu()],
                wake_at: Some(next),
                ..Act::default()
            };
        }
        let r = Report {
            pan: self.pan,
            rf_id: self.rf_id,
            seq: n as u8,
            kind: 1,
            counter: n,
            readings: vec![
                (Quantity::ActivePower as u8, 1200.0),
                (Quantity::EnergyKwh as u8, 42.0),
                (Quantity::Voltage as u8, 231.0),
            ],
        };
        let psdu = match Mac::parse(&r.to_psdu()) {
            Ok(mut m) => {
                m.ack_request = true;
                m.to_psdu()
            }
            Err(_) => r.to_psdu(),
        };
        *self.waiting.lock().unwrap() = Some((n as u8, next));
        Act {
            send: vec![psdu],
            wake_at: Some(next),
            ..Act::default()
        }
    }

    fn sent(&self, at: Duration, ok: bool) -> Act {
        let Some((_, next)) = *self.waiting.lock().unwrap() else {
            return Act::default();
        };
        if !ok {
            self.waiting.lock().unwrap().take();
            return self.missed(next, at);
        }
        self.air.medium().set_listening(self.radio, true);
        Act {
            wake_at: Some(at + ACK_WAIT),
            ..Act::default()
        }
    }

    fn receive(&self, d: &Delivery) -> Act {
        if let Ok(m) = Mac::parse(&d.psdu)
            && m.frame_type == TYPE_ACK
        {
            let mut w = self.waiting.lock().unwrap();
            let Some((seq, next)) = *w else {
                return Act::default();
            };
            if m.seq != seq {
                return Act::default();
            }
            *w = None;
            drop(w);
            self.counts.acked.fetch_add(1, Ordering::Relaxed);
            self.air.medium().set_listening(self.radio, false);
            return Act {
                wake_at: Some(next),
                ..Act::default()
            };
        }
        if let Ok(a) = join::Accept::parse(&d.psdu)
            && a.rf_id == self.rf_id
            && a.pan == self.pan
            && !self.joined.swap(true, Ordering::Relaxed)
        {
            self.air.medium().set_listening(self.radio, false);
        }
        Act::default()
    }
}

struct Coordinator {
    pan: u16,
    period: Duration,
    table: Mutex<LinkTable>,
    seq: AtomicU32,
    counts: Arc<Counts>,
}

impl Node for Coordinator {
    fn wake(&self, at: Duration) -> Act {
        let mut t = self.table.lock().unwrap();
        t.expire(at);
        Act {
            wake_at: t.next_deadline(),
            ..Act::default()
        }
    }

    fn receive(&self, d: &Delivery) -> Act {
        // Automatic discovery, every device admitted: a join request is
        // answered with a join accept through CSMA-CA.
        if let Ok(q) = join::Request::parse(&d.psdu) {
            if q.pan != self.pan {
                return Act::default();
            }
            let mut t = self.table.lock().unwrap();
            if t.link(q.rf_id).is_none() {
                self.counts.joins.fetch_add(1, Ordering::Relaxed);
            }
            t.admit(q.rf_id, self.period);
            let a = join::Accept {
                pan: self.pan,
                rf_id: q.rf_id,
                seq: self.seq.fetch_add(1, Ordering::Relaxed) as u8,
                nonce: q.nonce,
                status: 0,
                mic: [0; 4],
            };
            return Act {
                send: vec![a.to_psdu()],
                wake_at: t.next_deadline(),
                ..Act::default()
            };
        }
        let Ok(r) = Report::parse(&d.psdu) else {
            return Act::default();
        };
        if r.pan != self.pan {
            return Act::default();
        }
        let asked = Mac::parse(&d.psdu).is_ok_and(|m| m.ack_request);
        let mut t = self.table.lock().unwrap();
        t.receive(d.at, &r, d.rssi_dbm, d.lqi, d.per);
        Act {
            send_at: if asked {
                vec![(d.at + TURNAROUND, ack_psdu(r.seq))]
            } else {
                Vec::new()
            },
            wake_at: t.next_deadline(),
            ..Act::default()
        }
    }
}

fn rss_kib() -> u64 {
    super::scale::proc_rss_kib(std::process::id()).unwrap_or(0)
}

pub fn run(o: Options) -> anyhow::Result<()> {
    anyhow::ensure!(o.panel_servers >= 1, "--panel-servers must be at least 1");
    anyhow::ensure!((1..=16).contains(&o.channels), "--channels must be 1 to 16");
    anyhow::ensure!(
        o.period_s.is_finite() && (0.01..=3600.0).contains(&o.period_s),
        "--period-s must be 0.01 to 3600"
    );
    anyhow::ensure!(
        o.seconds.is_finite() && (1.0..=3600.0).contains(&o.seconds),
        "--seconds must be 1 to 3600"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let clock = Clock::start(chrono::Utc::now(), 1.0)?;
        clock.set_paused(true);
        let air = Air::new(&clock, 1);
        let counts = Arc::new(Counts::default());
        let rss0 = rss_kib();
        let period = Duration::from_secs_f64(o.period_s);
        let side = (o.panel_servers as f64).sqrt().ceil() as usize;
        let t0 = Instant::now();
        for k in 0..o.panel_servers {
            let name = format!("ps{k}");
            let pan = fieldtwin_emulator::radio::pan_of(&name);
            let pos = Position::new(100.0 * (k % side) as f64, 100.0 * (k / side) as f64, 2.0);
            let channel = 11 + (k % usize::from(o.channels)) as u8;
            let paired: Vec<(u64, Duration)> = (0..o.radios)
                .map(|i| (((k as u64) << 16) | i as u64, period))
                .collect();
            let mut table = LinkTable::default();
            if !o.joins {
                table.set_paired(&paired);
                table.presume(Duration::ZERO);
            }
            air.attach(
                radio_id(&name),
                RadioConfig {
                    name: name.clone(),
                    position: pos,
                    channel,
                    tx_power_dbm: 3.0,
                    listening: true,
                },
                Arc::new(Coordinator {
                    pan,
                    period,
                    table: Mutex::new(table),
                    seq: AtomicU32::new(0),
                    counts: counts.clone(),
                }),
                (!o.joins).then_some(period * 3),
            )?;
            for (i, (rf_id, _)) in paired.iter().enumerate() {
                let a = std::f64::consts::TAU * i as f64 / o.radios.max(1) as f64;
                let rname = format!("{name}/pt{i}");
                let id = radio_id(&rname);
                let phase = period.mul_f64((mix(id) % 10_000) as f64 / 10_000.0);
                air.attach(
                    id,
                    RadioConfig {
                        name: rname,
                        position: Position::new(pos.x + 3.0 * a.cos(), pos.y + 3.0 * a.sin(), 1.0),
                        channel,
                        tx_power_dbm: 0.0,
                        // Out of the network: listening for a join accept.
                        listening: o.joins,
                    },
                    Arc::new(Reporter {
                        radio: id,
                        rf_id: *rf_id,
                        pan,
                        period,
                        counter: AtomicU32::new(0),
                        joined: AtomicBool::new(!o.joins),
                        waiting: Mutex::new(None),
                        air: air.clone(),
                        counts: counts.clone(),
                    }),
                    Some(phase),
                )?;
            }
        }
        let setup = t0.elapsed();
        let radios = o.panel_servers * (o.radios + 1);
        let rss_setup = rss_kib();
        // Warm up for two periods (the devices join in the first), then
        // measure.
        clock.set_paused(false);
        tokio::time::sleep(Duration::from_secs_f64((2.0 * o.period_s).min(o.seconds))).await;
        let joins = counts.joins.load(Ordering::Relaxed);
        let (c0, v0, w0) = (cpu_s(), clock.now(), Instant::now());
        let s0 = air.medium().stats().clone();
        let (a0, m0) = (counts.acked.load(Ordering::Relaxed), counts.missed.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
        let (c1, v1, w1) = (cpu_s(), clock.now(), Instant::now());
        let s1 = air.medium().stats().clone();
        let (a1, m1) = (counts.acked.load(Ordering::Relaxed), counts.missed.load(Ordering::Relaxed));
        let lag = air
            .medium()
            .next_deadline()
            .map_or(0.0, |t| (v1.as_secs_f64() - t.as_secs_f64()).max(0.0));
        let rss_end = rss_kib();
        let virt = (v1 - v0).as_secs_f64();
        let cpu = c1 - c0;
        let wall = (w1 - w0).as_secs_f64();
        let frames = (s1.frames - s0.frames) as f64;
        println!("bench radio: {} Panel Servers x {} radios = {radios} radios, report every {} s, {} channels, speed 1",
            o.panel_servers, o.radios, o.period_s, o.channels);
        println!("  setup                 {:.2} s", setup.as_secs_f64());
        println!("  measured              {wall:.1} s wall, {virt:.1} s virtual");
        println!("  frames                {:.0} /s (delivered {:.0} /s, corrupted {:.0} /s, channel access failures {:.0} /s)",
            frames / virt,
            (s1.delivered - s0.delivered) as f64 / virt,
            (s1.corrupted - s0.corrupted) as f64 / virt,
            (s1.channel_access_failures - s0.channel_access_failures) as f64 / virt);
        println!("  joins                 {joins} of {} devices during the warm-up, {} in all",
            o.panel_servers * o.radios, counts.joins.load(Ordering::Relaxed));
        println!("  acknowledgements      {:.0} /s received, {:.0} /s missed by the devices",
            (a1 - a0) as f64 / virt, (m1 - m0) as f64 / virt);
        println!("  CPU                   {:.1} ms per virtual second = {:.1} % of one core",
            1000.0 * cpu / virt, 100.0 * cpu / wall);
        println!("  RSS                   {} KiB before, {} KiB after setup, {} KiB at the end",
            rss0, rss_setup, rss_end);
        println!("  RSS per radio         {:.0} bytes", (rss_end.saturating_sub(rss0) * 1024) as f64 / radios as f64);
        println!("  medium lag at the end {lag:.3} s (0: it keeps up)");
        anyhow::Ok(())
    })
}
