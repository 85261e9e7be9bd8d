//! Enrolled charging stations of the EVCE (DOCA0349 "Enrollment of EV
//! charging stations", "Charging stations management"): the stations the
//! administrator approved, kept in NV memory under [`KEY`].
//!
//! Contract:
//! - A station is enrolled only by an explicit act: the administrator's
//!   "Enroll" on the Stations page (a station SSDP discovered), or the
//!   commissioning of the site file at the first boot ([`commission`]).
//!   Discovery alone never enrolls anything.
//! - Each entry keeps the box id (OCPP charge point identity), the address
//!   it was discovered at and its SSDP uuid. The OCPP local controller asks
//!   [`lookup`] whether a connecting box id is enrolled and from which
//!   address ([`Check`]): a box id that is not enrolled, or one that arrives
//!   from another address than the enrolled one (a rogue station
//!   impersonating it, DOCA0349 "Potential Risks"), is the controller's to
//!   refuse and audit.
//! - [`admit`] is the check the OCPP server calls for every station
//!   connection before it accepts the WebSocket: an enrolled box id from its
//!   enrolled address passes; anything else is refused, counted and
//!   audited (`station refused`), and a rogue station (an enrolled box id
//!   from another address) also raises an `alert` device event.
//! - Addresses compare across modes: in host mode a station at site address
//!   x.y.S.N connects from 127.77.S.N, which is the same station. An entry
//!   enrolled without an address (0.0.0.0: a site-file station whose
//!   address is not known) takes the address of its first admitted
//!   connection (pinned, audited); later connections must come from it.
//! - Removal deletes the entry at once. The list is wiped by a factory reset
//!   (the key is not among the survivors).

use std::net::Ipv4Addr;

use fieldtwin_emulator::device::DeviceContext;
use fieldtwin_emulator::storage::{Nv, StorageError};
use serde::{Deserialize, Serialize};

use crate::security::audit::{self, Kind};

/// NV key of the enrolled stations.
pub const KEY: &str = "evce.enrolled";

/// One enrolled station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Station {
    /// OCPP charge point identity (box id).
    pub box_id: String,
    /// The address it was enrolled from.
    pub ip: Ipv4Addr,
    /// Its SSDP uuid, if it was discovered.
    #[serde(default)]
    pub uuid: Option<String>,
}

/// What the enrollment says about a connecting box id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Enrolled, from its enrolled address.
    Enrolled,
    /// Not enrolled.
    Unknown,
    /// Enrolled, but from another address (`enrolled` is the right one).
    WrongAddress { enrolled: Ipv4Addr },
}

/// The enrolled stations, in enrollment order.
pub fn list(nv: &Nv) -> Vec<Station> {
    nv.get(KEY).ok().flatten().unwrap_or_default()
}

/// Enrolls `st` (replacing an entry with the same box id). Returns whether
/// the list changed.
pub fn enroll(nv: &Nv, st: Station) -> Result<bool, StorageError> {
    let mut l = list(nv);
    if l.contains(&st) {
        return Ok(false);
    }
    l.retain(|s| s.box_id != st.box_id);
    l.push(st);
    nv.put(KEY, &l)?;
    Ok(true)
}

/// Removes the station `box_id`; returns whether it was enrolled.
pub fn remove(nv: &Nv, box_id: &str) -> Result<bool, StorageError> {
    let mut l = list(nv);
    let before = l.len();
    l.retain(|s| s.box_id != box_id);
    if l.len() == before {
        return Ok(false);
    }
    nv.put(KEY, &l)?;
    Ok(true)
}

/// Whether a connection from `from` comes from the enrolled address
/// `enrolled`: the same address, or in host mode its loopback stand-in
/// (127.77.S.N for a site address x.y.S.N).
pub fn same_address(enrolled: Ipv4Addr, from: Ipv4Addr) -> bool {
    enrolled == from
        || (from.octets()[..2] == [127, 77]
            && fieldtwin_emulator::net::host::host_address(enrolled) == from)
}

/// Whether `box_id` connecting from `from` is enrolled (see [`Check`]). An
/// entry with the unspecified address 0.0.0.0 (a station of the site file
/// whose address the installer did not give) accepts any address; the
/// first admitted connection pins it ([`admit`]).
pub fn lookup(nv: &Nv, box_id: &str, from: Ipv4Addr) -> Check {
    match list(nv).into_iter().find(|s| s.box_id == box_id) {
        None => Check::Unknown,
        Some(s) if s.ip.is_unspecified() || same_address(s.ip, from) => Check::Enrolled,
        Some(s) => Check::WrongAddress { enrolled: s.ip },
    }
}

