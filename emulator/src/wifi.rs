//! Wi-Fi at the association level (no 802.11 frames): the access points
//! devices put on the air and which stations are associated with them
//! (DESIGN.md "Networking", Radio: Wi-Fi is modelled at the association
//! level, each side a real interface on a segment; DOCA0211 "Wireless
//! Network", "Disable Unused Features"; docs/panel-server.md "Wi-Fi").
//!
//! Contract:
//! - [`admit`] is the one decision, pure: the SSID must be on the air, the
//!   client must offer WPA2 with CCMP (a client offering TKIP is refused
//!   whatever its passphrase: DOCA0211 "TKIP is not supported"), and the
//!   passphrase must be the access point's.
//! - [`Air`] is the site's Wi-Fi. A device *arms* its access point
//!   ([`Air::arm`]) while its settings have it enabled, on the interface
//!   (a [`Stack`]) that stands for the access point's side, and *disarms*
//!   it ([`Air::disarm`]) when they no longer do. An armed access point
//!   goes on the air only when the device's front-face button is pressed
//!   ([`Air::button`]); the button of a device whose access point is not
//!   armed (disabled, Wi-Fi deactivated, no access point on that model or
//!   firmware) starts nothing and says why.
//! - Association gates the access point's interface like a cable: its
//!   carrier ([`Stack::set_carrier`]) is up only while the access point is
//!   on the air and at least one station is associated, so nothing reaches
//!   the device's services over the access point before a successful
//!   [`Air::associate`] (`wifi_associate` command).
//! - Disarming (Wi-Fi deactivated, access point disabled, reboot, power
//!   off) takes the access point off the air and drops every station; new
//!   settings (SSID, passphrase) do too.
//! - Every association, refusal and drop is a device event of kind `wifi`.
//! - Idle timeout ([NF]): an access point on the air with no station
//!   associated for [`IDLE_TIMEOUT`] of virtual time (since it went on the
//!   air or its last station left) goes off the air ([`Air::expire_idle`],
//!   called by the device at least every minute); it stays enabled, and
//!   the button puts it on the air again. The site's networks never time
//!   out.
//! - Infrastructure mode: the site file's Wi-Fi networks ([`Air::add_network`],
//!   a segment's `wifi_ssid`) are access points always on the air, listed
//!   as device `segment:NAME`. A device joins one as a station
//!   ([`Air::join`]) with its station interface, whose carrier is up only
//!   while it is associated; a refusal (no such SSID on the air, TKIP,
//!   wrong passphrase) leaves it down and is shown in [`Air::stations`].
//!   A station that is not associated tries again whenever an access point
//!   is armed or goes on the air; one whose access point goes away, or
//!   that leaves it ([`Air::disassociate`], `wifi_disassociate` naming the
//!   device as station), is dropped (carrier down) and waits for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::control::{Event, EventBus};
use crate::net::Stack;

/// The pairwise cipher a client offers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cipher {
    /// WPA2 (RSN) with AES-CCMP.
    #[default]
    #[serde(alias = "wpa2", alias = "aes")]
    Ccmp,
    /// WPA with TKIP (not supported by the Panel Server).
    #[serde(alias = "wpa")]
    Tkip,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Ccmp => "WPA2 (CCMP)",
            Cipher::Tkip => "WPA (TKIP)",
        }
    }
}

/// How long an access point stays on the air without a station ([NF]).
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The station name of the host side (the lab's client: the TAP in TAP
/// mode, the host's loopback in host mode).
pub const HOST: &str = "host";

/// What a client offers when it associates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub ssid: String,
    pub passphrase: String,
    pub cipher: Cipher,
}

/// Why an association (or a button press) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no access point with SSID {ssid:?} is on the air (on the air: {on_air})")]
    NotOnAir { ssid: String, on_air: String },
    #[error("{ssid}: TKIP is not supported; associate with WPA2 (cipher \"ccmp\")")]
    Tkip { ssid: String },
    #[error("{ssid}: wrong passphrase (the 4-way handshake failed)")]
    Passphrase { ssid: String },
    #[error("{0}")]
    Other(String),
}

