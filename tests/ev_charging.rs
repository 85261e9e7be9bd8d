//! Issue 11, EV charging end to end (site octets 120-129): a CSMS written
//! with the python `ocpp` library and `websockets` (TLS 1.2 only, Basic
//! auth, every frame recorded) supervises the EVCE's stations in `unique`
//! mode; a python `ocpp` charge point joins the EVCE as a third station;
//! the upstream is cut for one virtual hour while both stations charge;
//! the CSMS updates cs1's firmware through the EVCE (python's http.server
//! serves the files; a random file is refused, a signed image installs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RunningSite, free_port, site_text};
use serde_json::Value;

const CSMS: &str = r#"
import asyncio, base64, json, ssl, sys, itertools
from datetime import datetime, timezone
import websockets
from websockets.asyncio.server import serve
from http import HTTPStatus
from ocpp.routing import on
import dataclasses, glob, os
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, RegistrationStatus

port, cert, key, log_path, keys = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
cmd_dir = os.path.dirname(log_path)
cps = {}
log = open(log_path, "a", buffering=1)
ids = itertools.count(1001)

def rec(**kw):
    log.write(json.dumps(kw) + "\n")

def now():
    return datetime.now(timezone.utc).isoformat()

class Recorded:
    """The connection as the ocpp library sees it: every frame is logged."""
    def __init__(self, ws, cp):
        self.ws, self.cp = ws, cp
    async def recv(self):
        m = await self.ws.recv()
        rec(cp=self.cp, dir="in", msg=m)
        return m
    async def send(self, m):
        rec(cp=self.cp, dir="out", msg=m)
        await self.ws.send(m)

class Csms(ChargePoint):
    @on(Action.boot_notification)
    def on_boot(self, **kw):
        return call_result.BootNotification(current_time=now(), interval=300, status=RegistrationStatus.accepted)
    @on(Action.heartbeat)
    def on_heartbeat(self, **kw):
        return call_result.Heartbeat(current_time=now())
    @on(Action.status_notification)
    def on_status(self, **kw):
        return call_result.StatusNotification()
    @on(Action.authorize)
    def on_authorize(self, **kw):
        return call_result.Authorize(id_tag_info={"status": "Accepted"})
    @on(Action.start_transaction)
    def on_start(self, **kw):
        return call_result.StartTransaction(transaction_id=next(ids), id_tag_info={"status": "Accepted"})
    @on(Action.stop_transaction)
    def on_stop(self, **kw):
        return call_result.StopTransaction()
    @on(Action.meter_values)
    def on_meter(self, **kw):
        return call_result.MeterValues()
    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **kw):
        return call_result.FirmwareStatusNotification()

def check(connection, request):
    cp = request.path.rstrip("/").rsplit("/", 1)[-1]
    auth = request.headers.get("Authorization", "")
    ok = False
    if auth.startswith("Basic "):
        user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
        ok = user == cp and keys.get(cp) == pw
    rec(cp=cp, dir="auth", ok=ok)
    if not ok:
        return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong Basic auth\n")
    return None

async def handler(ws):
    cp = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
    tls = ws.transport.get_extra_info("ssl_object").version()
    rec(cp=cp, dir="open", tls=tls, subprotocol=ws.subprotocol)
    c = Csms(cp, Recorded(ws, cp))
    cps[cp] = c
    try:
        await c.start()
    except websockets.exceptions.ConnectionClosed:
        rec(cp=cp, dir="closed")

async def commands():
    # A file cmd-<cp>.json {"action": ..., "payload": {...}} makes the CSMS
    # send that CALL to <cp>; the answer is logged as dir "result".
    while True:
        await asyncio.sleep(0.1)
        for f in sorted(glob.glob(os.path.join(cmd_dir, "cmd-*.json"))):
            cp = os.path.basename(f)[4:-5]
            c = json.load(open(f))
            os.remove(f)
            try:
                r = await cps[cp].call(getattr(call, c["action"])(**c["payload"]))
                rec(cp=cp, dir="result", action=c["action"], result=dataclasses.asdict(r))
            except Exception as e:
                rec(cp=cp, dir="result", action=c["action"], error=repr(e))