/// Why [`admit`] refused a station; the text is what the audit log and
/// the alert say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("box id {box_id:?} from {from} is not enrolled (enroll it on the Stations page)")]
    NotEnrolled { box_id: String, from: Ipv4Addr },
    #[error("rogue station: box id {box_id:?} is enrolled at {enrolled} but connected from {from}")]
    Rogue {
        box_id: String,
        from: Ipv4Addr,
        enrolled: Ipv4Addr,
    },
}

/// Admits or refuses station `box_id` connecting from `from` to the EVCE of
/// `ctx` (see the module contract). Counters: `stations_refused`,
/// `rogue_stations`.
pub fn admit(ctx: &DeviceContext, box_id: &str, from: Ipv4Addr) -> Result<(), Refusal> {
    let refusal = match lookup(&ctx.nv, box_id, from) {
        Check::Enrolled => {
            pin(ctx, box_id, from);
            return Ok(());
        }
        Check::Unknown => Refusal::NotEnrolled {
            box_id: box_id.to_string(),
            from,
        },
        Check::WrongAddress { enrolled } => Refusal::Rogue {
            box_id: box_id.to_string(),
            from,
            enrolled,
        },
    };
    ctx.counter("stations_refused").inc();
    let detail = format!("OCPP connection refused: {refusal}");
    if let Err(e) = audit::record(&ctx.nv, ctx.rtc.now(), Kind::StationRefused, detail.clone()) {
        tracing::error!("{}: audit log write failed: {e}", ctx.id);
    }
    ctx.emit(
        "audit",
        format!("{}: {detail}", Kind::StationRefused.name()),
    );
    if matches!(refusal, Refusal::Rogue { .. }) {
        ctx.counter("rogue_stations").inc();
        ctx.emit("alert", detail);
    }
    Err(refusal)
}

/// Pins the address of an entry enrolled without one (see [`lookup`]).
fn pin(ctx: &DeviceContext, box_id: &str, from: Ipv4Addr) {
    let mut l = list(&ctx.nv);
    let Some(s) = l
        .iter_mut()
        .find(|s| s.box_id == box_id && s.ip.is_unspecified())
    else {
        return;
    };
    s.ip = from;
    if ctx.nv.put(KEY, &l).is_ok() {
        let detail = format!("station {box_id} first connected from {from}; address pinned");
        let _ = audit::record(
            &ctx.nv,
            ctx.rtc.now(),
            Kind::StationEnrolled,
            detail.clone(),
        );
        ctx.emit(
            "audit",
            format!("{}: {detail}", Kind::StationEnrolled.name()),
        );
    }
}

/// The site file's stations enrolled at the first boot (the installer's
/// commissioning), unless the list exists already (a factory reset wipes
/// it, and the administrator enrolls again from the discovered stations).
pub fn commission(nv: &Nv, stations: &[Station]) -> Result<(), StorageError> {
    if nv.get_raw(KEY)?.is_none() {
        nv.put(KEY, &stations.to_vec())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldtwin_emulator::storage::Store;

    #[test]
    fn enroll_lookup_remove() {
        let store = Store::open(None).unwrap();
        let nv = store.device("evce1").unwrap();
        let ip = Ipv4Addr::new(10, 77, 0, 21);
        assert_eq!(lookup(&nv, "cs1", ip), Check::Unknown);
        let st = Station {
            box_id: "cs1".into(),
            ip,
            uuid: None,
        };
        assert!(enroll(&nv, st.clone()).unwrap());
        assert!(!enroll(&nv, st).unwrap());
        assert_eq!(lookup(&nv, "cs1", ip), Check::Enrolled);
        assert_eq!(
            lookup(&nv, "cs1", Ipv4Addr::new(10, 77, 0, 99)),
            Check::WrongAddress { enrolled: ip }
        );
        // Host mode: the station's loopback stand-in is its own address.
        assert_eq!(
            lookup(&nv, "cs1", Ipv4Addr::new(127, 77, 0, 21)),
            Check::Enrolled
        );
        assert!(matches!(
            lookup(&nv, "cs1", Ipv4Addr::new(127, 77, 0, 22)),
            Check::WrongAddress { .. }
        ));
        assert!(remove(&nv, "cs1").unwrap());
        assert!(!remove(&nv, "cs1").unwrap());
        assert_eq!(lookup(&nv, "cs1", ip), Check::Unknown);
        // Commissioning fills an absent list only.
        commission(&nv, &[]).unwrap();
        let other = Station {
            box_id: "cs2".into(),
            ip,
            uuid: None,
        };
        commission(&nv, std::slice::from_ref(&other)).unwrap();
        assert!(list(&nv).is_empty());
    }
}