/// An access point as a device configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoint {
    pub ssid: String,
    /// WPA2 passphrase.
    pub passphrase: String,
}

/// The one decision of an association (see the module contract): `ap` is
/// the access point on the air with the SSID offered, if any; `on_air`
/// names every SSID on the air (for the message).
pub fn admit(ap: Option<&AccessPoint>, offer: &Offer, on_air: &[String]) -> Result<(), Refusal> {
    let Some(ap) = ap.filter(|a| a.ssid == offer.ssid) else {
        return Err(Refusal::NotOnAir {
            ssid: offer.ssid.clone(),
            on_air: if on_air.is_empty() {
                "none".into()
            } else {
                on_air.join(", ")
            },
        });
    };
    if offer.cipher == Cipher::Tkip {
        return Err(Refusal::Tkip {
            ssid: ap.ssid.clone(),
        });
    }
    if offer.passphrase != ap.passphrase {
        return Err(Refusal::Passphrase {
            ssid: ap.ssid.clone(),
        });
    }
    Ok(())
}

/// One armed access point, as the control API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessPointStatus {
    pub device: String,
    pub ssid: String,
    /// On the air (the button was pressed since it was armed).
    pub on_air: bool,
    /// Associated stations (`host` or a device id).
    pub stations: Vec<String>,
}

/// A device's Wi-Fi station (infrastructure mode), as the control API
/// shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StationStatus {
    pub device: String,
    pub ssid: String,
    pub cipher: Cipher,
    /// The access point it is associated with (`segment:NAME` or a device
    /// id); `None`: not associated.
    pub associated: Option<String>,
    /// Why it is not associated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct StationEntry {
    offer: Offer,
    stack: Option<Arc<dyn Stack>>,
    associated: Option<String>,
    error: Option<String>,
}

struct Ap {
    settings: AccessPoint,
    /// The interface of the access point's side (none: associations are
    /// recorded, nothing is reachable).
    stack: Option<Arc<dyn Stack>>,
    on_air: bool,
    stations: BTreeSet<String>,
    /// Virtual time since which it is on the air without a station.
    idle_since: Option<std::time::Duration>,
}

/// The site's Wi-Fi (see the module contract).
pub struct Air {
    aps: Mutex<BTreeMap<String, Ap>>,
    stations: Mutex<BTreeMap<String, StationEntry>>,
    events: EventBus,
    /// The site's clock (idle timeouts); none: they never expire.
    clock: Option<crate::clock::WeakClock>,
}

impl std::fmt::Debug for Air {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Air")
            .field("access_points", &self.access_points())
            .finish()
    }
}

impl Air {
    /// The Wi-Fi of a site; its events go to `events`.
    pub fn new(events: EventBus) -> Self {
        Self {
            aps: Mutex::new(BTreeMap::new()),
            stations: Mutex::new(BTreeMap::new()),
            events,
            clock: None,
        }
    }

    /// The same, with idle timeouts on `clock`'s virtual time.
    pub fn with_clock(events: EventBus, clock: &crate::clock::Clock) -> Self {
        Self {
            clock: Some(clock.downgrade()),
            ..Self::new(events)
        }
    }

    fn now(&self) -> Option<std::time::Duration> {
        self.clock.as_ref()?.upgrade().map(|c| c.now())
    }

    /// Keeps `idle_since` of every access point right after a change.
    fn mark_idle(&self) {
        let now = self.now();
        for ap in self.lock().values_mut() {
            if ap.on_air && ap.stations.is_empty() {
                ap.idle_since = ap.idle_since.or(now);
            } else {
                ap.idle_since = None;
            }
        }
    }

    /// Takes `device`'s access point off the air if it has been on the air
    /// without a station for [`IDLE_TIMEOUT`] at virtual time `now`;
    /// whether it did.
    pub fn expire_idle(&self, device: &str, now: std::time::Duration) -> bool {
        let mut aps = self.lock();
        let Some(ap) = aps.get_mut(device) else {
            return false;
        };
        match ap.idle_since {
            Some(t) if ap.on_air && ap.stations.is_empty() && now >= t + IDLE_TIMEOUT => {
                ap.on_air = false;
                ap.idle_since = None;
                let ssid = ap.settings.ssid.clone();
                drop(aps);
                self.emit(
                    device,
                    format!(
                        "access point {ssid} off the air: no station for {} minutes (press the button to start it again)",
                        IDLE_TIMEOUT.as_secs() / 60
                    ),
                );
                true
            }
            _ => false,
        }
    }

