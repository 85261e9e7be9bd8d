//! The SSDP service of the EVCE and of the charging stations (I/O edge of
//! [`crate::proto::ssdp`]; DOCA0349 "Supported Protocols": SSDP network
//! discovery; "Enrollment of EV charging stations").
//!
//! Contract:
//! - [`serve`] binds UDP 1900 on one interface of the device's own
//!   transport, joins 239.255.255.250 and answers every `M-SEARCH` whose
//!   target matches the device (`ssdp:all`, `upnp:rootdevice`, its uuid or
//!   its device type) with unicast `200 OK` answers to the searcher, at once
//!   (MX is an upper bound on the delay; 0 is within it).
//! - It announces `NOTIFY ssdp:alive` (root device, uuid, device type) when
//!   the interface has an address and again every half `max-age` of virtual
//!   time, and `ssdp:byebye` for each when it stops (spawn it with
//!   `spawn_orderly` so a power-off waits for the byebye). Multicast is sent
//!   only from a non-loopback address: in host mode (127.77.x.y) there is no
//!   multicast segment, and a client reaches the device with a unicast
//!   search, as with DPWS.
//! - With a [`Discovered`] list (the EVCE), it also sends an `M-SEARCH` for
//!   [`STATION_TYPE`] when it comes up, again after [`EARLY_SEARCHES`]
//!   (stations booting at the same time), then every [`SEARCH_PERIOD`] of
//!   virtual time, and records every station that answers or announces
//!   itself (by box id and address; a station that says `byebye` or whose
//!   `max-age` runs out is dropped). Discovered is not enrolled: see
//!   [`super::enrollment`].
//! - A datagram that is not SSDP is dropped and counted (`ssdp_bad`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::DeviceContext;
use fieldtwin_emulator::net::{Datagram, Stack};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::proto::ssdp::{self, Description, Message, Nts};

/// Device type of the EVCE ([NF]).
pub const EVCE_TYPE: &str = "urn:schneider-electric-com:device:EVChargingExpert:1";
/// Device type of a charging station ([NF]).
pub const STATION_TYPE: &str = "urn:schneider-electric-com:device:EVChargingStation:1";
/// `CACHE-CONTROL: max-age` of the announcements (UDA's usual 1800 s).
pub const MAX_AGE: u32 = 1800;
/// How often the EVCE searches for stations ([NF]).
pub const SEARCH_PERIOD: Duration = Duration::from_secs(60);
/// Delays of the searches that follow the first one ([NF]).
pub const EARLY_SEARCHES: [Duration; 2] = [Duration::from_secs(3), Duration::from_secs(10)];

/// A station seen on the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub box_id: String,
    pub ip: Ipv4Addr,
    pub uuid: Option<String>,
    pub location: Option<String>,
    pub server: Option<String>,
    /// Site time after which the entry is dropped.
    pub expires: DateTime<Utc>,
}

/// The stations discovered by the EVCE (RAM only).
#[derive(Debug, Default)]
pub struct Discovered {
    map: Mutex<BTreeMap<(String, Ipv4Addr), Seen>>,
}

impl Discovered {
    /// The stations seen and not expired at `now`, by box id then address.
    pub fn list(&self, now: DateTime<Utc>) -> Vec<Seen> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, s| s.expires > now);
        m.values().cloned().collect()
    }

    /// Records what `from` said; returns whether it is new.
    pub fn record(&self, advert: &ssdp::Advert, from: Ipv4Addr, now: DateTime<Utc>) -> bool {
        let Some(box_id) = advert.box_id.clone().filter(|b| !b.is_empty()) else {
            return false;
        };
        let seen = Seen {
            box_id: box_id.clone(),
            ip: from,
            uuid: advert.uuid().map(str::to_string),
            location: advert.location.clone(),
            server: advert.server.clone(),
            expires: now + chrono::Duration::seconds(i64::from(advert.max_age.unwrap_or(MAX_AGE))),
        };
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((box_id, from), seen)
            .is_none()
    }

    /// Drops what `from` announced with uuid `uuid` (a byebye).
    pub fn forget(&self, uuid: Option<&str>, from: Ipv4Addr) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, ip), s| !(*ip == from && s.uuid.as_deref() == uuid));
    }

    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// What [`serve`] runs with.
pub struct Options {
    pub ctx: DeviceContext,
    pub stack: Arc<dyn Stack>,
    /// The device's description at an interface address.
    pub describe: Arc<dyn Fn(Ipv4Addr) -> Description + Send + Sync>,
    /// The EVCE's discovered stations; `None` for a station.
    pub discover: Option<Arc<Discovered>>,
}

/// The description of a charging station `box_id` at `ip`, with its OCPP
/// endpoint as LOCATION ([NF]).
pub fn station_description(box_id: &str, ip: Ipv4Addr, location: String) -> Description {
    Description {
        uuid: ssdp::uuid_from(&format!("station/{box_id}")),
        device_type: STATION_TYPE.into(),
        location: if location.is_empty() {
            format!("http://{ip}/")
        } else {
            location
        },
        server: "Linux/4.19 UPnP/1.0 EVlink/3.4".into(),
        max_age: MAX_AGE,
        box_id: Some(box_id.to_string()),
    }
}

