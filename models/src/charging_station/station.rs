//! The OCPP 1.6 charge point behaviour of a charging station, as plain
//! state (DESIGN.md principle 1): what the station does when an EV is
//! plugged, a badge is presented, a CALL arrives or time passes, and what
//! it has to send because of it. The driver in [`super`] moves the
//! messages over the link.
//!
//! Contract:
//! - Inputs carry the time ([`Now`]); outputs are CALLs to send: plain
//!   ones in [`Station::outbox`] (StatusNotification, Authorize,
//!   Heartbeat; dropped while offline, except that the station announces
//!   every connector's status again after each BootNotification), and
//!   transaction messages in [`Station::queue`] (StartTransaction,
//!   MeterValues, StopTransaction; kept across link losses, in order, ids
//!   mapped: [`crate::proto::ocpp::queue`]), at most [`QUEUE_CAP`] of
//!   them: when full the oldest waiting MeterValues makes room (counted in
//!   the queue's `dropped`), a StartTransaction or StopTransaction is never
//!   dropped.
//! - A transaction starts when an EV is plugged and a badge is accepted
//!   (by the controller online, by the station's authorization cache
//!   offline: LocalAuthorizeOffline), or by RemoteStartTransaction
//!   (AuthorizeRemoteTxRequests = false). It stops on unplug
//!   (EVDisconnected), the same badge again (Local), RemoteStop (Remote)
//!   or Reset (SoftReset/HardReset).
//! - Every [`Station::tick`] integrates the physics ([`super::physics`])
//!   and sends, for every MeterValueSampleInterval boundary passed (also
//!   across a clock jump), one MeterValues per transaction with
//!   Energy.Active.Import.Register (Wh), Power.Active.Import (W) and SoC
//!   (%), stamped with that boundary's time; it returns the next deadline.
//! - Status follows the physics: Charging, SuspendedEV (the EV is full),
//!   SuspendedEVSE (a charging profile allows 0 W), Finishing after a stop
//!   with the EV still plugged, Available once unplugged.
//! - [`Station::handle`] answers the central system's CALLs: the answer,
//!   or a CALLERROR code with a description (NotImplemented for actions
//!   the station does not support, the payload decoder's code otherwise).

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, SecondsFormat, Utc};
use fieldtwin_emulator::device::EvSpec;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::physics::{Ev, Installed, Meter, profile_limit_w};
use crate::proto::ocpp::messages::*;
use crate::proto::ocpp::queue::TxQueue;
use crate::proto::ocpp::{ErrorCode, decode};

/// Most transaction messages a station keeps while its controller is
/// unreachable ([NF]: 1,000, a little over a day of 5-minute MeterValues of
/// both connectors of a two-socket station); when full the oldest waiting
/// MeterValues makes room, a StartTransaction or StopTransaction is never
/// dropped ([`TxQueue::push_bounded`]).
pub const QUEUE_CAP: usize = 1_000;

/// A point in time: virtual seconds and the matching UTC.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub t: f64,
    pub utc: DateTime<Utc>,
}

impl Now {
    fn at(&self, t: f64) -> DateTime<Utc> {
        self.utc - chrono::Duration::milliseconds(((self.t - t) * 1000.0) as i64)
    }
}

/// OCPP timestamp text.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The station's fixed characteristics.
#[derive(Debug, Clone)]
pub struct Rating {
    pub box_id: String,
    pub connectors: u32,
    pub max_current_a: f64,
    pub phases: u8,
    pub voltage_v: f64,
}

impl Rating {
    pub fn max_w(&self) -> f64 {
        self.max_current_a * self.voltage_v * self.phases as f64
    }
}

/// Configuration keys (GetConfiguration / ChangeConfiguration), kept in NV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keys {
    pub heartbeat_interval: u64,
    pub meter_value_sample_interval: u64,
    pub authorization_key: Option<String>,
    pub security_profile: u8,
    pub local_authorize_offline: bool,
}

/// The station's firmware family (signed images must name it) and the
/// version it leaves the factory with ([NF]).
pub const FIRMWARE_FAMILY: &str = "EVlink Pro AC";
pub const FACTORY_FIRMWARE: &str = "001.000.000";
/// The vendor id of this station's DataTransfer messages.
pub const VENDOR_ID: &str = "Schneider Electric";

/// A firmware update the central system asked for (UpdateFirmware).
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareUpdate {
    pub location: String,
    /// Virtual time of the next download attempt.
    pub at: f64,
    /// Attempts left after this one.
    pub retries: u32,
    pub retry_interval_s: f64,
}

/// Why an outgoing plain CALL was sent (to route its answer).
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    None,
    Authorize { connector: u32, id_tag: String },
}

/// A running transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Tx {
    /// The station's own id of it (the queue maps it to the remote id).
    pub local: i64,
    pub id_tag: String,
    pub start: DateTime<Utc>,
    pub meter_start: i64,
}

/// A connector.
#[derive(Debug, Clone, Serialize)]
pub struct Connector {
    pub meter: Meter,
    pub status: ChargePointStatus,
    pub tx: Option<Tx>,
    /// A RemoteStart waiting for an EV.
    pub remote_tag: Option<String>,
}