async def main():
    asyncio.create_task(commands())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    async with serve(handler, "127.0.0.1", port, ssl=ctx, subprotocols=["ocpp1.6"], process_request=check):
        print("listening", flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

const CHARGE_POINT: &str = r#"
import asyncio, base64, json, sys
from datetime import datetime, timezone
import websockets
from ocpp.v16 import ChargePoint, call

url, box, key = sys.argv[1], sys.argv[2], sys.argv[3]

def now():
    return datetime.now(timezone.utc).isoformat()

async def main():
    auth = "Basic " + base64.b64encode(f"{box}:{key}".encode()).decode()
    async with websockets.connect(f"{url}/{box}", subprotocols=["ocpp1.6"],
                                  additional_headers={"Authorization": auth}) as ws:
        cp = ChargePoint(box, ws)
        task = asyncio.create_task(cp.start())
        out = {}
        r = await cp.call(call.BootNotification(charge_point_vendor="Python", charge_point_model="ocpp-lib"))
        out["boot"] = r.status
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        r = await cp.call(call.Authorize(id_tag="PY-TAG"))
        out["authorize"] = r.id_tag_info["status"]
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
        r = await cp.call(call.StartTransaction(connector_id=1, id_tag="PY-TAG", meter_start=100, timestamp=now()))
        tx = r.transaction_id
        out["tx"] = tx
        out["start_status"] = r.id_tag_info["status"]
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{"timestamp": now(),
            "sampledValue": [{"value": "2100", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]))
        await cp.call(call.StopTransaction(transaction_id=tx, meter_stop=5100, timestamp=now(), reason="Local"))
        task.cancel()
        # Bad frames get CALLERRORs (or are dropped) and the link stays up.
        errors = {}
        for uid, frame in [("bad1", '[2,"bad1","Heartbeat",[]]'),
                           ("bad2", '[2,"bad2","StartTransaction",{"connectorId":"one"}]'),
                           ("bad3", '[2,"bad3","Teleport",{}]'),
                           ("bad4", '[7,"bad4",{}]')]:
            await ws.send(frame)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply[0] == 4 and reply[1] == uid, reply
            errors[uid] = reply[2]
        await ws.send("this is not JSON")
        await ws.send('[2,"ok1","Heartbeat",{}]')
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        out["after_bad_frames"] = reply[0] == 3 and reply[1] == "ok1" and "currentTime" in reply[2]
        out["errors"] = errors
        print(json.dumps(out), flush=True)

asyncio.run(main())
"#;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("FIELDTWIN_PYTHON") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

struct Csms {
    child: Child,
    log: PathBuf,
}

impl Drop for Csms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Csms {
    fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Frames of `cp` in direction `dir`, parsed.
    fn frames(&self, cp: &str, dir: &str) -> Vec<Value> {
        self.entries()
            .into_iter()
            .filter(|e| e["cp"] == cp && e["dir"] == dir)
            .filter_map(|e| serde_json::from_str(e["msg"].as_str()?).ok())
            .collect()
    }

    /// CALLs `cp` sent, (unique id, action, payload), in arrival order.
    fn calls(&self, cp: &str) -> Vec<(String, String, Value)> {
        self.frames(cp, "in")
            .into_iter()
            .filter(|f| f[0] == 2)
            .map(|f| {
                (
                    f[1].as_str().unwrap().to_string(),
                    f[2].as_str().unwrap().to_string(),
                    f[3].clone(),
                )
            })
            .collect()
    }

    /// Makes the CSMS send a CALL to `cp`; returns the answer's payload.
    fn send(&self, cp: &str, cmd: &Value) -> Value {
        let n = self.results(cp);
        let dir = self.log.parent().unwrap();
        let tmp = dir.join("cmd.tmp");
        std::fs::write(&tmp, cmd.to_string()).unwrap();
        std::fs::rename(&tmp, dir.join(format!("cmd-{cp}.json"))).unwrap();
        wait("the CSMS's call", Duration::from_secs(20), || {
            self.results(cp) > n
        });
        let r = self
            .entries()
            .into_iter()
            .rfind(|e| e["cp"] == cp && e["dir"] == "result")
            .unwrap();
        assert!(r.get("error").is_none(), "{r}");
        r["result"].clone()
    }

    fn results(&self, cp: &str) -> usize {
        self.entries()
            .iter()
            .filter(|e| e["cp"] == cp && e["dir"] == "result")
            .count()
    }

    fn count(&self, cp: &str, action: &str) -> usize {
        self.calls(cp).iter().filter(|c| c.1 == action).count()
    }

    /// The transactions as the CSMS saw them: its answers' ids in order,
    /// and every transaction CALL with the id it carried.
    fn transactions(&self, cp: &str) -> Vec<(String, i64, Value)> {
        let results: BTreeMap<String, Value> = self
            .frames(cp, "out")
            .into_iter()
            .filter(|f| f[0] == 3)
            .map(|f| (f[1].as_str().unwrap().to_string(), f[2].clone()))
            .collect();
        self.calls(cp)
            .into_iter()
            .filter(|c| {
                ["StartTransaction", "MeterValues", "StopTransaction"].contains(&c.1.as_str())
            })
            .map(|(id, action, p)| {
                let tx = if action == "StartTransaction" {
                    results[&id]["transactionId"].as_i64().unwrap()
                } else {
                    p["transactionId"].as_i64().unwrap()
                };
                (action, tx, p)
            })
            .collect()
    }
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts `table` into the `[[device]]` block of `id`, in place of the
/// block's own tables (the default site's `[device.evce]` with its
/// supervision, cs2's `[device.charging_station]`).
fn add_table(site: &str, id: &str, table: &str) -> String {
    let at = site
        .find(&format!("\nid = \"{id}\""))
        .unwrap_or_else(|| panic!("no device {id}"));
    let end = site[at..].find("[[device]]").map_or(site.len(), |i| at + i);
    let own = ["\n[device.", "\n[[device."]
        .iter()
        .filter_map(|t| site[at..end].find(t).map(|i| at + i + 1))
        .min()
        .unwrap_or(end);
    format!("{}{table}\n\n{}", &site[..own], &site[end..])
}

fn ocpp_of(site: &RunningSite, id: &str) -> Value {
    site.get_json(&format!("/api/v1/devices/{id}"))["details"]["extra"]["ocpp"].clone()
}

fn command(site: &RunningSite, json: &str) {
    site.post_json("/api/v1/commands", json);
}

#[test]
fn ev_charging_through_the_evce_with_an_upstream_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("csms.pem");
    let key = dir.path().join("csms.key");
    let out = common::tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "openssl: {out:?}");
    let keys = r#"{"cs1":"key-cs1-0001","cs2":"key-cs2-0001","py-cp":"key-py-00001"}"#;
    let port = free_port();
    let script = dir.path().join("csms.py");
    std::fs::write(&script, CSMS).unwrap();
    let log = dir.path().join("csms.log");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(port.to_string())
        .arg(&cert)
        .arg(&key)
        .arg(&log)
        .arg(keys)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python CSMS (scripts/test installs ocpp and websockets into .venv)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening", "the CSMS did not start");
    let csms = Csms { child, log };

    let mut text = site_text(120);
    text = add_table(
        &text,
        "evce1",
        &format!(
            r#"[device.evce]
supervision_mode = "unique"
local_list = ["LOCAL-1"]

[[device.evce.supervision]]
name = "cpo"
url = "wss://127.0.0.1:{port}/ocpp"
ca = "{}"
ping_interval_s = 5
message_timeout_s = 5

[[device.evce.station]]
box_id = "py-cp"
authorization_key = "key-py-00001"

[[device.evce.station]]
box_id = "cs2"
authorization_key = "key-cs2-0001""#,
            cert.display()
        ),
    );
    // cs1: security profile 2 (TLS + Basic auth); cs2: profile 3 (TLS
    // client certificate); the EVCE uses cs2's key upstream only.
    text = add_table(
        &text,
        "cs1",
        "[device.charging_station]\nauthorization_key = \"key-cs1-0001\"",
    );
    text = add_table(
        &text,
        "cs2",
        "[device.charging_station]\nsecurity_profile = 3",
    );
    let site = RunningSite::start(&text, &[]);

    // 1. Both stations reach the CSMS through the EVCE, over TLS 1.2 with
    //    Basic auth under their own identity.
    wait(
        "boot and status of cs1 and cs2 at the CSMS",
        Duration::from_secs(30),
        || {
            ["cs1", "cs2"].iter().all(|cs| {
                csms.count(cs, "BootNotification") >= 1 && csms.count(cs, "StatusNotification") >= 2
            })
        },
    );
    for cs in ["cs1", "cs2"] {
        let opens: Vec<Value> = csms
            .entries()
            .into_iter()
            .filter(|e| e["cp"] == cs && e["dir"] == "open")
            .collect();
        assert!(!opens.is_empty());
        for o in &opens {
            assert_eq!(o["tls"], "TLSv1.2", "{o}");
            assert_eq!(o["subprotocol"], "ocpp1.6", "{o}");
        }
        let boot = csms
            .calls(cs)
            .into_iter()
            .find(|c| c.1 == "BootNotification")
            .unwrap();
        assert_eq!(boot.2["chargePointSerialNumber"], *cs);
        // The station itself talks wss with Basic auth to the EVCE.
        let st = ocpp_of(&site, cs);
        assert_eq!(st["online"], true, "{st}");
        assert!(st["url"].as_str().unwrap().starts_with("wss://"));
        assert_eq!(st["security_profile"], if cs == "cs1" { 2 } else { 3 });
    }

    // 2. A python charge point joins the EVCE as a third station and runs a
    //    whole transaction; the CSMS sees it under py-cp with its own id.
    let cp_script = dir.path().join("cp.py");
    std::fs::write(&cp_script, CHARGE_POINT).unwrap();
    let out = Command::new(python())
        .arg(&cp_script)
        .arg("ws://127.77.120.20:8887/ocpp")
        .arg("py-cp")
        .arg("key-py-00001")
        .output()
        .unwrap();
    assert!(out.status.success(), "python charge point: {out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["boot"], "Accepted");
    assert_eq!(r["authorize"], "Accepted");
    assert_eq!(r["start_status"], "Accepted");
    assert_eq!(r["errors"]["bad1"], "FormationViolation");
    assert_eq!(r["errors"]["bad2"], "TypeConstraintViolation");
    assert_eq!(r["errors"]["bad3"], "NotImplemented");
    assert_eq!(r["errors"]["bad4"], "ProtocolError");
    assert_eq!(
        r["after_bad_frames"], true,
        "the link died after bad frames"
    );
    let local_py = r["tx"].as_i64().unwrap();
    wait(
        "py-cp's transaction at the CSMS",
        Duration::from_secs(20),
        || csms.count("py-cp", "StopTransaction") == 1,
    );
    let py = csms.transactions("py-cp");
    let actions: Vec<&str> = py.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        actions,
        ["StartTransaction", "MeterValues", "StopTransaction"]
    );
    let csms_py = py[0].1;
    assert!(py.iter().all(|t| t.1 == csms_py), "{py:?}");
    assert!(csms_py >= 1001);
    assert_ne!(
        csms_py, local_py,
        "the EVCE's id must be mapped to the CSMS's"
    );
    assert_eq!(py[2].2["meterStop"], 5100);
    assert_eq!(csms.count("py-cp", "BootNotification"), 1);
    // A wrong key is refused by the EVCE.
    let bad = Command::new(python())
        .arg(&cp_script)
        .arg("ws://127.77.120.20:8887/ocpp")
        .arg("py-cp")
        .arg("wrong-key-000")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("401"));
    // An enrolled box id from another address than its enrolled one (a
    // rogue station with cs2's key) is refused with 403.
    let rogue = Command::new(python())
        .arg(&cp_script)
        .arg("ws://127.77.120.20:8887/ocpp")
        .arg("cs2")
        .arg("key-cs2-0001")
        .output()
        .unwrap();
    assert!(!rogue.status.success());
    assert!(
        String::from_utf8_lossy(&rogue.stderr).contains("403"),
        "{rogue:?}"
    );

    // 3. Both stations charge; the upstream is cut for one virtual hour.
    command(
        &site,
        r#"{"command":"ev_plug","device":"cs1","id_tag":"TAG-1","ev":{"battery_kwh":60,"soc":0.2,"max_kw":11}}"#,
    );
    command(
        &site,
        r#"{"command":"ev_plug","device":"cs2","id_tag":"TAG-2","ev":{"battery_kwh":40,"soc":0.5,"max_kw":7.4}}"#,
    );
    wait(
        "both transactions at the CSMS",
        Duration::from_secs(20),
        || csms.count("cs1", "StartTransaction") == 1 && csms.count("cs2", "StartTransaction") == 1,
    );
    command(
        &site,
        r#"{"command":"ocpp_upstream","device":"evce1","connected":false}"#,
    );
    wait("the upstream links down", Duration::from_secs(10), || {
        let e = ocpp_of(&site, "evce1");
        ["cs1", "cs2"]
            .iter()
            .all(|cs| e["stations"][cs]["upstream_online"] == false)
    });
    let before: BTreeMap<&str, usize> = ["cs1", "cs2"]
        .iter()
        .map(|cs| (*cs, csms.calls(cs).len()))
        .collect();
    command(&site, r#"{"command":"advance_clock","seconds":1800}"#);
    std::thread::sleep(Duration::from_millis(500));
    // cs1's driver leaves and comes back during the cut: a new transaction
    // authorised from the EVCE's cache.
    command(&site, r#"{"command":"ev_unplug","device":"cs1"}"#);
    command(
        &site,
        r#"{"command":"ev_plug","device":"cs1","id_tag":"TAG-1","ev":{"battery_kwh":50,"soc":0.3,"max_kw":11}}"#,
    );
    wait(
        "cs1 charging again offline",
        Duration::from_secs(10),
        || ocpp_of(&site, "cs1")["connectors"][0]["status"] == "Charging",
    );
    command(&site, r#"{"command":"advance_clock","seconds":1800}"#);
    wait(
        "the stations' messages queued at the EVCE",
        Duration::from_secs(20),
        || {
            ["cs1", "cs2"].iter().all(|cs| {
                let s = ocpp_of(&site, cs);
                s["queued"] == 0
            })
        },
    );
    let evce = ocpp_of(&site, "evce1");
    let q1 = evce["stations"]["cs1"]["queued"].as_u64().unwrap();
    let q2 = evce["stations"]["cs2"]["queued"].as_u64().unwrap();
    assert!(
        q1 >= 10 && q2 >= 6,
        "queued at the EVCE: cs1 {q1}, cs2 {q2}: {evce}"
    );
    for cs in ["cs1", "cs2"] {
        let new: Vec<String> = csms.calls(cs)[before[cs]..]
            .iter()
            .map(|c| c.1.clone())
            .collect();
        assert!(
            new.iter()
                .all(|a| !["StartTransaction", "MeterValues", "StopTransaction"]
                    .contains(&a.as_str())),
            "{cs} reached the CSMS during the cut: {new:?}"
        );
    }

    // 4. The link returns: everything arrives, in order, ids mapped.
    command(
        &site,
        r#"{"command":"ocpp_upstream","device":"evce1","connected":true}"#,
    );
    wait("the EVCE's queues drained", Duration::from_secs(30), || {
        let e = ocpp_of(&site, "evce1");
        ["cs1", "cs2"].iter().all(|cs| {
            e["stations"][cs]["queued"] == 0 && e["stations"][cs]["upstream_online"] == true
        })
    });
    let mut all_ids = BTreeSet::new();
    for (cs, starts) in [("cs1", 2), ("cs2", 1)] {
        let txs = csms.transactions(cs);
        eprintln!(
            "{cs}: the CSMS got {} transaction messages, ids {:?}",
            txs.len(),
            txs.iter().map(|t| t.1).collect::<BTreeSet<_>>()
        );
        let station = ocpp_of(&site, cs);
        let sent = &station["sent"];
        // No loss, no duplicate: the CSMS got exactly what the station sent.
        for action in ["StartTransaction", "MeterValues", "StopTransaction"] {
            let got = txs.iter().filter(|t| t.0 == action).count() as u64;
            assert_eq!(
                Some(got),
                sent[action].as_u64().or(Some(0)),
                "{cs} {action}: CSMS got {got}, station sent {}",
                sent[action]
            );
        }
        assert_eq!(
            txs.iter().filter(|t| t.0 == "StartTransaction").count(),
            starts
        );
        let meters = txs.iter().filter(|t| t.0 == "MeterValues").count();
        assert!(meters >= 10, "{cs}: only {meters} MeterValues for an hour");
        // In order: each message carries the CSMS id of the transaction
        // started last; time stamps never go back; energy never decreases.
        let mut current = None;
        let mut last_time = String::new();
        let mut last_energy = -1i64;
        let mut seen = BTreeSet::new();
        for (action, tx, p) in &txs {
            match action.as_str() {
                "StartTransaction" => {
                    assert!(all_ids.insert(*tx), "CSMS id {tx} used twice");
                    current = Some(*tx);
                    last_energy = p["meterStart"].as_i64().unwrap();
                }
                _ => assert_eq!(
                    Some(*tx),
                    current,
                    "{cs}: {action} of {tx} out of order: {txs:?}"
                ),
            }
            let time = match action.as_str() {
                "MeterValues" => p["meterValue"][0]["timestamp"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                _ => p["timestamp"].as_str().unwrap().to_string(),
            };
            assert!(time >= last_time, "{cs}: {time} after {last_time}");
            assert!(
                seen.insert((action.clone(), time.clone())),
                "{cs}: duplicate {action} at {time}"
            );
            last_time = time;
            let energy = match action.as_str() {
                "MeterValues" => p["meterValue"][0]["sampledValue"][0]["value"]
                    .as_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
                "StopTransaction" => p["meterStop"].as_i64().unwrap(),
                _ => last_energy,
            };
            assert!(energy >= last_energy, "{cs}: energy went back");
            last_energy = energy;
            if action == "StopTransaction" {
                current = None;
            }
        }
        // The hour was charged: cs2 (7.4 kW) about 7.4 kWh.
        if cs == "cs2" {
            let first = txs[0].2["meterStart"].as_i64().unwrap();
            assert!(
                last_energy - first >= 7_000,
                "cs2 charged only {} Wh in an hour",
                last_energy - first
            );
        }
        // The Stop of cs1's first transaction names its CSMS id.
        if cs == "cs1" {
            let stop = txs.iter().find(|t| t.0 == "StopTransaction").unwrap();
            assert_eq!(stop.2["reason"], "EVDisconnected");
            assert_eq!(stop.1, txs[0].1);
        }
    }
    let evce = ocpp_of(&site, "evce1");
    for cs in ["cs1", "cs2"] {
        assert_eq!(evce["stations"][cs]["discarded"], 0, "{evce}");
    }

    // 5. The CSMS acts with its own ids: a TxProfile caps cs2's EV at
    //    3 kW, then a RemoteStop ends its transaction; the EVCE maps both
    //    to its ids and the Stop comes back under the CSMS's id.
    let cs2_tx = csms.transactions("cs2")[0].1;
    let profile = serde_json::json!({"action": "SetChargingProfile", "payload": {
        "connector_id": 1,
        "cs_charging_profiles": {"chargingProfileId": 7, "transactionId": cs2_tx, "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 3000}]}}}});
    assert_eq!(csms.send("cs2", &profile)["status"], "Accepted");
    wait("cs2 capped at 3 kW", Duration::from_secs(10), || {
        ocpp_of(&site, "cs2")["power_w"] == 3000.0
    });
    let stop = serde_json::json!({"action": "RemoteStopTransaction",
        "payload": {"transaction_id": cs2_tx}});
    assert_eq!(csms.send("cs2", &stop)["status"], "Accepted");
    wait(
        "cs2's remote stop at the CSMS",
        Duration::from_secs(20),
        || csms.count("cs2", "StopTransaction") == 1,
    );
    let txs = csms.transactions("cs2");
    let last = txs.last().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("StopTransaction", cs2_tx));
    assert_eq!(last.2["reason"], "Remote");

    // 6. Firmware update from the CSMS, relayed by the EVCE: cs1 fetches
    //    the file over HTTP (python's http.server) from its own address; a
    //    random file is refused (InstallationFailed), a signed image of the
    //    station's family installs and cs1 boots again under its version.
    let fw = dir.path().join("fw");
    std::fs::create_dir(&fw).unwrap();
    std::fs::write(fw.join("payload.bin"), b"station firmware 1.2").unwrap();
    std::fs::write(fw.join("random.img"), [7u8; 300]).unwrap();
    common::sign_firmware(
        &fw.join("payload.bin"),
        "001.002.000",
        Some("EVlink Pro AC"),
        &fw.join("good.img"),
    );
    let http_port = free_port();
    let mut http = Command::new(python())
        .args([
            "-m",
            "http.server",
            &http_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(&fw)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python http.server");
    let statuses = |csms: &Csms| -> Vec<String> {
        csms.calls("cs1")
            .into_iter()
            .filter(|c| c.1 == "FirmwareStatusNotification")
            .map(|c| c.2["status"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let update = |file: &str| {
        serde_json::json!({"action": "UpdateFirmware", "payload": {
            "location": format!("http://127.0.0.1:{http_port}/{file}"),
            "retrieve_date": "2000-01-01T00:00:00Z", "retries": 3, "retry_interval": 1}})
    };
    // The server may take a moment to listen: the station retries.
    assert_eq!(
        csms.send("cs1", &update("random.img")),
        serde_json::json!({})
    );
    wait("the random file refused", Duration::from_secs(30), || {
        statuses(&csms).last().map(String::as_str) == Some("InstallationFailed")
    });
    let boots = csms.count("cs1", "BootNotification");
    assert_eq!(csms.send("cs1", &update("good.img")), serde_json::json!({}));
    wait(
        "cs1 boots again under 001.002.000",
        Duration::from_secs(30),
        || {
            csms.calls("cs1")
                .iter()
                .filter(|c| c.1 == "BootNotification")
                .nth(boots)
                .is_some_and(|c| c.2["firmwareVersion"] == "001.002.000")
        },
    );
    let _ = http.kill();
    let _ = http.wait();
    let seen = statuses(&csms);
    let tail: Vec<&str> = seen[seen.len() - 4..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["Downloading", "Downloaded", "Installing", "Installed"],
        "{seen:?}"
    );
    assert!(seen.contains(&"InstallationFailed".to_string()), "{seen:?}");
    assert_eq!(ocpp_of(&site, "cs1")["firmware"], "001.002.000");
    site.stop();
}

/// Register 3060 (total active power, Float32 kW) of the meter at `addr`,
/// read over Modbus TCP.
fn meter_kw(addr: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0, 7, 0, 0, 0, 6, 1, 3, 0x0b, 0xf3, 0, 2])
        .unwrap();
    let mut r = [0u8; 13];
    s.read_exact(&mut r).unwrap();
    assert_eq!((r[7], r[8]), (3, 4), "Modbus answer {r:?}");
    f32::from_be_bytes([r[9], r[10], r[11], r[12]]) as f64
}

fn stations_kw(site: &RunningSite) -> f64 {
    ["cs1", "cs2"]
        .iter()
        .map(|cs| ocpp_of(site, cs)["power_w"].as_f64().unwrap())
        .sum::<f64>()
        / 1000.0
}

#[test]
fn load_management_keeps_the_site_meter_under_the_limit() {
    let text = add_table(
        &site_text(122),
        "evce1",
        "[device.evce]\nlocal_list = [\"TAG-1\", \"TAG-2\"]\nload_period_s = 1",
    );
    let site = RunningSite::start(&text, &[]);
    let meter = "127.77.122.23:502";
    wait("both stations online", Duration::from_secs(30), || {
        ["cs1", "cs2"]
            .iter()
            .all(|cs| ocpp_of(&site, cs)["online"] == true)
    });
    let base = meter_kw(meter);
    command(
        &site,
        r#"{"command":"ev_plug","device":"cs1","id_tag":"TAG-1","ev":{"max_kw":11}}"#,
    );
    command(
        &site,
        r#"{"command":"ev_plug","device":"cs2","id_tag":"TAG-2","ev":{"max_kw":7.4}}"#,
    );
    // Unlimited, the meter shows its base load plus both EVs (18.4 kW).
    wait(
        "both EVs charging at full power",
        Duration::from_secs(20),
        || (stations_kw(&site) - 18.4).abs() < 0.05,
    );
    let full = meter_kw(meter);
    assert!(
        (full - base - 18.4).abs() < 1.0,
        "base {base} kW, with EVs {full} kW"
    );
    // A limit 10 kW above the base: below what both EVs want.
    let limit = (base + 10.0).ceil();
    command(
        &site,
        &format!(r#"{{"command":"site_limit","device":"evce1","kw":{limit}}}"#),
    );
    let mut under = 0;
    let start = Instant::now();
    while under < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the site meter did not settle under {limit} kW: {} kW",
            meter_kw(meter)
        );
        std::thread::sleep(Duration::from_millis(700));
        let kw = meter_kw(meter);
        under = if kw <= limit { under + 1 } else { 0 };
    }
    let ev = stations_kw(&site);
    let kw = meter_kw(meter);
    eprintln!("site limit {limit} kW: meter {kw:.2} kW (base {base:.2}), stations {ev:.2} kW");
    assert!(
        kw <= limit && kw >= limit - 1.5,
        "meter {kw} kW for a limit of {limit}"
    );
    assert!(ev < 18.0 && ev > 5.0, "the EVs draw {ev} kW");
    for cs in ["cs1", "cs2"] {
        assert_eq!(ocpp_of(&site, cs)["connectors"][0]["status"], "Charging");
    }
    site.stop();
}
