//! The EVCE's OCPP local controller as plain state (issue 11 item 3;
//! reference devices.md §3 "Supervision modes"; docs/ev-charging.md).
//!
//! Contract:
//! - The EVCE is the central system of its stations: it answers every CALL
//!   of a station itself, at once, whether a supervision (CSMS) is
//!   reachable or not ([`Controller::station_call`]). Only
//!   BootNotification (when the link is up) and Authorize (of a supervised
//!   station) ask the CSMS first ([`Answer::AskUpstream`], with the local
//!   answer as fallback; the device gives the link `message_timeout_s` to
//!   come up unless upstream links are cut).
//! - Supervision ([`Controller::supervision_of`]): `local` mode: none (the
//!   EVCE alone); `unique`: every station to the one supervision;
//!   `multiple`: the supervision named by the station's group, none for
//!   group `local` or no group. Each supervised station has its own
//!   upstream link under its own identity (box id, AuthorizationKey).
//! - Local authorisation: the local list accepts; otherwise the
//!   authorization cache (the CSMS's last answer for that idTag);
//!   otherwise Invalid. The cache learns from every upstream Authorize.
//! - Transactions get LOCAL ids from the EVCE (one counter, never reused,
//!   persisted). For a supervised station, StartTransaction,
//!   StopTransaction and MeterValues are queued in arrival order
//!   ([`crate::proto::ocpp::queue::TxQueue`]) and leave when the upstream
//!   link is up, with the CSMS's transaction ids in place of the local
//!   ones; CSMS-to-station CALLs get the reverse mapping
//!   ([`Controller::to_station`]). Plain notifications (status,
//!   heartbeat) are forwarded only while the link is up; after every
//!   (re)connection the station's last BootNotification and the last
//!   status of each connector are sent first ([`Controller::upstream_up`]).
//! - Malformed payloads get the decoder's CALLERROR; unknown actions
//!   NotImplemented.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use fieldtwin_emulator::site::{SupervisionConfig, SupervisionMode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::proto::ocpp::messages::*;
use crate::proto::ocpp::queue::TxQueue;
use crate::proto::ocpp::{ErrorCode, decode};

/// Heartbeat interval the EVCE gives its stations, s.
pub const HEARTBEAT_S: i64 = 300;
/// Most transaction messages the EVCE keeps per station for its CSMS
/// ([NF]: 10,000, about a month of 5-minute samples of one transaction);
/// when full the oldest MeterValues make room, a StartTransaction or
/// StopTransaction is never dropped ([`TxQueue::push_bounded`]).
pub const QUEUE_CAP: usize = 10_000;

/// How the EVCE answers a station's CALL.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Reply(Value),
    Error(ErrorCode, String),
    /// Forward the CALL to the CSMS and relay its answer; answer
    /// `fallback` if it cannot.
    AskUpstream {
        fallback: Value,
    },
}

/// A connector's last meter reading, from the station's MeterValues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub power_w: f64,
    pub energy_wh: f64,
}

/// The energy register and power of a MeterValues payload's last sample
/// (Wh/kWh, W/kW), if it has them.
fn reading_of(payload: &Value, old: Reading) -> Reading {
    let mut r = old;
    let Some(last) = payload["meterValue"].as_array().and_then(|a| a.last()) else {
        return r;
    };
    for sv in last["sampledValue"].as_array().into_iter().flatten() {
        let Some(v) = sv["value"].as_str().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if !v.is_finite() {
            continue;
        }
        let k = if sv["unit"].as_str().is_some_and(|u| u.starts_with('k')) {
            1000.0
        } else {
            1.0
        };
        match sv["measurand"]
            .as_str()
            .unwrap_or("Energy.Active.Import.Register")
        {
            "Energy.Active.Import.Register" => r.energy_wh = v * k,
            "Power.Active.Import" => r.power_w = v * k,
            _ => {}
        }
    }
    r
}

