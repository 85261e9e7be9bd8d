//! The EV Charging Expert's security surface as one part of the EVCE
//! device ([`super::device::Evce`] embeds it and boots it as part of its
//! own boot): web pages, SSH, SSDP, enrollment, factory reset, SD card,
//! local console; and a charging station's SSDP responder.
//!
//! Contract (what the node keeps):
//! - Boot ([`boot_surface`]): the stored firmware image must verify
//!   ([`super::policy::FIRMWARE_FAMILY`]) or the boot fails; at the very
//!   first boot the site's charging stations are enrolled (the installer's
//!   commissioning, [`COMMISSIONED_KEY`] then survives factory resets so a
//!   reset EVCE starts with no station); the boot is audited with its
//!   reason; HTTPS and SSH ([`super::web::start`]), SSDP with discovery
//!   ([`super::ssdp::serve`]) and the BMS Modbus TCP server
//!   ([`super::bms`], fed by the node's [`super::bms::Source`]) start on
//!   every interface under one boot token.
//! - [`super::web::Host::restart`] is a soft reboot: the boot's tasks stop
//!   (SSDP says byebye), with `wipe` NV memory is erased except
//!   [`SURVIVORS`] (firmware image, commissioning flag, RTC): accounts,
//!   enrolled stations, SSH setting, audit log, and whatever the OCPP side
//!   keeps (RFID badges, transaction history), then the boot runs again.
//! - SD card ([`SdCard`], the `sd_card` command): a card in the reader is
//!   read at boot, and only if it carries an image of the EVCE's family
//!   signed with the vendor key: that image is installed (audited
//!   `physical access`). Anything else on the card is not read; the boot
//!   goes on with the installed firmware and the refusal is audited.
//! - USB keyboard + HDMI display: the `usb_console` command types on the
//!   local console of [`super::console`].
//! - A charging station answers SSDP with its box id.
//!
//! Integration with the OCPP node: it keeps an [`Evce`] (made with
//! [`Evce::new`]) as its surface part, calls [`Evce::boot_part`] in its
//! boot under its boot token (with its own [`Host`], whose `restart` is a
//! soft reboot of the whole node, and its [`super::bms::Source`]), hands
//! `local_port` to [`Evce::local`], takes `credentials`, `details` and
//! [`SURVIVORS`] from here, and calls [`super::enrollment::admit`] in its
//! WebSocket handshake; a station calls [`start_station_ssdp`] at boot.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, Weak};

use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::{BootError, Credential, Details, DeviceContext};
use fieldtwin_emulator::local::{Exchange, LocalPort, Transcript};
use fieldtwin_emulator::site::{DeviceConfig, Model, Site};
use fieldtwin_emulator::storage::Nv;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::enrollment::{self, Station};
use super::policy;
use super::ssdp::{self as evssdp, Discovered};
use super::web::{self, Host, Web};
use crate::security::audit::Kind;
use crate::security::{self, firmware as sfw};

/// NV key set at the first boot (survives a factory reset).
pub const COMMISSIONED_KEY: &str = "evce.commissioned";
/// NV key of the reason of the next boot.
pub const RESTART_KEY: &str = "restart_reason";
/// What a factory reset keeps (besides the RTC).
pub const SURVIVORS: &[&str] = &[sfw::IMAGE_KEY, COMMISSIONED_KEY];
/// Firmware of a device without a stored image ([NF]).
pub const FACTORY_FIRMWARE: &str = "005.002.000";

/// An EV Charging Expert.
pub struct Evce {
    id: String,
    /// The site's stations, enrolled at the first boot.
    stations: Vec<Station>,
    iterations: u32,
    discovered: Arc<Discovered>,
    current: Mutex<Weak<Web>>,
    /// The card in the SD card reader (hardware: kept across reboots).
    sd: SdCard,
    console: super::console::Console,
}

/// The SD card reader: the card's content, if a card is in.
#[derive(Debug, Default)]
pub struct SdCard(Mutex<Option<Vec<u8>>>);