/// The charge point (see the module contract).
pub struct Station {
    pub rating: Rating,
    pub keys: Keys,
    pub conns: Vec<Connector>,
    pub profiles: Vec<Installed>,
    pub queue: TxQueue,
    pub outbox: VecDeque<(String, Value, Purpose)>,
    pub online: bool,
    /// Authorization cache: idTag -> last status the controller gave.
    pub cache: BTreeMap<String, AuthorizationStatus>,
    /// CALLs handed to the link, by action (for the dashboard and tests).
    pub sent: BTreeMap<String, u64>,
    /// A Reset was accepted: the driver reconnects after the answer left.
    pub reset: Option<ResetType>,
    /// Device id of the site meter this station's supply goes through.
    pub feeds: Option<String>,
    /// The firmware version running.
    pub firmware: String,
    /// The last FirmwareStatusNotification status.
    pub firmware_status: FirmwareStatus,
    /// An update waiting for its retrieve date (or its next retry).
    pub firmware_update: Option<FirmwareUpdate>,
    /// A download the driver must do now: (location, the update).
    pub download: Option<FirmwareUpdate>,
    next_local: i64,
    next_sample: f64,
    next_heartbeat: f64,
}

impl Station {
    pub fn new(rating: Rating, keys: Keys, t: f64) -> Self {
        let conns = (0..rating.connectors)
            .map(|_| Connector {
                meter: Meter::new(t),
                status: ChargePointStatus::Available,
                tx: None,
                remote_tag: None,
            })
            .collect();
        let s = keys.meter_value_sample_interval.max(1) as f64;
        Self {
            rating,
            keys,
            conns,
            profiles: Vec::new(),
            queue: TxQueue::default(),
            outbox: VecDeque::new(),
            online: false,
            cache: BTreeMap::new(),
            sent: BTreeMap::new(),
            reset: None,
            feeds: None,
            firmware: FACTORY_FIRMWARE.to_string(),
            firmware_status: FirmwareStatus::Idle,
            firmware_update: None,
            download: None,
            next_local: 1,
            next_sample: (t / s).floor() * s + s,
            next_heartbeat: t,
        }
    }

    fn conn(&mut self, connector: u32) -> Result<&mut Connector, String> {
        let n = self.conns.len();
        if connector == 0 || connector as usize > n {
            return Err(format!(
                "{} has connectors 1 to {n}, not {connector}",
                self.rating.box_id
            ));
        }
        Ok(&mut self.conns[connector as usize - 1])
    }

    fn set_status(&mut self, connector: u32, status: ChargePointStatus, now: Now) {
        let c = &mut self.conns[connector as usize - 1];
        if c.status == status {
            return;
        }
        c.status = status;
        if self.online {
            self.outbox.push_back((
                "StatusNotification".into(),
                status_payload(connector, status, now.utc),
                Purpose::None,
            ));
        }
    }

    /// After a BootNotification was accepted: the status of every
    /// connector (0 = the station).
    pub fn announce(&mut self, now: Now) {
        self.online = true;
        self.outbox.retain(|(a, _, _)| a != "StatusNotification");
        self.outbox.push_front((
            "StatusNotification".into(),
            status_payload(0, ChargePointStatus::Available, now.utc),
            Purpose::None,
        ));
        for (i, c) in self.conns.iter().enumerate() {
            self.outbox.push_back((
                "StatusNotification".into(),
                status_payload(i as u32 + 1, c.status, now.utc),
                Purpose::None,
            ));
        }
        self.next_heartbeat = now.t + self.keys.heartbeat_interval.max(1) as f64;
    }

    /// The link fell: plain messages are dropped.
    pub fn offline(&mut self) {
        self.online = false;
        self.outbox.clear();
    }

    /// An EV is plugged into `connector`.
    pub fn plug(
        &mut self,
        connector: u32,
        spec: EvSpec,
        id_tag: Option<String>,
        now: Now,
    ) -> Result<(), String> {
        self.tick(now);
        let box_id = self.rating.box_id.clone();
        let c = self.conn(connector)?;
        if c.meter.ev.is_some() {
            return Err(format!(
                "connector {connector} of {box_id} already has an EV; unplug it first"
            ));
        }
        c.meter.ev = Some(Ev::new(spec));
        let remote = c.remote_tag.take();
        self.set_status(connector, ChargePointStatus::Preparing, now);
        if let Some(tag) = remote {
            self.start(connector, tag, now);
        } else if let Some(tag) = id_tag {
            self.request_auth(connector, tag, now);
        }
        Ok(())
    }

    /// The EV on `connector` is unplugged.
    pub fn unplug(&mut self, connector: u32, now: Now) -> Result<(), String> {
        self.tick(now);
        let box_id = self.rating.box_id.clone();
        let c = self.conn(connector)?;
        if c.meter.ev.is_none() {
            return Err(format!(
                "no EV is plugged into connector {connector} of {box_id}"
            ));
        }
        if c.tx.is_some() {
            self.stop(connector, "EVDisconnected", None, now);
        }
        self.conns[connector as usize - 1].meter.ev = None;
        self.set_status(connector, ChargePointStatus::Available, now);
        Ok(())
    }

    /// A badge is presented for `connector`.
    pub fn badge(&mut self, connector: u32, id_tag: String, now: Now) -> Result<(), String> {
        self.tick(now);
        let box_id = self.rating.box_id.clone();
        if id_tag.is_empty() || id_tag.len() > 20 {
            return Err("an idTag is 1 to 20 characters".into());
        }
        let c = self.conn(connector)?;
        match &c.tx {
            Some(tx) if tx.id_tag == id_tag => {
                self.stop(connector, "Local", Some(id_tag), now);
                Ok(())
            }
            Some(_) => Err(format!(
                "connector {connector} of {box_id} charges for another badge; present that one to stop"
            )),
            None if c.meter.ev.is_none() => Err(format!(
                "no EV is plugged into connector {connector} of {box_id}; plug one first"
            )),
            None => {
                self.request_auth(connector, id_tag, now);
                Ok(())
            }
        }
    }