/// One station as the controller sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StationState {
    /// Its last BootNotification payload.
    pub boot: Option<Value>,
    /// Last StatusNotification payload per connector.
    pub statuses: BTreeMap<u32, Value>,
    /// Transaction messages for the CSMS.
    pub queue: TxQueue,
    /// Last meter reading per connector (MeterValues; a connector that
    /// stops charging draws nothing).
    #[serde(default)]
    pub meter: BTreeMap<u32, Reading>,
    /// Plain CALLs for the CSMS (only while online).
    #[serde(skip)]
    pub outbox: VecDeque<(String, Value)>,
    /// The upstream link is up.
    #[serde(skip)]
    pub online: bool,
    /// The station is connected to the EVCE.
    #[serde(skip)]
    pub connected: bool,
}

/// What survives a reboot (NV memory).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Persisted {
    pub next_tx: i64,
    pub cache: BTreeMap<String, AuthorizationStatus>,
    pub stations: BTreeMap<String, StationState>,
}

/// The controller (see the module contract).
pub struct Controller {
    pub mode: SupervisionMode,
    pub supervisions: Vec<SupervisionConfig>,
    /// Group (supervision name or `local`) per box id.
    pub groups: BTreeMap<String, String>,
    pub local_list: BTreeSet<String>,
    pub state: Persisted,
}

impl Controller {
    pub fn new(
        mode: SupervisionMode,
        supervisions: Vec<SupervisionConfig>,
        groups: BTreeMap<String, String>,
        local_list: impl IntoIterator<Item = String>,
        state: Persisted,
    ) -> Self {
        let mut state = state;
        state.next_tx = state.next_tx.max(1);
        Self {
            mode,
            supervisions,
            groups,
            local_list: local_list.into_iter().collect(),
            state,
        }
    }

    /// The supervision of station `box_id`, if it has one.
    pub fn supervision_of(&self, box_id: &str) -> Option<&SupervisionConfig> {
        match self.mode {
            SupervisionMode::Local => None,
            SupervisionMode::Unique => self.supervisions.first(),
            SupervisionMode::Multiple => {
                let g = self.groups.get(box_id)?;
                self.supervisions.iter().find(|s| &s.name == g)
            }
        }
    }

    pub fn station(&mut self, box_id: &str) -> &mut StationState {
        self.state.stations.entry(box_id.to_string()).or_default()
    }

    /// The local decision on `id_tag`.
    pub fn local_decision(&self, id_tag: &str) -> AuthorizationStatus {
        if self.local_list.contains(id_tag) {
            AuthorizationStatus::Accepted
        } else {
            self.state
                .cache
                .get(id_tag)
                .copied()
                .unwrap_or(AuthorizationStatus::Invalid)
        }
    }

    fn boot_conf(now: DateTime<Utc>) -> Value {
        json!({
            "status": "Accepted",
            "currentTime": crate::charging_station::station::stamp(now),
            "interval": HEARTBEAT_S,
        })
    }