impl SdCard {
    /// Puts a card in (`Some`) or takes it out (`None`); what the reader
    /// says.
    pub fn insert(&self, image: Option<Vec<u8>>) -> String {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let said = match &image {
            Some(b) => format!(
                "SD card inserted ({} bytes); it is read at the next boot",
                b.len()
            ),
            None if slot.is_some() => "SD card removed".to_string(),
            None => "the SD card reader is empty".to_string(),
        };
        *slot = image;
        said
    }

    fn content(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The boot's look at the SD card: installs a signed image of the EVCE's
/// family, audits a refusal (see the module contract).
pub fn read_sd_card(ctx: &DeviceContext, card: Option<Vec<u8>>) -> Result<(), BootError> {
    let Some(bytes) = card else {
        return Ok(());
    };
    let detail = match sfw::verify(&bytes, policy::FIRMWARE_FAMILY) {
        Ok(img) => {
            if ctx.nv.get_raw(sfw::IMAGE_KEY)?.as_deref() == Some(&bytes[..]) {
                return Ok(());
            }
            ctx.nv.put_raw(sfw::IMAGE_KEY, &bytes)?;
            format!("SD card: signed firmware {} installed at boot", img.version)
        }
        Err(e) => format!("SD card ignored at boot: not a signed EV Charging Expert image ({e})"),
    };
    if let Err(e) =
        crate::security::audit::record(&ctx.nv, ctx.rtc.now(), Kind::PhysicalAccess, detail.clone())
    {
        tracing::error!("{}: audit log write failed: {e}", ctx.id);
    }
    ctx.emit(
        "audit",
        format!("{}: {detail}", Kind::PhysicalAccess.name()),
    );
    Ok(())
}

impl Evce {
    pub fn new(site: &Site, dev: &DeviceConfig) -> Self {
        Self {
            id: dev.id.clone(),
            stations: site_stations(site),
            iterations: security::password::DEFAULT_ITERATIONS,
            discovered: Arc::new(Discovered::default()),
            current: Mutex::new(Weak::new()),
            sd: SdCard::default(),
            console: Default::default(),
        }
    }

    /// The surface's part of a boot of the EVCE node (this device's, or
    /// the OCPP node's that embeds this struct): the local console back to
    /// its prompt, the SD card read, then [`boot_surface`] with `bms` as
    /// the Modbus server's source and `host` (made from the firmware
    /// version found) as the node's [`Host`]. Everything runs under
    /// `token`/`tracker`, which the node's soft reboot cancels and awaits.
    pub async fn boot_part(
        &self,
        ctx: &DeviceContext,
        token: &CancellationToken,
        tracker: &TaskTracker,
        bms: Arc<dyn super::bms::Source>,
        host: impl FnOnce(String) -> Arc<dyn Host>,
    ) -> Result<Arc<Web>, BootError> {
        self.console.reset();
        read_sd_card(ctx, self.sd.content())?;
        let parts = Parts {
            stations: &self.stations,
            iterations: self.iterations,
            discovered: self.discovered.clone(),
            bms,
        };
        let web = boot_surface(ctx, parts, token, tracker, host).await?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&web);
        Ok(web)
    }

    /// The local ports (USB keyboard + HDMI console, SD card reader); the
    /// node's [`Device::local_port`] hands them here.
    pub async fn local(&self, port: LocalPort) -> Result<Transcript, String> {
        match port {
            LocalPort::SdCard { image } => {
                let said = self.sd.insert(image);
                Ok(Transcript {
                    device: self.id.clone(),
                    port: "sd".into(),
                    exchanges: vec![Exchange {
                        sent: "card".into(),
                        answer: Some(said),
                        closed: false,
                    }],
                })
            }
            LocalPort::Usb { lines } => {
                let web = self
                    .running()
                    .filter(|w| !w.token.is_cancelled())
                    .ok_or_else(|| format!("{} is off: the HDMI display shows nothing", self.id))?;
                Ok(self.console.type_lines(&web, lines).await)
            }
            LocalPort::Ble { .. } => Err(format!(
                "device {} (EVChargingExpert) has no BLE link; it has a USB keyboard + HDMI console (usb_console) and an SD card reader (sd_card)",
                self.id
            )),
        }
    }

    /// With `stations` enrolled at the first boot instead of the site's.
    pub fn with_stations(mut self, stations: Vec<Station>) -> Self {
        self.stations = stations;
        self
    }

    /// The default account's credentials (the node's `credentials`).
    pub fn credentials(&self) -> Vec<Credential> {
        vec![Credential {
            service: "https".into(),
            user: policy::ADMIN_USER.into(),
            password: format!(
                "{} (factory password: the first login must change it)",
                policy::DEFAULT_PASSWORD
            ),
        }]
    }

    /// The surface's part of the node's status (lockout, audit tail).
    pub fn details(&self, nv: &Nv, clock: &Clock) -> Details {
        let (lockout, audit_tail) = security::details(nv, &policy::POLICY.lockout, clock.utc_now());
        Details {
            web_lockout: Some(lockout),
            audit_tail,
            ..Details::default()
        }
    }

    /// With `iterations` of PBKDF2 (tests).
    pub fn with_iterations(mut self, iterations: u32) -> Self {
        self.iterations = iterations;
        self
    }

    /// The web surface of the running boot.
    pub fn running(&self) -> Option<Arc<Web>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
    }
}