    fn request_auth(&mut self, connector: u32, id_tag: String, now: Now) {
        if self.online {
            self.outbox.push_back((
                "Authorize".into(),
                json!({ "idTag": id_tag }),
                Purpose::Authorize { connector, id_tag },
            ));
        } else if self.keys.local_authorize_offline
            && self.cache.get(&id_tag) == Some(&AuthorizationStatus::Accepted)
        {
            self.start(connector, id_tag, now);
        }
    }

    /// The answer of a plain CALL sent for `purpose`.
    pub fn answered(&mut self, purpose: Purpose, result: &Value, now: Now) {
        if let Purpose::Authorize { connector, id_tag } = purpose {
            let status = decode::<AuthorizeConf>(result)
                .map(|c| c.id_tag_info.status)
                .unwrap_or(AuthorizationStatus::Invalid);
            self.cache.insert(id_tag.clone(), status);
            let c = &self.conns[connector as usize - 1];
            if status == AuthorizationStatus::Accepted && c.meter.ev.is_some() && c.tx.is_none() {
                self.start(connector, id_tag, now);
            }
        }
    }

    /// A plain CALL could not be delivered (link lost, timeout): an
    /// Authorize is decided from the cache instead.
    pub fn undelivered(&mut self, purpose: Purpose, now: Now) {
        if let Purpose::Authorize { connector, id_tag } = purpose {
            let c = &self.conns[connector as usize - 1];
            if self.keys.local_authorize_offline
                && self.cache.get(&id_tag) == Some(&AuthorizationStatus::Accepted)
                && c.meter.ev.is_some()
                && c.tx.is_none()
            {
                self.start(connector, id_tag, now);
            }
        }
    }

    fn start(&mut self, connector: u32, id_tag: String, now: Now) {
        let local = self.next_local;
        self.next_local += 1;
        let c = &mut self.conns[connector as usize - 1];
        let meter_start = c.meter.energy_wh.round() as i64;
        c.tx = Some(Tx {
            local,
            id_tag: id_tag.clone(),
            start: now.utc,
            meter_start,
        });
        self.queue.push_bounded(
            "StartTransaction",
            local,
            json!({
                "connectorId": connector,
                "idTag": id_tag,
                "meterStart": meter_start,
                "timestamp": stamp(now.utc),
            }),
            QUEUE_CAP,
        );
        self.set_status(connector, ChargePointStatus::Charging, now);
        self.tick(now);
    }

    fn stop(&mut self, connector: u32, reason: &str, id_tag: Option<String>, now: Now) {
        let c = &mut self.conns[connector as usize - 1];
        let Some(tx) = c.tx.take() else { return };
        c.meter.power_w = 0.0;
        let mut p = json!({
            "transactionId": tx.local,
            "meterStop": c.meter.energy_wh.round() as i64,
            "timestamp": stamp(now.utc),
            "reason": reason,
        });
        if let Some(tag) = id_tag {
            p["idTag"] = json!(tag);
        }
        let plugged = c.meter.ev.is_some();
        self.queue
            .push_bounded("StopTransaction", tx.local, p, QUEUE_CAP);
        self.profiles.retain(|i| {
            !(i.connector == connector
                && i.profile.charging_profile_purpose == ChargingProfilePurpose::TxProfile)
        });
        let st = if plugged {
            ChargePointStatus::Finishing
        } else {
            ChargePointStatus::Available
        };
        self.set_status(connector, st, now);
    }

    /// Stops every transaction (a Reset or the station's power loss).
    pub fn stop_all(&mut self, reason: &str, now: Now) {
        self.tick(now);
        for i in 0..self.conns.len() {
            self.stop(i as u32 + 1, reason, None, now);
        }
    }

    /// The power the station offers `connector` at UTC `at`, W.
    fn offer(&self, connector: u32, at: DateTime<Utc>) -> f64 {
        let c = &self.conns[connector as usize - 1];
        let Some(tx) = &c.tx else { return 0.0 };
        let remote = self.queue.remote_of(tx.local);
        let limit = profile_limit_w(
            &self.profiles,
            connector,
            at,
            Some(tx.start),
            remote,
            self.rating.phases,
            self.rating.voltage_v,
        );
        let max = self.rating.max_w();
        limit.map_or(max, |l| l.min(max))
    }

    fn advance(&mut self, t: f64, now: Now) {
        for i in 0..self.conns.len() {
            let connector = i as u32 + 1;
            // The meter is taken out while the offer (which reads the rest
            // of the station) is evaluated at each step, lazily.
            let mut meter = std::mem::replace(&mut self.conns[i].meter, Meter::new(t));
            meter.advance(t, |x| self.offer(connector, now.at(x)));
            self.conns[i].meter = meter;
        }
    }

    fn follow_status(&mut self, now: Now) {
        for i in 0..self.conns.len() {
            let connector = i as u32 + 1;
            let c = &self.conns[i];
            if c.tx.is_none() {
                continue;
            }
            let full = c.meter.ev.as_ref().is_none_or(|e| e.full());
            let st = if full {
                ChargePointStatus::SuspendedEV
            } else if self.offer(connector, now.utc) <= 0.0 {
                ChargePointStatus::SuspendedEVSE
            } else {
                ChargePointStatus::Charging
            };
            self.set_status(connector, st, now);
        }
    }

