//! Fixed snapshots (for the snapshot tests and `fieldtwin bench tui`) and
//! the frame-time measurement of the bench.
//!
//! Contract: [`sample_site`] is deterministic (fixed times, no clock reads),
//! so a render of it is the same on every machine. [`measure`] renders into
//! ratatui's `TestBackend` and times whole `Terminal::draw` calls (layout,
//! widgets and the buffer diff); it asserts nothing.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use fieldtwin_emulator::clock::ClockStatus;
use fieldtwin_emulator::control::Event;
use fieldtwin_emulator::device::{
    AuditInfo, Credential, Details, DeviceStatus, FieldDeviceInfo, LockoutInfo, Power, ServiceInfo,
};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Constraint;
use ratatui::widgets::{Block, Row, Table};

use crate::state::{App, Conn, Snapshot};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 8, 0, 0).unwrap()
}

fn svc(name: &str, iface: &str, ip: &str, port: u16) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        interface: iface.into(),
        protocol: "tcp".into(),
        port,
        address: format!("{ip}:{port}"),
    }
}

/// One device status with the fields the dashboard shows.
pub fn device(
    id: &str,
    model: &str,
    power: Power,
    addrs: &[(&str, &str, &str)],
    services: Vec<ServiceInfo>,
) -> DeviceStatus {
    let on = power != Power::Off;
    DeviceStatus {
        id: id.into(),
        model: model.into(),
        power,
        addresses: addrs
            .iter()
            .map(|(i, a, _)| (i.to_string(), a.to_string()))
            .collect(),
        services: if on { services } else { vec![] },
        rtc: Some(t0() + chrono::Duration::milliseconds(1500)),
        credentials: vec![],
        failure: None,
        segments: addrs
            .iter()
            .map(|(i, _, s)| (i.to_string(), s.to_string()))
            .collect(),
        health: power.into(),
        uptime_s: on.then_some(3725.0),
        rtc_offset_s: Some(1.5),
        counters: BTreeMap::new(),
        details: None,
    }
}

fn clock() -> ClockStatus {
    ClockStatus {
        site_time: t0(),
        elapsed_s: 3725.0,
        speed: 1.0,
        paused: false,
        pending_timers: 12,
        next_deadlines_s: vec![0.25, 1.0, 30.0],
    }
}

/// A fixed snapshot shaped like the default site (for snapshot tests).
pub fn sample_site() -> Snapshot {
    let mut s = Snapshot::new("127.0.0.1:7780");
    s.conn = Conn::Connected;
    let mut ps1 = device(
        "ps1",
        "PAS600L",
        Power::On,
        &[("eth1", "127.77.0.10", "lan"), ("eth2", "127.77.1.1", "ot")],
        vec![
            svc("modbus", "eth1", "127.77.0.10", 502),
            svc("https", "eth1", "127.77.0.10", 443),
            svc("dpws", "eth1", "127.77.0.10", 5357),
        ],
    );
    ps1.counters.insert(crate::state::REQ.into(), 1234);
    ps1.credentials = vec![Credential {
        service: "web".into(),
        user: "SecurityAdmin".into(),
        password: "Fieldtwin-1".into(),
    }];
    let mut dl1 = device(
        "dl1",
        "EGX150",
        Power::Off,
        &[("eth1", "127.77.0.20", "lan")],
        vec![],
    );
    dl1.rtc_offset_s = Some(-125.0);
    let evc = device(
        "evc1",
        "EVlink Pro AC",
        Power::Booting,
        &[("eth1", "127.77.0.30", "lan")],
        vec![],
    );
    let mut meter = device(
        "meter-ot",
        "PM5560",
        Power::On,
        &[("eth1", "127.77.1.20", "ot")],
        vec![svc("modbus", "eth1", "127.77.1.20", 502)],
    );
    meter.counters.insert(crate::state::REQ.into(), 99);
    s.set_devices(vec![ps1.clone(), dl1, evc, meter], None);
    s.rates.insert("ps1".into(), 42.0);
    s.rates.insert("meter-ot".into(), 1.0);
    s.history.insert(
        "ps1".into(),
        VecDeque::from(vec![0, 5, 10, 40, 42, 38, 45, 42, 0, 12, 42]),
    );
    s.clock = Some(clock());
    let mut detail = ps1;
    detail.details = Some(Details {
        field_devices: vec![
            FieldDeviceInfo {
                id: "meter-sl".into(),
                model: "iEM3155".into(),
                link: "serial".into(),
                unit: Some(1),
                powered: Some(true),
                connected: Some(true),
                ..Default::default()
            },
            FieldDeviceInfo {
                id: "meter-ot".into(),
                model: "PM5560".into(),
                link: "modbus_tcp".into(),
                unit: Some(10),
                address: Some("10.77.1.20:502 via eth2".into()),
                connected: Some(true),
                ..Default::default()
            },
            FieldDeviceInfo {
                id: "pt-hvac".into(),
                model: "A9MEM1520".into(),
                link: "wireless".into(),
                unit: Some(100),
                address: Some("0000000000ABC001".into()),
                powered: Some(false),
                connected: Some(false),
                rssi_dbm: Some(-71.0),
                lqi: Some(180),
                ..Default::default()
            },
        ],
        web_lockout: Some(LockoutInfo {
            failures: 2,
            threshold: 5,
            locks: 1,
            locked_until: Some(t0() + chrono::Duration::minutes(5)),
        }),
        audit_tail: vec![
            AuditInfo {
                time: t0() - chrono::Duration::minutes(3),
                kind: "login_failed".into(),
                detail: "SecurityAdmin from 127.0.0.1".into(),
            },
            AuditInfo {
                time: t0() - chrono::Duration::minutes(1),
                kind: "lockout".into(),
                detail: "web login locked for 5 min".into(),
            },
        ],
        extra: BTreeMap::new(),
    });
    s.detail = Some(detail);
    let at = |sec: i64| Some(t0() - chrono::Duration::seconds(sec));
    for (sec, ev) in [
        (
            30,
            Event::Power {
                device: "ps1".into(),
                power: Power::Off,
            },
        ),
        (
            30,
            Event::Power {
                device: "ps1".into(),
                power: Power::Booting,
            },
        ),
        (
            29,
            Event::Power {
                device: "ps1".into(),
                power: Power::On,
            },
        ),
        (
            20,
            Event::Device {
                device: "ps1".into(),
                kind: "field".into(),
                message: "field device pt-hvac: Power { on: false }".into(),
            },
        ),
        (
            10,
            Event::BootFailed {
                device: "evc1".into(),
                reason: "firmware signature invalid".into(),
            },
        ),
        (0, Event::Clock(clock())),
    ] {
        s.push_event(at(sec), ev);
    }
    s
}