/// The site's charging stations, by device id as box id.
pub fn site_stations(site: &Site) -> Vec<Station> {
    site.devices
        .iter()
        .filter(|d| d.model == Model::ChargingStation)
        .map(|d| Station {
            box_id: d.id.clone(),
            ip: d.ip,
            uuid: Some(crate::proto::ssdp::uuid_from(&format!("station/{}", d.id))),
        })
        .collect()
}

/// What the node gives [`boot_surface`].
pub struct Parts<'a> {
    /// The site's stations, enrolled at the first boot.
    pub stations: &'a [Station],
    /// PBKDF2 iterations of the accounts.
    pub iterations: u32,
    /// The SSDP discoveries (kept across reboots by the node; cleared at
    /// boot).
    pub discovered: Arc<Discovered>,
    /// What the BMS Modbus server shows.
    pub bms: Arc<dyn super::bms::Source>,
}

/// The EVCE's part of a boot (see the module contract): `host` makes the
/// node's [`Host`] from the firmware version found.
pub async fn boot_surface(
    ctx: &DeviceContext,
    parts: Parts<'_>,
    token: &CancellationToken,
    tracker: &TaskTracker,
    host: impl FnOnce(String) -> Arc<dyn Host>,
) -> Result<Arc<Web>, BootError> {
    let Parts {
        stations,
        iterations,
        discovered,
        bms,
    } = parts;
    let nv = &ctx.nv;
    let image = sfw::verify_stored(nv, policy::FIRMWARE_FAMILY)?;
    let firmware = image.map_or_else(|| FACTORY_FIRMWARE.to_string(), |i| i.version);
    let first = nv.get::<bool>(COMMISSIONED_KEY)?.is_none();
    if first {
        enrollment::commission(nv, stations)?;
        nv.put(COMMISSIONED_KEY, &true)?;
    }
    discovered.clear();
    let reason: Option<String> = nv.get(RESTART_KEY)?;
    nv.remove(RESTART_KEY)?;
    let web = Web::new(
        ctx.clone(),
        iterations,
        host(firmware.clone()),
        discovered.clone(),
        token.clone(),
        tracker.clone(),
    );
    let why = match reason {
        Some(r) => r,
        None if first => "first boot with factory settings".into(),
        None => "power on".into(),
    };
    web.audit(Kind::Boot, format!("{why}; firmware {firmware}"));
    web::start(&web).await?;
    super::bms::start(&web, bms).await?;
    let id = ctx.id.to_string();
    for iface in ctx.interface_names() {
        let Some(stack) = ctx.interface(&iface) else {
            continue;
        };
        let id = id.clone();
        let o = evssdp::Options {
            ctx: ctx.clone(),
            stack,
            describe: Arc::new(move |ip| evssdp::evce_description(&id, ip, web::HTTPS_PORT)),
            discover: Some(discovered.clone()),
        };
        ctx.spawn_orderly(tracker.track_future(evssdp::serve(o, token.clone())));
    }
    Ok(web)
}