    /// Time passes up to `now` (see the module contract); returns the next
    /// deadline, virtual seconds.
    pub fn tick(&mut self, now: Now) -> f64 {
        let period = self.keys.meter_value_sample_interval.max(1) as f64;
        while self.next_sample <= now.t {
            let at = self.next_sample;
            self.advance(at, now);
            for i in 0..self.conns.len() {
                let c = &self.conns[i];
                let Some(tx) = &c.tx else { continue };
                let mut sampled = vec![
                    json!({"value": format!("{}", c.meter.energy_wh.round() as i64),
                           "context": "Sample.Periodic",
                           "measurand": "Energy.Active.Import.Register", "unit": "Wh"}),
                    json!({"value": format!("{:.0}", c.meter.power_w),
                           "context": "Sample.Periodic",
                           "measurand": "Power.Active.Import", "unit": "W"}),
                ];
                if let Some(ev) = &c.meter.ev {
                    sampled.push(json!({"value": format!("{:.1}", ev.soc * 100.0),
                        "context": "Sample.Periodic", "measurand": "SoC", "unit": "Percent"}));
                }
                let local = tx.local;
                self.queue.push_bounded(
                    "MeterValues",
                    local,
                    json!({
                        "connectorId": i + 1,
                        "transactionId": local,
                        "meterValue": [{"timestamp": stamp(now.at(at)), "sampledValue": sampled}],
                    }),
                    QUEUE_CAP,
                );
            }
            self.next_sample += period;
        }
        self.advance(now.t, now);
        self.follow_status(now);
        if self.download.is_none()
            && let Some(u) = self.firmware_update.take_if(|u| u.at <= now.t)
        {
            self.firmware_notice(FirmwareStatus::Downloading);
            self.download = Some(u);
        }
        if let Some(m) = &self.feeds {
            let e: f64 = self.conns.iter().map(|c| c.meter.energy_wh).sum();
            super::feed::publish(m, &self.rating.box_id, now.t, self.power_w(), e);
        }
        if self.online && now.t >= self.next_heartbeat {
            if !self.outbox.iter().any(|(a, _, _)| a == "Heartbeat") {
                self.outbox
                    .push_back(("Heartbeat".into(), json!({}), Purpose::None));
            }
            let hb = self.keys.heartbeat_interval.max(1) as f64;
            while self.next_heartbeat <= now.t {
                self.next_heartbeat += hb;
            }
        }
        let mut next = self.next_sample;
        if self.online {
            next = next.min(self.next_heartbeat);
        }
        if let Some(u) = &self.firmware_update {
            next = next.min(u.at);
        }
        next
    }

    fn firmware_notice(&mut self, status: FirmwareStatus) {
        self.firmware_status = status;
        if self.online {
            self.outbox.push_back((
                "FirmwareStatusNotification".into(),
                json!({ "status": status }),
                Purpose::None,
            ));
        }
    }

