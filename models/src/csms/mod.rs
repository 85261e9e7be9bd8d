//! An emulated CSMS (model `CSMS`): the central system a developer without
//! one of their own gets in the site, so that an EV Charging Expert in
//! `unique` or `multiple` supervision mode has somewhere to send its
//! stations' traffic, and scenarios can check what arrived (issue 11 item
//! 9; docs/ev-charging.md "The emulated CSMS").
//!
//! Contract:
//! - OCPP 1.6J server on `eth1`: `ws://` on [`WS_PORT`] and `wss://` on
//!   [`WSS_PORT`] (TLS 1.2, a certificate of the site's OCPP CA, which the
//!   EVCE trusts when its supervision names no `ca`), any path whose last
//!   segment is the charge point id, subprotocol `ocpp1.6` required (HTTP
//!   400 otherwise). Every identity is accepted (a developer's CSMS, [NF]);
//!   whether it sent Basic auth is recorded.
//! - Answers ([`Record::call`], plain state): BootNotification Accepted
//!   (interval 300 s), Heartbeat, StatusNotification, Authorize Accepted
//!   for every idTag, StartTransaction with its own transaction ids (one
//!   counter from [`FIRST_TRANSACTION_ID`], never reused while it runs),
//!   StopTransaction, MeterValues, Firmware/DiagnosticsStatusNotification,
//!   DataTransfer `UnknownVendorId`; any other action NotImplemented; a
//!   malformed payload the decoder's CALLERROR.
//! - It records what it received, per charge point (connections, CALLs by
//!   action, the last [`RECENT`] CALLs) and per transaction (start, every
//!   MeterValues sample with its energy, stop, whether sample times only
//!   went forward, duplicates), and counts transaction messages that name
//!   an id it never gave. The record is volatile (lost with power) and
//!   shown in the device details (`details.extra.csms`).
//! - It emits no event per message (the event stream stays repeatable).

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fieldtwin_emulator::clock::Clock;
use fieldtwin_emulator::device::{BootError, Details, Device, DeviceContext};
use fieldtwin_emulator::net::BoxStream;
use fieldtwin_emulator::site::DeviceConfig;
use fieldtwin_emulator::storage::Nv;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::proto::ocpp::link::{self, SiteCa};
use crate::proto::ocpp::messages::*;
use crate::proto::ocpp::rpc;
use crate::proto::ocpp::{ErrorCode, decode};

/// Port of the plain OCPP-J server.
pub const WS_PORT: u16 = 8180;
/// Port of the OCPP-J server over TLS.
pub const WSS_PORT: u16 = 8443;
/// The first transaction id the CSMS gives.
pub const FIRST_TRANSACTION_ID: i64 = 1001;
/// CALLs kept per charge point in the record of recent messages.
pub const RECENT: usize = 50;
/// Transactions kept in the record (the oldest are forgotten).
pub const MAX_TRANSACTIONS: usize = 1000;

/// One transaction as the CSMS saw it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transaction {
    pub id: i64,
    pub charge_point: String,
    pub connector: u32,
    pub id_tag: String,
    pub meter_start: i64,
    pub started: String,
    /// MeterValues messages received for it.
    pub meter_values: u64,
    /// Energy.Active.Import.Register of the samples, Wh, in arrival order.
    pub energy_wh: Vec<f64>,
    /// Sample timestamps, in arrival order.
    pub sample_times: Vec<String>,
    /// Every sample time was later than the one before.
    pub in_order: bool,
    /// Samples whose time had been received before.
    pub duplicates: u64,
    pub meter_stop: Option<i64>,
    pub stop_reason: Option<String>,
    /// Messages of the transaction that arrived after its StopTransaction.
    pub after_stop: u64,
}

/// What the CSMS knows of one charge point.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChargePoint {
    pub connected: bool,
    pub connections: u64,
    /// The last connection sent HTTP Basic auth.
    pub basic_auth: bool,
    /// CALLs received, by action.
    pub received: BTreeMap<String, u64>,
    /// The last CALLs: action and transaction id, if any.
    pub recent: VecDeque<Value>,
    /// Last status per connector.
    pub statuses: BTreeMap<u32, String>,
}