    fn lock_stations(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StationEntry>> {
        self.stations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The site's Wi-Fi networks (segments with `wifi_ssid`): access points
    /// always on the air, named `segment:NAME`.
    pub fn add_networks(&self, site: &crate::site::Site) {
        for g in &site.segments {
            if let (Some(ssid), Some(p)) = (&g.wifi_ssid, &g.wifi_passphrase) {
                self.lock().insert(
                    format!("segment:{}", g.name),
                    Ap {
                        settings: AccessPoint {
                            ssid: ssid.clone(),
                            passphrase: p.clone(),
                        },
                        stack: None,
                        on_air: true,
                        stations: BTreeSet::new(),
                        idle_since: None,
                    },
                );
            }
        }
    }

    /// `device` joins the network `offer` names as a station, with its
    /// station interface `stack` (replacing a station it had).
    pub fn join(&self, device: &str, offer: Offer, stack: Option<Arc<dyn Stack>>) {
        self.leave(device, "joining again");
        carrier(&stack, false);
        self.lock_stations().insert(
            device.to_string(),
            StationEntry {
                offer,
                stack,
                associated: None,
                error: None,
            },
        );
        self.retry();
    }

    /// `device` no longer uses Wi-Fi as a station (`why` in the event).
    pub fn leave(&self, device: &str, why: &str) {
        let Some(st) = self.lock_stations().remove(device) else {
            return;
        };
        carrier(&st.stack, false);
        if st.associated.is_some() {
            let _ = self.disassociate(&st.offer.ssid, device);
            self.emit(device, format!("station left {} ({why})", st.offer.ssid));
        }
    }

    /// The devices' stations.
    pub fn stations(&self) -> Vec<StationStatus> {
        self.lock_stations()
            .iter()
            .map(|(d, st)| StationStatus {
                device: d.clone(),
                ssid: st.offer.ssid.clone(),
                cipher: st.offer.cipher,
                associated: st.associated.clone(),
                error: st.error.clone(),
            })
            .collect()
    }

    /// Stations not associated try to associate; the ones whose access
    /// point is gone are dropped.
    fn retry(&self) {
        let pending: Vec<(String, Offer, bool)> = {
            let aps = self.lock();
            self.lock_stations()
                .iter()
                .map(|(d, st)| {
                    let still = st.associated.as_ref().is_some_and(|ap| {
                        aps.get(ap)
                            .is_some_and(|a| a.on_air && a.stations.contains(d))
                    });
                    (d.clone(), st.offer.clone(), still)
                })
                .collect()
        };
        for (device, offer, still) in pending {
            if still {
                continue;
            }
            let r = self.associate(&offer, &device);
            let mut sts = self.lock_stations();
            let Some(st) = sts.get_mut(&device) else {
                continue;
            };
            let before = st.error.clone();
            match r {
                Ok(ap) => {
                    st.associated = Some(ap);
                    st.error = None;
                    carrier(&st.stack, true);
                }
                Err(e) => {
                    st.associated = None;
                    st.error = Some(e.to_string());
                    carrier(&st.stack, false);
                    if before.as_deref() != Some(&e.to_string()) {
                        drop(sts);
                        self.emit(
                            &device,
                            format!("station could not join {}: {e}", offer.ssid),
                        );
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Ap>> {
        self.aps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, device: &str, message: String) {
        self.events.send(Event::Device {
            device: device.to_string(),
            kind: "wifi".into(),
            message,
        });
    }

    /// `device`'s access point is enabled with `ap` on interface `stack`
    /// (not on the air until [`Air::button`]). Arming again with the same
    /// settings changes nothing; with other settings the stations are
    /// dropped and the access point stays on the air if it was.
    pub fn arm(&self, device: &str, ap: AccessPoint, stack: Option<Arc<dyn Stack>>) {
        let mut aps = self.lock();
        if let Some(cur) = aps.get_mut(device) {
            if cur.settings == ap {
                return;
            }
            let dropped = std::mem::take(&mut cur.stations);
            carrier(&cur.stack, false);
            cur.settings = ap.clone();
            cur.stack = stack;
            drop(aps);
            self.drop_stations_of(device);
            self.retry();
            self.mark_idle();
            if !dropped.is_empty() {
                self.emit(
                    device,
                    format!(
                        "access point settings changed (SSID {}); stations dropped: {}",
                        ap.ssid,
                        join(&dropped)
                    ),
                );
            }
            return;
        }
        carrier(&stack, false);
        aps.insert(
            device.to_string(),
            Ap {
                settings: ap,
                stack,
                on_air: false,
                stations: BTreeSet::new(),
                idle_since: None,
            },
        );
    }

    /// `device`'s access point is no longer enabled: off the air, every
    /// station dropped, its interface's carrier down. `why` goes in the
    /// event.
    pub fn disarm(&self, device: &str, why: &str) {
        let Some(ap) = self.lock().remove(device) else {
            return;
        };
        carrier(&ap.stack, false);
        if !ap.on_air {
            return;
        }
        self.drop_stations_of(device);
        let dropped = if ap.stations.is_empty() {
            String::new()
        } else {
            format!("; stations dropped: {}", join(&ap.stations))
        };
        self.emit(
            device,
            format!(
                "access point {} off the air ({why}){dropped}",
                ap.settings.ssid
            ),
        );
    }

    /// The front-face button of `device`: puts its access point on the air
    /// if it is armed. Returns the SSID.
    pub fn button(&self, device: &str) -> Result<String, Refusal> {
        let mut aps = self.lock();
        let Some(ap) = aps.get_mut(device) else {
            drop(aps);
            let m = format!(
                "the access point of {device} is not enabled (Wi-Fi deactivated, access point disabled, \
                 or none on this model or firmware), so its button does not start it"
            );
            self.emit(device, format!("front-face button pressed: {m}"));
            return Err(Refusal::Other(m));
        };
        let ssid = ap.settings.ssid.clone();
        let was = std::mem::replace(&mut ap.on_air, true);
        drop(aps);
        if !was {
            self.emit(
                device,
                format!("front-face button pressed: access point {ssid} on the air"),
            );
            self.retry();
        }
        self.mark_idle();
        Ok(ssid)
    }

    /// Whether `device`'s access point is on the air.
    pub fn on_air(&self, device: &str) -> bool {
        self.lock().get(device).is_some_and(|a| a.on_air)
    }

    /// The armed access points.
    pub fn access_points(&self) -> Vec<AccessPointStatus> {
        self.lock()
            .iter()
            .map(|(device, ap)| AccessPointStatus {
                device: device.clone(),
                ssid: ap.settings.ssid.clone(),
                on_air: ap.on_air,
                stations: ap.stations.iter().cloned().collect(),
            })
            .collect()
    }

    /// Station `station` (`host` or a device id) associates with the access
    /// point whose SSID it offers. Returns the access point's device id.
    pub fn associate(&self, offer: &Offer, station: &str) -> Result<String, Refusal> {
        let mut aps = self.lock();
        let on_air: Vec<String> = aps
            .values()
            .filter(|a| a.on_air)
            .map(|a| a.settings.ssid.clone())
            .collect();
        let found = aps
            .iter()
            .find(|(_, a)| a.on_air && a.settings.ssid == offer.ssid)
            .map(|(d, a)| (d.clone(), a.settings.clone()));
        if let Err(r) = admit(found.as_ref().map(|(_, a)| a), offer, &on_air) {
            drop(aps);
            if let Some((device, _)) = &found {
                self.emit(device, format!("association of {station} refused: {r}"));
            }
            return Err(r);
        }
        let (device, settings) = found.expect("admitted, so on the air");
        if device == station {
            return Err(Refusal::Other(format!(
                "{station} is the access point itself"
            )));
        }
        let ap = aps.get_mut(&device).expect("found above");
        ap.stations.insert(station.to_string());
        ap.idle_since = None;
        carrier(&ap.stack, true);
        drop(aps);
        self.emit(
            &device,
            format!(
                "{station} associated with {} ({})",
                settings.ssid,
                Cipher::Ccmp.name()
            ),
        );
        Ok(device)
    }

    /// Station `station` leaves the access point with SSID `ssid`.
    pub fn disassociate(&self, ssid: &str, station: &str) -> Result<String, Refusal> {
        let mut aps = self.lock();
        let on_air: Vec<String> = aps
            .values()
            .filter(|a| a.on_air)
            .map(|a| a.settings.ssid.clone())
            .collect();
        let Some((device, ap)) = aps
            .iter_mut()
            .find(|(_, a)| a.on_air && a.settings.ssid == ssid)
        else {
            return Err(Refusal::NotOnAir {
                ssid: ssid.to_string(),
                on_air: if on_air.is_empty() {
                    "none".into()
                } else {
                    on_air.join(", ")
                },
            });
        };
        if !ap.stations.remove(station) {
            return Err(Refusal::Other(format!(
                "{station} is not associated with {ssid}"
            )));
        }
        if ap.stations.is_empty() {
            carrier(&ap.stack, false);
        }
        let device = device.clone();
        drop(aps);
        // A device station that left is no longer associated: its carrier
        // goes down, and it waits for an access point to go on the air.
        if let Some(st) = self.lock_stations().get_mut(station)
            && st.associated.as_deref() == Some(device.as_str())
        {
            st.associated = None;
            st.error = Some(format!("left {ssid}"));
            carrier(&st.stack, false);
        }
        self.mark_idle();
        self.emit(&device, format!("{station} left {ssid}"));
        Ok(device)
    }

    /// The device stations associated with access point `ap` lose it.
    fn drop_stations_of(&self, ap: &str) {
        for st in self.lock_stations().values_mut() {
            if st.associated.as_deref() == Some(ap) {
                st.associated = None;
                st.error = Some(format!("access point {} off the air", st.offer.ssid));
                carrier(&st.stack, false);
            }
        }
    }

    /// `device` lost power: its access point is disarmed and it leaves the
    /// access points it was a station of.
    pub fn device_off(&self, device: &str) {
        self.leave(device, "the device is off");
        self.disarm(device, "the device is off");
        let ssids: Vec<String> = self
            .lock()
            .values()
            .filter(|a| a.stations.contains(device))
            .map(|a| a.settings.ssid.clone())
            .collect();
        for ssid in ssids {
            let _ = self.disassociate(&ssid, device);
        }
    }
}

fn carrier(stack: &Option<Arc<dyn Stack>>, up: bool) {
    if let Some(s) = stack {
        s.set_carrier(up);
    }
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::host::HostStack;

    fn offer(ssid: &str, pass: &str, cipher: Cipher) -> Offer {
        Offer {
            ssid: ssid.into(),
            passphrase: pass.into(),
            cipher,
        }
    }

    #[test]
    fn wpa2_only_and_the_right_passphrase() {
        let ap = AccessPoint {
            ssid: "PAS600L-0251".into(),
            passphrase: "Ab3dEf7hJk9m".into(),
        };
        let air = ["PAS600L-0251".to_string()];
        assert_eq!(
            admit(
                Some(&ap),
                &offer("PAS600L-0251", "Ab3dEf7hJk9m", Cipher::Ccmp),
                &air
            ),
            Ok(())
        );
        // TKIP is refused even with the right passphrase.
        let r = admit(
            Some(&ap),
            &offer("PAS600L-0251", "Ab3dEf7hJk9m", Cipher::Tkip),
            &air,
        );
        assert!(matches!(r, Err(Refusal::Tkip { .. })), "{r:?}");
        assert!(r.unwrap_err().to_string().contains("TKIP is not supported"));
        let r = admit(
            Some(&ap),
            &offer("PAS600L-0251", "wrong", Cipher::Ccmp),
            &air,
        );
        assert!(matches!(r, Err(Refusal::Passphrase { .. })), "{r:?}");
        let r = admit(None, &offer("Other", "x", Cipher::Ccmp), &air);
        assert!(
            r.unwrap_err()
                .to_string()
                .contains("on the air: PAS600L-0251"),
            "names what is on the air"
        );
        // "wpa2" and "wpa" are accepted names of the ciphers.
        assert_eq!(
            serde_json::from_str::<Cipher>("\"wpa2\"").unwrap(),
            Cipher::Ccmp
        );
        assert_eq!(
            serde_json::from_str::<Cipher>("\"tkip\"").unwrap(),
            Cipher::Tkip
        );
    }

    /// The idle timeout counts virtual time without a station, from the
    /// button or the last station leaving.
    #[tokio::test]
    async fn an_access_point_without_stations_goes_off_the_air_after_its_idle_timeout() {
        let clock = crate::clock::Clock::start(chrono::Utc::now(), 1.0).unwrap();
        clock.set_paused(true);
        let air = Air::with_clock(EventBus::new(), &clock);
        let ap = AccessPoint {
            ssid: "PAS600L-0251".into(),
            passphrase: "Ab3dEf7hJk9m".into(),
        };
        let good = offer("PAS600L-0251", "Ab3dEf7hJk9m", Cipher::Ccmp);
        air.arm("ps1", ap, None);
        air.button("ps1").unwrap();
        let min = |m: u64| std::time::Duration::from_secs(60 * m);
        clock.advance(min(29));
        assert!(!air.expire_idle("ps1", clock.now()));
        air.associate(&good, HOST).unwrap();
        clock.advance(min(40));
        assert!(!air.expire_idle("ps1", clock.now()), "a station is there");
        air.disassociate("PAS600L-0251", HOST).unwrap();
        clock.advance(min(29));
        assert!(!air.expire_idle("ps1", clock.now()));
        clock.advance(min(2));
        assert!(air.expire_idle("ps1", clock.now()));
        assert!(!air.on_air("ps1"));
        assert!(matches!(
            air.associate(&good, HOST),
            Err(Refusal::NotOnAir { .. })
        ));
        air.button("ps1").unwrap();
        assert!(air.on_air("ps1"), "the button starts it again");
    }

    /// Infrastructure mode: a device's station waits for its access point
    /// (another Panel Server's, on the air when its button is pressed),
    /// is refused with TKIP, and loses its carrier when the AP goes.
    #[tokio::test]
    async fn a_station_joins_when_its_access_point_comes_on_the_air() {
        let air = Air::new(EventBus::new());
        let ap_side: Arc<dyn Stack> = Arc::new(HostStack::new("127.77.209.2".parse().unwrap()));
        let sta: Arc<dyn Stack> = Arc::new(HostStack::new("127.77.209.3".parse().unwrap()));
        let ap = AccessPoint {
            ssid: "PAS600L-0251".into(),
            passphrase: "Ab3dEf7hJk9m".into(),
        };
        air.arm("ps1", ap, Some(ap_side.clone()));
        air.join(
            "ps2",
            offer("PAS600L-0251", "Ab3dEf7hJk9m", Cipher::Ccmp),
            Some(sta.clone()),
        );
        let st = &air.stations()[0];
        assert_eq!(st.associated, None);
        assert!(
            st.error.as_deref().unwrap().contains("on the air"),
            "{st:?}"
        );
        assert!(!sta.carrier());
        air.button("ps1").unwrap();
        assert_eq!(air.stations()[0].associated.as_deref(), Some("ps1"));
        assert!(sta.carrier() && ap_side.carrier());
        air.disarm("ps1", "Wi-Fi deactivated");
        assert!(!sta.carrier());
        assert!(
            air.stations()[0]
                .error
                .as_deref()
                .unwrap()
                .contains("off the air")
        );
        // TKIP is refused by every access point, a site network included.
        let mut site = crate::site::Site::default_site();
        site.segments[0].wifi_ssid = Some("PlantWiFi".into());
        site.segments[0].wifi_passphrase = Some("Plant-Passw0rd".into());
        air.add_networks(&site);
        air.join(
            "ps2",
            offer("PlantWiFi", "Plant-Passw0rd", Cipher::Tkip),
            Some(sta.clone()),
        );
        assert!(air.stations()[0].error.as_deref().unwrap().contains("TKIP"));
        assert!(!sta.carrier());
        let join_site_network = || {
            air.join(
                "ps2",
                offer("PlantWiFi", "Plant-Passw0rd", Cipher::Ccmp),
                Some(sta.clone()),
            );
            assert_eq!(air.stations()[0].associated.as_deref(), Some("segment:lan"));
            assert!(sta.carrier());
        };
        join_site_network();
        // The station leaves the network: not associated, carrier down,
        // the AP and the station agree.
        assert_eq!(
            air.disassociate("PlantWiFi", "ps2"),
            Ok("segment:lan".to_string())
        );
        assert_eq!(air.stations()[0].associated, None);
        assert_eq!(air.stations()[0].error.as_deref(), Some("left PlantWiFi"));
        assert!(!sta.carrier());
        assert!(air.access_points().iter().all(|a| a.stations.is_empty()));
        // Joining again associates it again.
        join_site_network();
        air.device_off("ps2");
        assert!(air.stations().is_empty() && !sta.carrier());
        assert!(air.access_points().iter().all(|a| a.stations.is_empty()));
    }

    #[tokio::test]
    async fn button_association_carrier_and_drops() {
        let bus = EventBus::new();
        let mut events = bus.subscribe();
        let air = Air::new(bus);
        let stack: Arc<dyn Stack> = Arc::new(HostStack::new("127.77.209.1".parse().unwrap()));
        let ap = AccessPoint {
            ssid: "PAS600L-0251".into(),
            passphrase: "Ab3dEf7hJk9m".into(),
        };
        let good = offer("PAS600L-0251", "Ab3dEf7hJk9m", Cipher::Ccmp);
        // Not enabled: the button starts nothing.
        assert!(air.button("ps1").is_err());
        air.arm("ps1", ap.clone(), Some(stack.clone()));
        assert!(!stack.carrier(), "armed, no station: no traffic");
        // Armed but not on the air until the button is pressed.
        assert!(matches!(
            air.associate(&good, HOST),
            Err(Refusal::NotOnAir { .. })
        ));
        assert_eq!(air.button("ps1").unwrap(), "PAS600L-0251");
        assert!(air.on_air("ps1"));
        let r = air.associate(&offer("PAS600L-0251", "Ab3dEf7hJk9m", Cipher::Tkip), HOST);
        assert!(matches!(r, Err(Refusal::Tkip { .. })));
        assert!(!stack.carrier());
        assert_eq!(air.associate(&good, HOST), Ok("ps1".to_string()));
        assert!(stack.carrier());
        assert_eq!(air.access_points()[0].stations, vec![HOST.to_string()]);
        // The same settings again change nothing; new ones drop stations.
        air.arm("ps1", ap.clone(), Some(stack.clone()));
        assert!(stack.carrier());
        let new = AccessPoint {
            passphrase: "NewPass12".into(),
            ..ap.clone()
        };
        air.arm("ps1", new, Some(stack.clone()));
        assert!(!stack.carrier());
        assert!(air.on_air("ps1"), "still on the air");
        assert!(matches!(
            air.associate(&good, HOST),
            Err(Refusal::Passphrase { .. })
        ));
        air.associate(&offer("PAS600L-0251", "NewPass12", Cipher::Ccmp), HOST)
            .unwrap();
        assert!(stack.carrier());
        air.disassociate("PAS600L-0251", HOST).unwrap();
        assert!(!stack.carrier(), "last station gone");
        air.associate(&offer("PAS600L-0251", "NewPass12", Cipher::Ccmp), HOST)
            .unwrap();
        air.disarm("ps1", "Wi-Fi deactivated");
        assert!(!stack.carrier());
        assert!(air.access_points().is_empty());
        assert!(matches!(
            air.associate(&good, HOST),
            Err(Refusal::NotOnAir { .. })
        ));
        assert!(air.button("ps1").is_err(), "disarmed: the button is inert");
        let mut log = Vec::new();
        while let Ok(Event::Device { message, .. }) = events.try_recv() {
            log.push(message);
        }
        assert!(
            log.iter()
                .any(|m| m.contains("refused") && m.contains("TKIP")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|m| m.contains("off the air (Wi-Fi deactivated); stations dropped: host")),
            "{log:?}"
        );
    }
}