    /// The driver fetched (or failed to fetch) the image of `update`.
    /// Returns the image to install (kept in NV memory by the driver, which
    /// then boots the OCPP stack again) when it verified: a vendor-signed
    /// image of [`FIRMWARE_FAMILY`]. Statuses sent: Downloaded, Installing,
    /// Installed; or DownloadFailed (retried after `retryInterval` while
    /// `retries` last) or InstallationFailed (not retried: the same file
    /// would fail again).
    pub fn downloaded(
        &mut self,
        update: FirmwareUpdate,
        result: Result<Vec<u8>, String>,
        now: Now,
    ) -> Result<Vec<u8>, String> {
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                let e = format!("firmware download from {} failed: {e}", update.location);
                self.firmware_notice(FirmwareStatus::DownloadFailed);
                if update.retries > 0 {
                    self.firmware_update = Some(FirmwareUpdate {
                        at: now.t + update.retry_interval_s,
                        retries: update.retries - 1,
                        ..update
                    });
                }
                return Err(e);
            }
        };
        self.firmware_notice(FirmwareStatus::Downloaded);
        self.firmware_notice(FirmwareStatus::Installing);
        match crate::security::firmware::verify(&bytes, FIRMWARE_FAMILY) {
            Ok(img) => {
                self.firmware_notice(FirmwareStatus::Installed);
                self.firmware = img.version;
                Ok(bytes)
            }
            Err(e) => {
                self.firmware_notice(FirmwareStatus::InstallationFailed);
                Err(format!("firmware from {} refused: {e}", update.location))
            }
        }
    }

    /// Total power drawn now, W.
    pub fn power_w(&self) -> f64 {
        self.conns.iter().map(|c| c.meter.power_w).sum()
    }

    fn conn_of_remote(&self, remote: i64) -> Option<u32> {
        let local = self.queue.local_of(remote).unwrap_or(remote);
        self.conns
            .iter()
            .position(|c| c.tx.as_ref().is_some_and(|t| t.local == local))
            .map(|i| i as u32 + 1)
    }

    /// Answers a CALL of the central system (see the module contract).
    pub fn handle(
        &mut self,
        action: &str,
        payload: &Value,
        now: Now,
    ) -> Result<Value, (ErrorCode, String)> {
        self.tick(now);
        let d = |e: crate::proto::ocpp::PayloadError| (e.code, e.description);
        let status = |ok: bool| json!({"status": if ok { "Accepted" } else { "Rejected" }});
        match action {
            "RemoteStartTransaction" => {
                let r: RemoteStartTransactionReq = decode(payload).map_err(d)?;
                let n = self.conns.len() as u32;
                let connector = match r.connector_id {
                    Some(c) if (1..=n).contains(&c) => c,
                    Some(_) => return Ok(status(false)),
                    None => match (1..=n).find(|&c| self.conns[c as usize - 1].tx.is_none()) {
                        Some(c) => c,
                        None => return Ok(status(false)),
                    },
                };
                let c = &mut self.conns[connector as usize - 1];
                if c.tx.is_some() {
                    return Ok(status(false));
                }
                if let Some(p) = r.charging_profile {
                    if p.charging_profile_purpose != ChargingProfilePurpose::TxProfile {
                        return Ok(status(false));
                    }
                    self.profiles.push(Installed {
                        connector,
                        profile: p,
                    });
                }
                if self.conns[connector as usize - 1].meter.ev.is_some() {
                    self.start(connector, r.id_tag, now);
                } else {
                    self.conns[connector as usize - 1].remote_tag = Some(r.id_tag);
                    self.set_status(connector, ChargePointStatus::Preparing, now);
                }
                Ok(status(true))
            }
            "RemoteStopTransaction" => {
                let r: RemoteStopTransactionReq = decode(payload).map_err(d)?;
                match self.conn_of_remote(r.transaction_id) {
                    Some(c) => {
                        self.stop(c, "Remote", None, now);
                        Ok(status(true))
                    }
                    None => Ok(status(false)),
                }
            }
            "SetChargingProfile" => {
                let r: SetChargingProfileReq = decode(payload).map_err(d)?;
                let n = self.conns.len() as u32;
                let p = r.cs_charging_profiles;
                let ok = r.connector_id <= n
                    && !p.charging_schedule.charging_schedule_period.is_empty()
                    && p.charging_schedule
                        .charging_schedule_period
                        .iter()
                        .all(|x| x.limit.is_finite() && x.limit >= 0.0)
                    && match p.charging_profile_purpose {
                        ChargingProfilePurpose::ChargePointMaxProfile => r.connector_id == 0,
                        ChargingProfilePurpose::TxDefaultProfile => true,
                        ChargingProfilePurpose::TxProfile => {
                            r.connector_id > 0
                                && self.conns[r.connector_id as usize - 1].tx.is_some()
                        }
                    };
                if !ok {
                    return Ok(status(false));
                }
                self.profiles.retain(|i| {
                    !(i.profile.charging_profile_id == p.charging_profile_id
                        || (i.connector == r.connector_id
                            && i.profile.stack_level == p.stack_level
                            && i.profile.charging_profile_purpose == p.charging_profile_purpose))
                });
                self.profiles.push(Installed {
                    connector: r.connector_id,
                    profile: p,
                });
                self.tick(now);
                Ok(status(true))
            }
            "ClearChargingProfile" => {
                let r: ClearChargingProfileReq = decode(payload).map_err(d)?;
                let before = self.profiles.len();
                self.profiles.retain(|i| {
                    let m = r.id.is_none_or(|x| x == i.profile.charging_profile_id)
                        && r.connector_id.is_none_or(|x| x == i.connector)
                        && r.charging_profile_purpose
                            .is_none_or(|x| x == i.profile.charging_profile_purpose)
                        && r.stack_level.is_none_or(|x| x == i.profile.stack_level);
                    !m
                });
                let any = self.profiles.len() != before;
                self.tick(now);
                Ok(json!({"status": if any { "Accepted" } else { "Unknown" }}))
            }
            "GetConfiguration" => {
                let r: GetConfigurationReq = decode(payload).map_err(d)?;
                let all = self.config_keys();
                let (mut known, mut unknown) = (Vec::new(), Vec::new());
                match r.key {
                    None => known = all,
                    Some(keys) => {
                        for k in keys {
                            match all.iter().find(|x| x.key == k) {
                                Some(x) => known.push(x.clone()),
                                None => unknown.push(k),
                            }
                        }
                    }
                }
                Ok(json!(GetConfigurationConf {
                    configuration_key: known,
                    unknown_key: unknown
                }))
            }
            "ChangeConfiguration" => {
                let r: ChangeConfigurationReq = decode(payload).map_err(d)?;
                let st = self.change(&r.key, &r.value);
                self.tick(now);
                Ok(json!({ "status": st }))
            }
            "Reset" => {
                let r: ResetReq = decode(payload).map_err(d)?;
                self.reset = Some(r.kind);
                Ok(status(true))
            }
            "UpdateFirmware" => {
                let r: UpdateFirmwareReq = decode(payload).map_err(d)?;
                let retrieve = DateTime::parse_from_rfc3339(&r.retrieve_date).map_err(|e| {
                    (
                        ErrorCode::PropertyConstraintViolation,
                        format!(
                            "retrieveDate {:?} is not an RFC 3339 time: {e}",
                            r.retrieve_date
                        ),
                    )
                })?;
                let wait =
                    (retrieve.with_timezone(&Utc) - now.utc).num_milliseconds() as f64 / 1000.0;
                self.firmware_update = Some(FirmwareUpdate {
                    location: r.location,
                    at: now.t + wait.max(0.0),
                    retries: r.retries.unwrap_or(0).min(10),
                    retry_interval_s: r.retry_interval.unwrap_or(60).clamp(1, 86_400) as f64,
                });
                self.tick(now);
                Ok(json!({}))
            }
            "DataTransfer" => {
                let vendor = match payload.get("vendorId") {
                    Some(Value::String(v)) if v.len() <= 255 => v.clone(),
                    Some(Value::String(_)) => {
                        return Err((
                            ErrorCode::PropertyConstraintViolation,
                            "vendorId is longer than 255 characters".into(),
                        ));
                    }
                    Some(_) => {
                        return Err((
                            ErrorCode::TypeConstraintViolation,
                            "vendorId must be a string".into(),
                        ));
                    }
                    None => {
                        return Err((
                            ErrorCode::OccurenceConstraintViolation,
                            "DataTransfer needs a vendorId".into(),
                        ));
                    }
                };
                // No vendor-specific message is implemented [NF].
                let status = if vendor != VENDOR_ID {
                    "UnknownVendorId"
                } else if payload.get("messageId").is_some() {
                    "UnknownMessageId"
                } else {
                    "Rejected"
                };
                Ok(json!({ "status": status }))
            }
            "TriggerMessage" => {
                let which = payload.get("requestedMessage").and_then(Value::as_str);
                match which {
                    Some("Heartbeat") => {
                        self.outbox
                            .push_back(("Heartbeat".into(), json!({}), Purpose::None));
                        Ok(status(true))
                    }
                    Some("StatusNotification") => {
                        self.announce(now);
                        Ok(status(true))
                    }
                    _ => Ok(json!({"status": "NotImplemented"})),
                }
            }
            _ => Err((
                ErrorCode::NotImplemented,
                format!("{} does not implement {action}", self.rating.box_id),
            )),
        }
    }

    fn config_keys(&self) -> Vec<KeyValue> {
        let kv = |k: &str, ro: bool, v: String| KeyValue {
            key: k.into(),
            readonly: ro,
            value: Some(v),
        };
        vec![
            kv(
                "HeartbeatInterval",
                false,
                self.keys.heartbeat_interval.to_string(),
            ),
            kv(
                "MeterValueSampleInterval",
                false,
                self.keys.meter_value_sample_interval.to_string(),
            ),
            kv(
                "MeterValuesSampledData",
                true,
                "Energy.Active.Import.Register,Power.Active.Import,SoC".into(),
            ),
            kv("NumberOfConnectors", true, self.conns.len().to_string()),
            kv(
                "SecurityProfile",
                false,
                self.keys.security_profile.to_string(),
            ),
            kv(
                "LocalAuthorizeOffline",
                false,
                self.keys.local_authorize_offline.to_string(),
            ),
            kv("AuthorizeRemoteTxRequests", true, "false".into()),
            kv("ChargeProfileMaxStackLevel", true, "10".into()),
            kv(
                "ChargingScheduleAllowedChargingRateUnit",
                true,
                "Current,Power".into(),
            ),
            kv(
                "SupportedFeatureProfiles",
                true,
                "Core,FirmwareManagement,SmartCharging,RemoteTrigger".into(),
            ),
        ]
    }

    fn change(&mut self, key: &str, value: &str) -> &'static str {
        let num = |lo: u64, hi: u64| value.parse::<u64>().ok().filter(|v| (lo..=hi).contains(v));
        match key {
            "HeartbeatInterval" => match num(1, 86_400) {
                Some(v) => {
                    self.keys.heartbeat_interval = v;
                    "Accepted"
                }
                None => "Rejected",
            },
            "MeterValueSampleInterval" => match num(1, 86_400) {
                Some(v) => {
                    self.keys.meter_value_sample_interval = v;
                    "Accepted"
                }
                None => "Rejected",
            },
            "LocalAuthorizeOffline" => match value {
                "true" | "false" => {
                    self.keys.local_authorize_offline = value == "true";
                    "Accepted"
                }
                _ => "Rejected",
            },
            // Write-only (Security Whitepaper): 8 to 40 characters.
            "AuthorizationKey" => {
                if (8..=40).contains(&value.len()) && value.is_ascii() {
                    self.keys.authorization_key = Some(value.to_string());
                    "RebootRequired"
                } else {
                    "Rejected"
                }
            }
            // A profile may only be raised (Security Whitepaper).
            "SecurityProfile" => match num(0, 3) {
                Some(v) if v as u8 > self.keys.security_profile => {
                    self.keys.security_profile = v as u8;
                    "RebootRequired"
                }
                _ => "Rejected",
            },
            "NumberOfConnectors"
            | "MeterValuesSampledData"
            | "AuthorizeRemoteTxRequests"
            | "ChargeProfileMaxStackLevel"
            | "ChargingScheduleAllowedChargingRateUnit"
            | "SupportedFeatureProfiles" => "Rejected",
            _ => "NotSupported",
        }
    }
}