/// The CSMS's record (see the module contract).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub charge_points: BTreeMap<String, ChargePoint>,
    pub transactions: Vec<Transaction>,
    pub next_transaction_id: i64,
    /// MeterValues / StopTransaction naming a transaction id it never gave.
    pub unknown_transaction_messages: u64,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            charge_points: BTreeMap::new(),
            transactions: Vec::new(),
            next_transaction_id: FIRST_TRANSACTION_ID,
            unknown_transaction_messages: 0,
        }
    }
}

fn energy_of(mv: &MeterValue) -> Option<f64> {
    let s = mv.sampled_value.iter().find(|s| {
        s.measurand
            .as_deref()
            .unwrap_or("Energy.Active.Import.Register")
            == "Energy.Active.Import.Register"
    })?;
    let v = s.value.parse::<f64>().ok()?;
    Some(if s.unit.as_deref() == Some("kWh") {
        v * 1000.0
    } else {
        v
    })
}

impl Record {
    fn cp(&mut self, id: &str) -> &mut ChargePoint {
        self.charge_points.entry(id.to_string()).or_default()
    }

    fn tx(&mut self, id: i64) -> Option<&mut Transaction> {
        self.transactions.iter_mut().find(|t| t.id == id)
    }

    /// A CALL of charge point `cp` (see the module contract).
    pub fn call(
        &mut self,
        cp: &str,
        action: &str,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value, (ErrorCode, String)> {
        let d = |e: crate::proto::ocpp::PayloadError| (e.code, e.description);
        let stamp = crate::charging_station::station::stamp(now);
        let c = self.cp(cp);
        *c.received.entry(action.to_string()).or_default() += 1;
        let mut brief = json!({ "action": action });
        if let Some(t) = payload.get("transactionId") {
            brief["transactionId"] = t.clone();
        }
        c.recent.push_back(brief);
        while c.recent.len() > RECENT {
            c.recent.pop_front();
        }
        match action {
            "BootNotification" => {
                decode::<BootNotificationReq>(payload).map_err(d)?;
                Ok(json!({"status": "Accepted", "currentTime": stamp, "interval": 300}))
            }
            "Heartbeat" => Ok(json!({ "currentTime": stamp })),
            "StatusNotification" => {
                let r: StatusNotificationReq = decode(payload).map_err(d)?;
                let status = payload["status"].as_str().unwrap_or("").to_string();
                self.cp(cp).statuses.insert(r.connector_id, status);
                Ok(json!({}))
            }
            "Authorize" => {
                decode::<AuthorizeReq>(payload).map_err(d)?;
                Ok(json!({"idTagInfo": {"status": "Accepted"}}))
            }
            "StartTransaction" => {
                let r: StartTransactionReq = decode(payload).map_err(d)?;
                let id = self.next_transaction_id;
                self.next_transaction_id += 1;
                self.transactions.push(Transaction {
                    id,
                    charge_point: cp.to_string(),
                    connector: r.connector_id,
                    id_tag: r.id_tag,
                    meter_start: r.meter_start,
                    started: payload["timestamp"].as_str().unwrap_or("").to_string(),
                    meter_values: 0,
                    energy_wh: Vec::new(),
                    sample_times: Vec::new(),
                    in_order: true,
                    duplicates: 0,
                    meter_stop: None,
                    stop_reason: None,
                    after_stop: 0,
                });
                if self.transactions.len() > MAX_TRANSACTIONS {
                    self.transactions.remove(0);
                }
                Ok(json!({"transactionId": id, "idTagInfo": {"status": "Accepted"}}))
            }
            "MeterValues" => {
                let r: MeterValuesReq = decode(payload).map_err(d)?;
                if let Some(id) = r.transaction_id {
                    match self.tx(id) {
                        Some(t) => {
                            t.meter_values += 1;
                            if t.meter_stop.is_some() {
                                t.after_stop += 1;
                            }
                            for mv in &r.meter_value {
                                let at = mv.timestamp.clone();
                                if t.sample_times.contains(&at) {
                                    t.duplicates += 1;
                                } else if t.sample_times.last().is_some_and(|l| {
                                    DateTime::parse_from_rfc3339(l).ok()
                                        >= DateTime::parse_from_rfc3339(&at).ok()
                                }) {
                                    t.in_order = false;
                                }
                                t.sample_times.push(at);
                                if let Some(e) = energy_of(mv) {
                                    t.energy_wh.push(e);
                                }
                            }
                        }
                        None => self.unknown_transaction_messages += 1,
                    }
                }
                Ok(json!({}))
            }
            "StopTransaction" => {
                let r: StopTransactionReq = decode(payload).map_err(d)?;
                match self.tx(r.transaction_id) {
                    Some(t) if t.meter_stop.is_none() => {
                        t.meter_stop = Some(r.meter_stop);
                        t.stop_reason = payload["reason"].as_str().map(str::to_string);
                    }
                    Some(t) => t.after_stop += 1,
                    None => self.unknown_transaction_messages += 1,
                }
                Ok(json!({"idTagInfo": {"status": "Accepted"}}))
            }
            "FirmwareStatusNotification" | "DiagnosticsStatusNotification" => Ok(json!({})),
            "DataTransfer" => Ok(json!({"status": "UnknownVendorId"})),
            _ => Err((
                ErrorCode::NotImplemented,
                format!("the emulated CSMS does not implement {action}"),
            )),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CSMS device.
pub struct Csms {
    id: String,
    ip: Ipv4Addr,
    record: Arc<Mutex<Record>>,
}

impl Csms {
    pub fn new(dev: &DeviceConfig) -> Self {
        Self {
            id: dev.id.clone(),
            ip: dev.ip,
            record: Arc::default(),
        }
    }

    /// A copy of the record.
    pub fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    async fn link(
        record: Arc<Mutex<Record>>,
        ctx: DeviceContext,
        s: BoxStream,
        peer: std::net::SocketAddr,
    ) {
        let (ws, (cp, basic)) = match link::accept(s, Admission).await {
            Ok(accepted) => accepted,
            Err(_) => {
                tracing::debug!("CSMS: handshake from {peer} failed");
                return;
            }
        };
        {
            let mut r = lock(&record);
            let c = r.cp(&cp);
            c.connected = true;
            c.connections += 1;
            c.basic_auth = basic;
        }
        let (_rpc, mut incoming, driver) = rpc::start(ws, Some(Duration::from_secs(30)));
        let token = ctx.power_lost();
        let mut driver = Box::pin(driver);
        loop {
            tokio::select! {
                _ = &mut driver => break,
                _ = token.cancelled() => break,
                call = incoming.recv() => {
                    let Some(call) = call else { break };
                    let now = ctx.clock.utc_now();
                    let r = lock(&record).call(&cp, &call.action, &call.payload, now);
                    match r {
                        Ok(v) => call.reply.value(v),
                        Err((code, d)) => call.reply.error(code, &d),
                    }
                }
            }
        }
        lock(&record).cp(&cp).connected = false;
    }
}

/// The CSMS's handshake rules: any charge point id but an empty one (404);
/// whether it sent Basic auth is recorded.
struct Admission;

impl link::Admission for Admission {
    /// The charge point id and whether it sent Basic auth.
    type Admitted = (String, bool);

    fn identify(&mut self, id: &str) -> Result<(), link::Refusal> {
        if id.is_empty() {
            return Err(link::refusal(
                StatusCode::NOT_FOUND,
                "no charge point id in the path",
            ));
        }
        Ok(())
    }

    fn admit(&mut self, id: String, req: &Request) -> Result<(String, bool), link::Refusal> {
        let basic = link::basic_auth(req.headers().get("Authorization")).is_some();
        Ok((id, basic))
    }
}

impl Device for Csms {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> &str {
        "CSMS"
    }

    fn details(&self, _nv: &Nv, _clock: &Clock) -> Details {
        let mut d = Details::default();
        d.extra.insert(
            "csms".into(),
            serde_json::to_value(self.record()).unwrap_or(Value::Null),
        );
        d
    }

    fn boot(self: Arc<Self>, ctx: DeviceContext) -> BoxFuture<'static, Result<(), BootError>> {
        async move {
            *lock(&self.record) = Record::default();
            let stack = ctx
                .interface("eth1")
                .ok_or_else(|| BootError::Other("no eth1 interface".into()))?;
            let plain = ctx.listen_tcp("eth1", "ocpp", WS_PORT).await?;
            let tls = ctx.listen_tcp("eth1", "ocpp-tls", WSS_PORT).await?;
            let server_cfg = SiteCa::get()
                .server_config(&[self.ip, stack.ipv4(), Ipv4Addr::LOCALHOST])
                .map_err(BootError::Other)?;
            let (rec, c2) = (self.record.clone(), ctx.clone());
            link::serve(&ctx, plain, tls, server_cfg, move |s, peer, _tls| {
                Self::link(rec.clone(), c2.clone(), s, peer)
            });
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn mv(tx: i64, at: &str, wh: i64) -> Value {
        json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": at,
            "sampledValue": [{"value": wh.to_string(), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]})
    }

    #[test]
    fn transactions_are_recorded_in_order_with_their_ids() {
        let mut r = Record::default();
        let a = r
            .call("cs1", "Authorize", &json!({"idTag": "ANY"}), now())
            .unwrap();
        assert_eq!(a["idTagInfo"]["status"], "Accepted");
        let s = r
            .call(
                "cs1",
                "StartTransaction",
                &json!({"connectorId": 1, "idTag": "ANY", "meterStart": 5, "timestamp": "2026-03-01T00:00:00Z"}),
                now(),
            )
            .unwrap();
        let id = s["transactionId"].as_i64().unwrap();
        assert_eq!(id, FIRST_TRANSACTION_ID);
        // Two in order, then a duplicate, one going back, one for an id
        // never given.
        for (tx, at, wh) in [
            (id, "2026-03-01T00:05:00Z", 100),
            (id, "2026-03-01T00:10:00Z", 200),
            (id, "2026-03-01T00:10:00Z", 200),
            (id, "2026-03-01T00:07:00Z", 150),
            (7, "2026-03-01T00:07:00Z", 150),
        ] {
            r.call("cs1", "MeterValues", &mv(tx, at, wh), now())
                .unwrap();
        }
        r.call(
            "cs1",
            "StopTransaction",
            &json!({"transactionId": id, "meterStop": 300, "timestamp": "2026-03-01T01:00:00Z", "reason": "Local"}),
            now(),
        )
        .unwrap();
        let t = &r.transactions[0];
        assert_eq!(t.meter_values, 4);
        assert_eq!(t.duplicates, 1);
        assert!(!t.in_order);
        assert_eq!(t.energy_wh, [100.0, 200.0, 200.0, 150.0]);
        assert_eq!(t.meter_stop, Some(300));
        assert_eq!(r.unknown_transaction_messages, 1);
        assert_eq!(r.charge_points["cs1"].received["MeterValues"], 5);
        let s2 = r
            .call(
                "cs2",
                "StartTransaction",
                &json!({"connectorId": 1, "idTag": "B", "meterStart": 0, "timestamp": "t"}),
                now(),
            )
            .unwrap();
        assert_eq!(s2["transactionId"], FIRST_TRANSACTION_ID + 1);
    }

    #[test]
    fn bad_and_unknown_calls_get_errors() {
        let mut r = Record::default();
        let e = r
            .call(
                "cs1",
                "StartTransaction",
                &json!({"connectorId": "x"}),
                now(),
            )
            .unwrap_err();
        assert!(matches!(
            e.0,
            ErrorCode::TypeConstraintViolation | ErrorCode::OccurenceConstraintViolation
        ));
        assert_eq!(
            r.call("cs1", "Teleport", &json!({}), now()).unwrap_err().0,
            ErrorCode::NotImplemented
        );
        assert_eq!(
            r.call("cs1", "DataTransfer", &json!({"vendorId": "x"}), now())
                .unwrap()["status"],
            "UnknownVendorId"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_call_is_answered_without_panic(
            calls in proptest::collection::vec(
                (0usize..9, crate::proto::ocpp::arb_payload()), 1..16)
        ) {
            let actions = ["BootNotification", "Heartbeat", "StatusNotification", "Authorize",
                "StartTransaction", "StopTransaction", "MeterValues", "DataTransfer", "Teleport"];
            let mut r = Record::default();
            for (a, p) in calls {
                let _ = r.call("cs1", actions[a], &p, now());
            }
        }
    }
}