/// A snapshot of `n` Panel Servers (for the bench).
pub fn synthetic(n: usize) -> Snapshot {
    let mut s = Snapshot::new("127.0.0.1:7780");
    s.conn = Conn::Connected;
    let devices = (0..n)
        .map(|i| {
            let ip = format!("127.77.{}.{}", i / 250, i % 250 + 2);
            let power = match i % 10 {
                0 => Power::Off,
                1 => Power::Booting,
                _ => Power::On,
            };
            let mut d = device(
                &format!("ps{}", i + 1),
                "PAS600L",
                power,
                &[("eth1", &ip, "lan")],
                vec![
                    svc("modbus", "eth1", &ip, 502),
                    svc("https", "eth1", &ip, 443),
                    svc("dpws", "eth1", &ip, 5357),
                ],
            );
            d.uptime_s = Some(i as f64 * 7.0);
            d.rtc_offset_s = Some((i % 100) as f64 * 0.01 - 0.5);
            d.counters.insert(crate::state::REQ.into(), i as u64);
            d
        })
        .collect();
    s.set_devices(devices, None);
    for i in 0..n {
        s.rates.insert(format!("ps{}", i + 1), (i % 50) as f64);
    }
    s.clock = Some(clock());
    s
}

fn time_frames(
    frames: usize,
    w: u16,
    h: u16,
    mut draw: impl FnMut(&mut ratatui::Frame, usize),
) -> f64 {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    // One warm-up frame.
    term.draw(|f| draw(f, 0)).expect("draw");
    let start = Instant::now();
    for i in 0..frames {
        term.draw(|f| draw(f, i + 1)).expect("draw");
    }
    start.elapsed().as_secs_f64() * 1000.0 / frames as f64
}

/// Mean wall milliseconds per frame of the Devices tab of `snap` on a
/// `w`x`h` terminal, over `frames` frames (plus one warm-up); the selection
/// jumps 97 rows per frame so every frame scrolls.
pub fn dashboard_ms(snap: &Snapshot, frames: usize, w: u16, h: u16) -> f64 {
    let n = snap.devices.len().max(1);
    let mut app = App {
        page: crate::page_rows(h),
        ..App::default()
    };
    time_frames(frames, w, h, |f, i| {
        app.selected = (i * 97) % n;
        app.offset = app.selected.saturating_sub(app.page / 2);
        crate::view::render(f, &app, snap)
    })
}

/// Reference: a plain ratatui table that builds a row for every device of
/// `snap` (no virtualisation), same terminal.
pub fn naive_ms(snap: &Snapshot, frames: usize, w: u16, h: u16) -> f64 {
    let n = snap.devices.len().max(1);
    time_frames(frames, w, h, |f, i| {
        let rows: Vec<Row> = snap
            .devices
            .iter()
            .map(|d| {
                Row::new(vec![
                    d.id.clone(),
                    d.model.clone(),
                    crate::state::power_name(d.power).to_string(),
                    d.addresses.values().cloned().collect::<Vec<_>>().join(" "),
                    format!("{:?}", d.uptime_s),
                ])
            })
            .collect();
        let mut state = ratatui::widgets::TableState::default().with_selected(Some(i % n));
        f.render_stateful_widget(
            Table::new(rows, [Constraint::Min(8); 5]).block(Block::bordered()),
            f.area(),
            &mut state,
        );
    })
}