fn status_payload(connector: u32, status: ChargePointStatus, t: DateTime<Utc>) -> Value {
    json!({
        "connectorId": connector,
        "errorCode": "NoError",
        "status": status,
        "timestamp": stamp(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(t: f64) -> Now {
        Now {
            t,
            utc: DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc)
                + chrono::Duration::seconds(t as i64),
        }
    }

    fn station() -> Station {
        let mut s = Station::new(
            Rating {
                box_id: "cs1".into(),
                connectors: 1,
                max_current_a: 16.0,
                phases: 3,
                voltage_v: 230.0,
            },
            Keys {
                heartbeat_interval: 300,
                meter_value_sample_interval: 900,
                authorization_key: None,
                security_profile: 2,
                local_authorize_offline: true,
            },
            0.0,
        );
        s.announce(now(0.0));
        s.outbox.clear();
        s
    }

    fn actions(s: &Station) -> Vec<String> {
        s.queue.items().map(|q| q.action.clone()).collect()
    }

    #[test]
    fn a_session_from_badge_to_unplug() {
        let mut s = station();
        s.plug(1, EvSpec::default(), Some("B1".into()), now(10.0))
            .unwrap();
        let (a, _, purpose) = s.outbox.pop_back().unwrap();
        assert_eq!(a, "Authorize");
        s.answered(
            purpose,
            &json!({"idTagInfo": {"status": "Accepted"}}),
            now(11.0),
        );
        assert_eq!(s.conns[0].status, ChargePointStatus::Charging);
        // 11 kW EV on a 16 A x 3 station: 11 kW for an hour, 4 samples.
        s.tick(now(3611.0));
        assert!((s.conns[0].meter.energy_wh - 11_000.0).abs() < 20.0);
        s.unplug(1, now(3700.0)).unwrap();
        assert_eq!(
            actions(&s),
            [
                "StartTransaction",
                "MeterValues",
                "MeterValues",
                "MeterValues",
                "MeterValues",
                "StopTransaction"
            ]
        );
        assert_eq!(s.conns[0].status, ChargePointStatus::Available);
    }

    #[test]
    fn a_profile_limits_the_power() {
        let mut s = station();
        s.plug(1, EvSpec::default(), None, now(0.0)).unwrap();
        s.handle(
            "RemoteStartTransaction",
            &json!({"connectorId": 1, "idTag": "R1"}),
            now(1.0),
        )
        .unwrap();
        let r = s
            .handle(
                "SetChargingProfile",
                &json!({"connectorId": 1, "csChargingProfiles": {
                    "chargingProfileId": 9, "stackLevel": 1,
                    "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                    "chargingSchedule": {"chargingRateUnit": "W",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 4000}]}}}),
                now(2.0),
            )
            .unwrap();
        assert_eq!(r["status"], "Accepted");
        s.tick(now(3602.0));
        assert_eq!(s.conns[0].meter.power_w, 4000.0);
        assert!((s.conns[0].meter.energy_wh - 4000.0).abs() < 5.0);
    }

    #[test]
    fn bad_calls_get_errors_not_panics() {
        let mut s = station();
        let e = s
            .handle("SetChargingProfile", &json!({"connectorId": 1}), now(0.0))
            .unwrap_err();
        assert_eq!(e.0, ErrorCode::OccurenceConstraintViolation);
        let e = s.handle("Fly", &json!({}), now(0.0)).unwrap_err();
        assert_eq!(e.0, ErrorCode::NotImplemented);
        let r = s
            .handle(
                "ChangeConfiguration",
                &json!({"key": "HeartbeatInterval", "value": "abc"}),
                now(0.0),
            )
            .unwrap();
        assert_eq!(r["status"], "Rejected");
        assert!(s.plug(2, EvSpec::default(), None, now(0.0)).is_err());
    }

    proptest::proptest! {
        /// Whatever the central system sends, the station answers (or
        /// refuses with a CALLERROR) and keeps running.
        #[test]
        fn any_call_is_answered_without_panic(
            calls in proptest::collection::vec(
                (0usize..12, crate::proto::ocpp::arb_payload()), 1..12)
        ) {
            let actions = ["RemoteStartTransaction", "RemoteStopTransaction", "SetChargingProfile",
                "ClearChargingProfile", "GetConfiguration", "ChangeConfiguration", "Reset",
                "TriggerMessage", "UnlockConnector", "DataTransfer", "Heartbeat", ""];
            let mut s = station();
            s.plug(1, EvSpec::default(), None, now(0.0)).unwrap();
            for (i, (a, p)) in calls.into_iter().enumerate() {
                let _ = s.handle(actions[a], &p, now(i as f64 * 600.0));
            }
            s.tick(now(86_400.0));
            proptest::prop_assert!(s.conns[0].meter.energy_wh.is_finite());
        }
    }

    fn notices(s: &mut Station) -> Vec<String> {
        let v = s
            .outbox
            .iter()
            .filter(|(a, _, _)| a == "FirmwareStatusNotification")
            .map(|(_, p, _)| p["status"].as_str().unwrap_or("").to_string())
            .collect();
        s.outbox.clear();
        v
    }

    #[test]
    fn firmware_update_downloads_at_its_date_and_installs_only_signed_images() {
        let key = crate::proto::firmware::signing_key(include_str!("../../../keys/lab-vendor.key"))
            .unwrap();
        let good =
            crate::proto::firmware::sign(&key, FIRMWARE_FAMILY, "001.002.000", b"new").unwrap();
        let other =
            crate::proto::firmware::sign(&key, "Panel Server", "009.000.000", b"x").unwrap();
        let mut s = station();
        let r = s
            .handle(
                "UpdateFirmware",
                &json!({"location": "http://10.0.0.9/fw.bin", "retrieveDate": "2026-03-01T00:02:00Z",
                        "retries": 1, "retryInterval": 30}),
                now(0.0),
            )
            .unwrap();
        assert_eq!(r, json!({}));
        // Nothing before the retrieve date; the next deadline is that date.
        assert_eq!(s.tick(now(100.0)), 120.0);
        assert!(s.download.is_none());
        s.tick(now(120.0));
        let u = s.download.take().expect("download due");
        assert_eq!(u.location, "http://10.0.0.9/fw.bin");
        assert_eq!(notices(&mut s), ["Downloading"]);
        // A failed download is retried once after 30 s.
        assert!(s.downloaded(u, Err("refused".into()), now(121.0)).is_err());
        assert_eq!(notices(&mut s), ["DownloadFailed"]);
        s.tick(now(151.0));
        let u = s.download.take().expect("retry due");
        assert_eq!(u.retries, 0);
        // An image of another family is refused; the version stays.
        let e = s.downloaded(u.clone(), Ok(other), now(152.0)).unwrap_err();
        assert!(e.contains("refused"), "{e}");
        assert_eq!(
            notices(&mut s),
            [
                "Downloading",
                "Downloaded",
                "Installing",
                "InstallationFailed"
            ]
        );
        assert_eq!(s.firmware, FACTORY_FIRMWARE);
        assert!(
            s.downloaded(u.clone(), Ok(b"random".to_vec()), now(153.0))
                .is_err()
        );
        notices(&mut s);
        // The signed image installs.
        assert_eq!(s.downloaded(u, Ok(good.clone()), now(154.0)).unwrap(), good);
        assert_eq!(notices(&mut s), ["Downloaded", "Installing", "Installed"]);
        assert_eq!(s.firmware, "001.002.000");
        assert_eq!(s.firmware_status, FirmwareStatus::Installed);
        // A bad request: CALLERROR, nothing scheduled.
        let e = s
            .handle(
                "UpdateFirmware",
                &json!({"location": "x", "retrieveDate": "soon"}),
                now(700.0),
            )
            .unwrap_err();
        assert_eq!(e.0, ErrorCode::PropertyConstraintViolation);
        assert!(s.firmware_update.is_none());
    }

    #[test]
    fn data_transfer_answers_plausibly() {
        let mut s = station();
        let st = |s: &mut Station, p: Value| s.handle("DataTransfer", &p, now(0.0));
        assert_eq!(
            st(&mut s, json!({"vendorId": "Acme"})).unwrap()["status"],
            "UnknownVendorId"
        );
        assert_eq!(
            st(
                &mut s,
                json!({"vendorId": VENDOR_ID, "messageId": "x", "data": "y"})
            )
            .unwrap()["status"],
            "UnknownMessageId"
        );
        assert_eq!(
            st(&mut s, json!({"vendorId": VENDOR_ID})).unwrap()["status"],
            "Rejected"
        );
        assert_eq!(
            st(&mut s, json!({})).unwrap_err().0,
            ErrorCode::OccurenceConstraintViolation
        );
        assert_eq!(
            st(&mut s, json!({"vendorId": 5})).unwrap_err().0,
            ErrorCode::TypeConstraintViolation
        );
    }

    #[test]
    fn offline_queue_is_capped_dropping_the_oldest_meter_values_first() {
        let mut s = station();
        s.cache.insert("B1".into(), AuthorizationStatus::Accepted);
        s.offline();
        s.keys.meter_value_sample_interval = 1;
        s.plug(1, EvSpec::default(), Some("B1".into()), now(0.0))
            .unwrap();
        // A long cut: far more samples than the queue holds.
        let samples = QUEUE_CAP as u64 + 500;
        s.tick(now(900.0 + samples as f64));
        let stamps = |s: &Station| -> Vec<String> {
            s.queue
                .items()
                .filter(|q| q.action == "MeterValues")
                .map(|q| {
                    q.payload["meterValue"][0]["timestamp"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(s.queue.len(), QUEUE_CAP);
        let a = actions(&s);
        assert_eq!(a[0], "StartTransaction", "the start is never dropped");
        assert!(a[1..].iter().all(|x| x == "MeterValues"));
        let kept = stamps(&s);
        let dropped = s.queue.dropped;
        assert!(dropped >= 500, "{dropped}");
        // The newest samples are kept, in order.
        let newest = stamp(now(900.0).at(900.0 + samples as f64));
        assert_eq!(kept.last().unwrap(), &newest);
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
        // The stop makes room too: the oldest MeterValues goes.
        s.badge(1, "B1".into(), now(900.5 + samples as f64))
            .unwrap();
        assert_eq!(s.queue.len(), QUEUE_CAP);
        assert_eq!(s.queue.dropped, dropped + 1);
        let a = actions(&s);
        assert_eq!(
            (a[0].as_str(), a[a.len() - 1].as_str()),
            ("StartTransaction", "StopTransaction")
        );
        assert_eq!(stamps(&s)[0], kept[1]);
        // Starts and stops alone may exceed the cap: none is ever dropped.
        for n in 0..QUEUE_CAP as i64 {
            s.queue
                .push_bounded("StopTransaction", 1000 + n, json!({}), QUEUE_CAP);
        }
        let a = actions(&s);
        assert_eq!(
            a.iter().filter(|x| *x == "StopTransaction").count(),
            QUEUE_CAP + 1
        );
        assert_eq!(a[0], "StartTransaction");
    }

    #[test]
    fn offline_the_cache_authorises_and_the_queue_keeps_order() {
        let mut s = station();
        s.cache.insert("B1".into(), AuthorizationStatus::Accepted);
        s.offline();
        s.plug(1, EvSpec::default(), Some("B1".into()), now(0.0))
            .unwrap();
        assert!(s.outbox.is_empty());
        assert_eq!(s.conns[0].status, ChargePointStatus::Charging);
        s.badge(1, "B1".into(), now(1000.0)).unwrap();
        assert_eq!(
            actions(&s),
            ["StartTransaction", "MeterValues", "StopTransaction"]
        );
    }
}