/// Starts a station's SSDP responder on every interface (a boot step of a
/// station `box_id`).
pub fn start_station_ssdp(ctx: &DeviceContext, box_id: &str, token: &CancellationToken) {
    for iface in ctx.interface_names() {
        let Some(stack) = ctx.interface(&iface) else {
            continue;
        };
        let b = box_id.to_string();
        let o = evssdp::Options {
            ctx: ctx.clone(),
            stack,
            describe: Arc::new(move |ip: Ipv4Addr| {
                evssdp::station_description(&b, ip, String::new())
            }),
            discover: None,
        };
        ctx.spawn_orderly(evssdp::serve(o, token.clone()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fieldtwin_emulator::device::Device;
    use std::collections::BTreeMap;

    use fieldtwin_emulator::control::EventBus;
    use fieldtwin_emulator::device::{DeviceSetup, Power, Runtime};
    use fieldtwin_emulator::net::Stack;
    use fieldtwin_emulator::net::host::HostStack;
    use fieldtwin_emulator::site::RtcConfig;
    use fieldtwin_emulator::storage::Store;

    use super::*;
    use crate::evce::enrollment::{Refusal, admit};
    use crate::proto::ssdp::{self, Message};
    use crate::security::{accounts, audit};

    fn add(rt: &mut Runtime, device: Arc<dyn Device>, ip: Ipv4Addr) {
        let mut ifs: BTreeMap<String, Arc<dyn Stack>> = BTreeMap::new();
        ifs.insert("eth1".into(), Arc::new(HostStack::new(ip)));
        rt.add(DeviceSetup {
            device,
            interfaces: ifs,
            rtc: RtcConfig::default(),
            seed: 1,
        })
        .unwrap();
    }

    async fn search(to: Ipv4Addr, target: &str) -> Vec<ssdp::Advert> {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(ssdp::search(target, 1).as_bytes(), (to, ssdp::PORT))
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await
        {
            if let Ok(Message::Response(a)) = ssdp::parse(&buf[..n]) {
                out.push(a);
            }
        }
        out
    }

    /// Issue 11 items 6-8 at the level of the model: SSDP answers, the
    /// rogue-station check, SSH's switch and the factory reset.
    #[tokio::test]
    async fn surface_ssdp_rogue_ssh_and_factory_reset() {
        let mut site = Site::default_site();
        for d in &mut site.devices {
            d.ip = Ipv4Addr::new(127, 77, 219, d.ip.octets()[3]);
            // No upstream CSMS here (the default site's would be at its
            // 10.77.0.24).
            d.evce = None;
        }
        let dev = site.device("evce1").unwrap().clone();
        let evce = Arc::new(crate::evce::device::Evce::new(&site, &dev).with_iterations(10));
        let clock = Clock::start(chrono::Utc::now(), 1.0).unwrap();
        let mut rt = Runtime::new(
            clock,
            Store::open(None).unwrap(),
            EventBus::new(),
            Duration::from_secs(3600),
        );
        let ip = dev.ip;
        let cs1 = site.device("cs1").unwrap().clone();
        add(&mut rt, evce.clone(), ip);
        add(
            &mut rt,
            Arc::new(crate::charging_station::ChargingStation::new(&site, &cs1)),
            cs1.ip,
        );
        assert_eq!(rt.power_on("evce1").await.unwrap(), Power::On);
        assert_eq!(rt.power_on("cs1").await.unwrap(), Power::On);
        let nv = rt.nv("evce1").unwrap();

        // SSDP: unicast searches get the device's answers.
        let a = search(cs1.ip, ssdp::ALL).await;
        assert_eq!(a.len(), 3, "{a:?}");
        assert!(a.iter().all(|a| a.box_id.as_deref() == Some("cs1")));
        let a = search(ip, evssdp::EVCE_TYPE).await;
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].location.as_deref().unwrap().starts_with("https://"));
        assert!(search(ip, evssdp::STATION_TYPE).await.is_empty());

        // Commissioned: the site's stations are enrolled; cs1 from its own
        // address passes, from another address it is a rogue station.
        let web = evce.surface().running().unwrap();
        let ctx = web.ctx.clone();
        assert!(admit(&ctx, "cs1", cs1.ip).is_ok());
        let rogue = Ipv4Addr::new(127, 77, 219, 99);
        let mut events = ctx.events.subscribe();
        let r = admit(&ctx, "cs1", rogue).unwrap_err();
        assert!(matches!(r, Refusal::Rogue { enrolled, .. } if enrolled == cs1.ip));
        assert!(matches!(
            admit(&ctx, "cs9", rogue),
            Err(Refusal::NotEnrolled { .. })
        ));
        // A station enrolled without an address is pinned at its first
        // connection.
        enrollment::enroll(
            &nv,
            Station {
                box_id: "cp3".into(),
                ip: Ipv4Addr::UNSPECIFIED,
                uuid: None,
            },
        )
        .unwrap();
        assert!(admit(&ctx, "cp3", Ipv4Addr::new(127, 0, 0, 1)).is_ok());
        assert!(admit(&ctx, "cp3", Ipv4Addr::new(127, 0, 0, 1)).is_ok());
        assert!(matches!(
            admit(&ctx, "cp3", rogue),
            Err(Refusal::Rogue { enrolled, .. }) if enrolled == Ipv4Addr::new(127, 0, 0, 1)
        ));
        let log = audit::read(&nv).unwrap();
        assert!(
            log.iter().any(|e| e.kind == audit::Kind::StationRefused
                && e.detail.contains("rogue station")
                && e.detail.contains("127.77.219.99")),
            "{log:?}"
        );
        let mut alert = false;
        while let Ok(ev) = events.try_recv() {
            alert |= matches!(ev, fieldtwin_emulator::control::Event::Device { kind, .. } if kind == "alert");
        }
        assert!(alert, "no alert event");

        // SSH: closed by default, opened and closed by the switch, audited.
        let ssh_open = || async move {
            tokio::net::TcpStream::connect((ip, super::super::ssh::PORT))
                .await
                .is_ok()
        };
        assert!(!ssh_open().await);
        super::super::ssh::set(&web, true, "test").await.unwrap();
        assert!(ssh_open().await);
        let log = audit::read(&nv).unwrap();
        assert!(log.iter().any(|e| e.kind == audit::Kind::ServiceEnabled));

        // Factory reset from the pages: accounts, enrolled stations, SSH,
        // and the OCPP side's data (badges, history) are erased; the
        // firmware and the commissioning flag survive.
        web.accounts_ready().await.unwrap();
        nv.put("ocpp.local_list", &vec!["BADGE1"]).unwrap();
        nv.put("ocpp.transactions", &vec![1, 2, 3]).unwrap();
        let ocpp_port = fieldtwin_emulator::site::OCPP_WS_PORT;
        let ocpp_open = || async move {
            tokio::net::TcpStream::connect((ip, ocpp_port))
                .await
                .is_ok()
        };
        assert!(ocpp_open().await, "the OCPP server runs");
        let old_ocpp = evce.ocpp().unwrap();
        web.host.restart("factory reset from the test", true);
        drop(web);
        let t0 = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let log = audit::read(&nv).unwrap_or_default();
            if log.iter().any(|e| {
                e.kind == audit::Kind::Boot && e.detail.starts_with("factory reset from the test")
            }) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no reboot");
        }
        assert!(nv.get_raw(accounts::KEY).unwrap().is_none());
        assert!(nv.get_raw("ocpp.local_list").unwrap().is_none());
        assert!(nv.get_raw("ocpp.transactions").unwrap().is_none());
        assert!(enrollment::list(&nv).is_empty(), "not re-commissioned");
        assert!(!ssh_open().await, "SSH is off again");
        assert!(matches!(
            admit(&evce.surface().running().unwrap().ctx, "cs1", cs1.ip),
            Err(Refusal::NotEnrolled { .. })
        ));
        // The OCPP side was stopped with the boot and started again: the
        // new boot's server bound its port (a leftover server would make
        // the bind, hence the boot, fail).
        let t0 = std::time::Instant::now();
        while !(evce.ocpp().is_some_and(|o| !Arc::ptr_eq(&o, &old_ocpp)) && ocpp_open().await) {
            assert!(t0.elapsed() < Duration::from_secs(10), "OCPP not back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let web = evce.surface().running().unwrap();
        assert!(!web.token.is_cancelled(), "the boot after the reset failed");
        drop(web);
        rt.power_off("evce1").await.unwrap();
        rt.power_off("cs1").await.unwrap();
    }
}