    /// A station's CALL (see the module contract).
    pub fn station_call(
        &mut self,
        box_id: &str,
        action: &str,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> Answer {
        match self.call(box_id, action, payload, now) {
            Ok(a) => a,
            Err(e) => Answer::Error(e.code, e.description),
        }
    }

    fn call(
        &mut self,
        box_id: &str,
        action: &str,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> Result<Answer, crate::proto::ocpp::PayloadError> {
        let supervised = self.supervision_of(box_id).is_some();
        let st = self.station(box_id);
        let online = supervised && st.online;
        let stamp = crate::charging_station::station::stamp(now);
        Ok(match action {
            "BootNotification" => {
                decode::<BootNotificationReq>(payload)?;
                st.boot = Some(payload.clone());
                let local = Self::boot_conf(now);
                if online {
                    Answer::AskUpstream { fallback: local }
                } else {
                    Answer::Reply(local)
                }
            }
            "Heartbeat" => {
                if online {
                    st.outbox.push_back(("Heartbeat".into(), json!({})));
                }
                Answer::Reply(json!({ "currentTime": stamp }))
            }
            "StatusNotification" => {
                let r: StatusNotificationReq = decode(payload)?;
                st.statuses.insert(r.connector_id, payload.clone());
                if !matches!(payload["status"].as_str(), Some("Charging"))
                    && let Some(m) = st.meter.get_mut(&r.connector_id)
                {
                    m.power_w = 0.0;
                }
                if online {
                    st.outbox
                        .push_back(("StatusNotification".into(), payload.clone()));
                }
                Answer::Reply(json!({}))
            }
            "Authorize" => {
                let r: AuthorizeReq = decode(payload)?;
                let local =
                    json!({ "idTagInfo": IdTagInfo::status(self.local_decision(&r.id_tag)) });
                // Supervised: the CSMS decides when it can be reached (the
                // link may be coming up); the device falls back to `local`.
                if supervised {
                    Answer::AskUpstream { fallback: local }
                } else {
                    Answer::Reply(local)
                }
            }
            "StartTransaction" => {
                let r: StartTransactionReq = decode(payload)?;
                let id = self.state.next_tx;
                self.state.next_tx += 1;
                let info = IdTagInfo::status(self.local_decision(&r.id_tag));
                if supervised {
                    self.station(box_id).queue.push_bounded(
                        "StartTransaction",
                        id,
                        payload.clone(),
                        QUEUE_CAP,
                    );
                }
                Answer::Reply(json!({ "transactionId": id, "idTagInfo": info }))
            }
            "StopTransaction" => {
                let r: StopTransactionReq = decode(payload)?;
                if supervised {
                    st.queue.push_bounded(
                        "StopTransaction",
                        r.transaction_id,
                        payload.clone(),
                        QUEUE_CAP,
                    );
                }
                Answer::Reply(
                    json!({ "idTagInfo": IdTagInfo::status(AuthorizationStatus::Accepted) }),
                )
            }
            "MeterValues" => {
                let r: MeterValuesReq = decode(payload)?;
                let old = st.meter.get(&r.connector_id).copied().unwrap_or_default();
                st.meter.insert(r.connector_id, reading_of(payload, old));
                match r.transaction_id {
                    Some(tx) if supervised => {
                        st.queue
                            .push_bounded("MeterValues", tx, payload.clone(), QUEUE_CAP);
                    }
                    None if online => st.outbox.push_back(("MeterValues".into(), payload.clone())),
                    _ => {}
                }
                Answer::Reply(json!({}))
            }
            "FirmwareStatusNotification" | "DiagnosticsStatusNotification" => {
                if online {
                    st.outbox.push_back((action.to_string(), payload.clone()));
                }
                Answer::Reply(json!({}))
            }
            "DataTransfer" => Answer::Reply(json!({ "status": "UnknownVendorId" })),
            _ => Answer::Error(
                ErrorCode::NotImplemented,
                format!("the EV Charging Expert does not implement {action}"),
            ),
        })
    }

    /// The CSMS answered a forwarded CALL.
    pub fn upstream_answered(&mut self, action: &str, payload: &Value, result: &Value) {
        if action == "Authorize"
            && let (Some(tag), Ok(conf)) = (
                payload.get("idTag").and_then(Value::as_str),
                decode::<AuthorizeConf>(result),
            )
        {
            self.state
                .cache
                .insert(tag.to_string(), conf.id_tag_info.status);
        }
    }

    /// The upstream link of `box_id` is up: what to send before the queue
    /// (its BootNotification and the last status of each connector).
    pub fn upstream_up(&mut self, box_id: &str) -> Vec<(String, Value)> {
        let st = self.station(box_id);
        st.online = true;
        st.outbox.clear();
        let mut v = Vec::new();
        if let Some(b) = &st.boot {
            v.push(("BootNotification".to_string(), b.clone()));
        }
        for s in st.statuses.values() {
            v.push(("StatusNotification".to_string(), s.clone()));
        }
        v
    }

    /// The upstream link of `box_id` is down.
    pub fn upstream_down(&mut self, box_id: &str) {
        let st = self.station(box_id);
        st.online = false;
        st.outbox.clear();
    }

    /// A CSMS CALL for station `box_id`, with the CSMS's transaction ids
    /// replaced by the EVCE's.
    pub fn to_station(&mut self, box_id: &str, action: &str, payload: &Value) -> Value {
        let st = self.station(box_id);
        let mut p = payload.clone();
        let map = |v: &mut Value, q: &TxQueue| {
            if let Some(id) = v.as_i64()
                && let Some(local) = q.local_of(id)
            {
                *v = json!(local);
            }
        };
        match action {
            "RemoteStopTransaction" => {
                if let Some(v) = p.get_mut("transactionId") {
                    map(v, &st.queue);
                }
            }
            "SetChargingProfile" => {
                if let Some(v) = p
                    .get_mut("csChargingProfiles")
                    .and_then(|c| c.get_mut("transactionId"))
                {
                    map(v, &st.queue);
                }
            }
            _ => {}
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup() -> SupervisionConfig {
        SupervisionConfig {
            name: "cpo".into(),
            url: "wss://127.0.0.1:9/ocpp".into(),
            ca: None,
            ping_interval_s: 30,
            message_timeout_s: 10,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn reply(a: Answer) -> Value {
        match a {
            Answer::Reply(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modes_pick_the_supervision() {
        let groups = BTreeMap::from([("cs1".to_string(), "cpo".to_string())]);
        let c = Controller::new(
            SupervisionMode::Multiple,
            vec![sup()],
            groups.clone(),
            [],
            Persisted::default(),
        );
        assert!(c.supervision_of("cs1").is_some());
        assert!(c.supervision_of("cs2").is_none());
        let c = Controller::new(
            SupervisionMode::Unique,
            vec![sup()],
            groups.clone(),
            [],
            Persisted::default(),
        );
        assert!(c.supervision_of("cs2").is_some());
        let c = Controller::new(
            SupervisionMode::Local,
            vec![sup()],
            groups,
            [],
            Persisted::default(),
        );
        assert!(c.supervision_of("cs1").is_none());
    }

    #[test]
    fn offline_transactions_are_queued_and_mapped() {
        let mut c = Controller::new(
            SupervisionMode::Unique,
            vec![sup()],
            BTreeMap::new(),
            ["LOCAL1".to_string()],
            Persisted::default(),
        );
        let fallback = |a: Answer| match a {
            Answer::AskUpstream { fallback } => fallback,
            other => panic!("{other:?}"),
        };
        let a = fallback(c.station_call("cs1", "Authorize", &json!({"idTag": "LOCAL1"}), now()));
        assert_eq!(a["idTagInfo"]["status"], "Accepted");
        let a = fallback(c.station_call("cs1", "Authorize", &json!({"idTag": "X"}), now()));
        assert_eq!(a["idTagInfo"]["status"], "Invalid");
        let s = reply(c.station_call(
            "cs1",
            "StartTransaction",
            &json!({"connectorId": 1, "idTag": "LOCAL1", "meterStart": 0, "timestamp": "2026-03-01T00:00:00Z"}),
            now(),
        ));
        let local = s["transactionId"].as_i64().unwrap();
        reply(c.station_call(
            "cs1",
            "MeterValues",
            &json!({"connectorId": 1, "transactionId": local, "meterValue": []}),
            now(),
        ));
        reply(c.station_call(
            "cs1",
            "StopTransaction",
            &json!({"transactionId": local, "meterStop": 10, "timestamp": "2026-03-01T01:00:00Z"}),
            now(),
        ));
        // The link returns: boot first, then the queue with the CSMS's id.
        c.station_call(
            "cs1",
            "BootNotification",
            &json!({"chargePointVendor": "v", "chargePointModel": "m"}),
            now(),
        );
        let first = c.upstream_up("cs1");
        assert_eq!(first[0].0, "BootNotification");
        let q = &mut c.station("cs1").queue;
        assert_eq!(q.front().unwrap().0, "StartTransaction");
        q.ack(&json!({"transactionId": 777, "idTagInfo": {"status": "Accepted"}}));
        assert_eq!(q.front().unwrap().1["transactionId"], 777);
        q.ack(&json!({}));
        assert_eq!(q.front().unwrap().0, "StopTransaction");
        assert_eq!(q.front().unwrap().1["transactionId"], 777);
        // A RemoteStop of the CSMS's id reaches the station with the local one.
        let p = c.to_station(
            "cs1",
            "RemoteStopTransaction",
            &json!({"transactionId": 777}),
        );
        assert_eq!(p["transactionId"], local);
    }

    proptest::proptest! {
        /// Whatever a station sends, the controller answers or refuses
        /// with a CALLERROR, and the ids it gives stay unique.
        #[test]
        fn any_station_call_is_answered_without_panic(
            calls in proptest::collection::vec(
                (0usize..10, crate::proto::ocpp::arb_payload()), 1..16)
        ) {
            let actions = ["BootNotification", "Heartbeat", "StatusNotification", "Authorize",
                "StartTransaction", "StopTransaction", "MeterValues", "DataTransfer",
                "FirmwareStatusNotification", "Teleport"];
            let mut c = Controller::new(SupervisionMode::Unique, vec![sup()], BTreeMap::new(), [], Persisted::default());
            let mut ids = std::collections::BTreeSet::new();
            for (a, p) in calls {
                if let Answer::Reply(v) = c.station_call("cs1", actions[a], &p, now())
                    && let Some(id) = v.get("transactionId").and_then(Value::as_i64)
                {
                    proptest::prop_assert!(ids.insert(id));
                }
                let _ = c.to_station("cs1", "RemoteStopTransaction", &p);
                let _ = c.to_station("cs1", "SetChargingProfile", &p);
            }
        }
    }

    #[test]
    fn meter_values_feed_the_readings_and_a_stop_zeroes_the_power() {
        let mut c = Controller::new(
            SupervisionMode::Local,
            vec![],
            BTreeMap::new(),
            [],
            Persisted::default(),
        );
        reply(c.station_call(
            "cs1",
            "MeterValues",
            &json!({"connectorId": 1, "transactionId": 1, "meterValue": [{"timestamp": "t",
                "sampledValue": [{"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                                 {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"}]}]}),
            now(),
        ));
        let m = c.station("cs1").meter[&1];
        assert_eq!((m.power_w, m.energy_wh), (7400.0, 1500.0));
        reply(c.station_call(
            "cs1",
            "StatusNotification",
            &json!({"connectorId": 1, "errorCode": "NoError", "status": "Finishing"}),
            now(),
        ));
        let m = c.station("cs1").meter[&1];
        assert_eq!((m.power_w, m.energy_wh), (0.0, 1500.0));
    }

    #[test]
    fn bad_payloads_get_call_errors() {
        let mut c = Controller::new(
            SupervisionMode::Local,
            vec![],
            BTreeMap::new(),
            [],
            Persisted::default(),
        );
        let a = c.station_call(
            "cs1",
            "StartTransaction",
            &json!({"connectorId": "x"}),
            now(),
        );
        assert!(matches!(
            a,
            Answer::Error(ErrorCode::TypeConstraintViolation, _)
                | Answer::Error(ErrorCode::OccurenceConstraintViolation, _)
        ));
        assert!(matches!(
            c.station_call("cs1", "Teleport", &json!({}), now()),
            Answer::Error(ErrorCode::NotImplemented, _)
        ));
        // Local mode: nothing is queued.
        c.station_call(
            "cs1",
            "StartTransaction",
            &json!({"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": "t"}),
            now(),
        );
        assert!(c.station("cs1").queue.is_empty());
    }
}