/// The description of the EVCE `id` at `ip`, its web pages as LOCATION.
pub fn evce_description(id: &str, ip: Ipv4Addr, https_port: u16) -> Description {
    Description {
        uuid: ssdp::uuid_from(&format!("evce/{id}")),
        device_type: EVCE_TYPE.into(),
        location: if https_port == 443 {
            format!("https://{ip}/")
        } else {
            format!("https://{ip}:{https_port}/")
        },
        server: "Linux/5.10 UPnP/1.0 EVChargingExpert/5.2".into(),
        max_age: MAX_AGE,
        box_id: None,
    }
}

fn multicast_ok(ip: Ipv4Addr) -> bool {
    !ip.is_unspecified() && !ip.is_loopback()
}

fn group() -> SocketAddr {
    SocketAddr::from((ssdp::MULTICAST, ssdp::PORT))
}

async fn announce(udp: &dyn Datagram, d: &Description, nts: Nts) {
    for a in d.adverts() {
        let text = match nts {
            Nts::Byebye => ssdp::notify_byebye(&a),
            _ => ssdp::notify_alive(&a),
        };
        let _ = udp.send_to(text.as_bytes(), group()).await;
    }
    let _ = udp.flush().await;
}

/// Runs SSDP on one interface until `token` is cancelled (see the module
/// contract). A bind failure is reported as a device event and ends it.
pub async fn serve(o: Options, token: CancellationToken) {
    let udp = match o.stack.bind_udp(ssdp::PORT).await {
        Ok(u) => u,
        Err(e) => {
            o.ctx
                .emit("ssdp", format!("UDP {} not bound: {e}", ssdp::PORT));
            return;
        }
    };
    // Joining may fail on a loopback-only host: unicast searches still work.
    let _ = udp.join_multicast_v4(ssdp::MULTICAST);
    let mut address = o.stack.watch_ipv4();
    let clock: Clock = o.ctx.clock.clone();
    let bad = o.ctx.counter("ssdp_bad");
    let mut ip = o.stack.ipv4();
    let mut desc = (o.describe)(ip);
    let mut next_alive = Duration::ZERO;
    let mut next_search = Duration::ZERO;
    let mut searches = 0usize;
    let mut buf = vec![0u8; ssdp::MAX_DATAGRAM];
    let mut address_open = true;
    loop {
        let now = clock.now();
        if multicast_ok(ip) {
            if now >= next_alive {
                announce(&*udp, &desc, Nts::Alive).await;
                next_alive = now + Duration::from_secs(u64::from(desc.max_age / 2).max(1));
            }
            if o.discover.is_some() && now >= next_search {
                let _ = udp
                    .send_to(ssdp::search(STATION_TYPE, 2).as_bytes(), group())
                    .await;
                next_search = now
                    + EARLY_SEARCHES
                        .get(searches)
                        .copied()
                        .unwrap_or(SEARCH_PERIOD);
                searches += 1;
            }
        }
        let deadline = if o.discover.is_some() {
            next_alive.min(next_search)
        } else {
            next_alive
        };
        tokio::select! {
            _ = token.cancelled() => break,
            _ = clock.sleep_until(deadline), if multicast_ok(ip) => {}
            changed = address.changed(), if address_open => {
                match changed {
                    Ok(()) => {
                        ip = *address.borrow_and_update();
                        desc = (o.describe)(ip);
                        next_alive = Duration::ZERO;
                        next_search = Duration::ZERO;
                        searches = 0;
                    }
                    Err(_) => address_open = false,
                }
            }
            got = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                let SocketAddr::V4(from) = from else { continue };
                match ssdp::parse(&buf[..n]) {
                    Ok(Message::Search { target, .. }) => {
                        let date = crate::security::https::http_date(o.ctx.rtc.now());
                        let date = date.to_str().unwrap_or_default().to_string();
                        for a in desc.answers(&target) {
                            let _ = udp
                                .send_to(ssdp::response(&a, &date).as_bytes(), SocketAddr::V4(from))
                                .await;
                        }
                    }
                    Ok(Message::Notify { nts, advert }) => {
                        if let Some(d) = &o.discover
                            && *from.ip() != ip
                        {
                            match nts {
                                Nts::Byebye => d.forget(advert.uuid(), *from.ip()),
                                _ if advert.target == STATION_TYPE
                                    && d.record(&advert, *from.ip(), clock.utc_now()) =>
                                {
                                    o.ctx.emit("ssdp", format!("discovered station {} at {}", advert.box_id.as_deref().unwrap_or("?"), from.ip()));
                                }
                                _ => {}
                            }
                        }
                    }
                    Ok(Message::Response(advert)) => {
                        if let Some(d) = &o.discover
                            && advert.target == STATION_TYPE
                            && d.record(&advert, *from.ip(), clock.utc_now())
                        {
                            o.ctx.emit("ssdp", format!("discovered station {} at {}", advert.box_id.as_deref().unwrap_or("?"), from.ip()));
                        }
                    }
                    Err(_) => bad.inc(),
                }
            }
        }
    }
    if multicast_ok(ip) {
        announce(&*udp, &desc, Nts::Byebye).await;
    }
}
