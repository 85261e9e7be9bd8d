//! Client side of the control API: the CLI subcommands that talk to a
//! running site (`devices`, `power`, `clock`, `command`, `attack`) send the same `Command`s as
//! every other front end, through `POST /api/v1/commands`.

use std::net::SocketAddr;

use anyhow::Context;
use fieldtwin_emulator::control::{Command, PowerAction};
use fieldtwin_emulator::device::DeviceStatus;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn unreachable(api: SocketAddr) -> String {
    format!("no fieldtwin answers at {api}; is `fieldtwin run` running? (use --api)")
}

/// Sends one command; returns the JSON answer or the API's error message.
pub fn send(api: SocketAddr, cmd: &Command) -> anyhow::Result<serde_json::Value> {
    runtime()?.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("http://{api}/api/v1/commands"))
            .json(cmd)
            .send()
            .await
            .with_context(|| unreachable(api))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("unexpected answer")?;
        if status.is_success() {
            Ok(body)
        } else {
            anyhow::bail!("{}", body["error"].as_str().unwrap_or("request refused"))
        }
    })
}

/// Reads `json`, or stdin when it is `-`.
fn json_arg(json: &str) -> anyhow::Result<String> {
    if json == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        Ok(s)
    } else {
        Ok(json.to_string())
    }
}

/// `fieldtwin command JSON`: any [`Command`], answer printed as JSON.
pub fn command(api: SocketAddr, json: &str) -> anyhow::Result<()> {
    let cmd: Command = serde_json::from_str(&json_arg(json)?)
        .context("not a control command; see docs/control-api.md for the JSON of each")?;
    println!("{}", serde_json::to_string_pretty(&send(api, &cmd)?)?);
    Ok(())
}

/// `fieldtwin attack FROM JSON`: one attack from Workstation `from`.
pub fn attack(api: SocketAddr, from: String, json: &str) -> anyhow::Result<()> {
    let attack = serde_json::from_str(&json_arg(json)?)
        .context("not an attack; see docs/control-api.md (\"kind\": \"https_login\", ...)")?;
    let reply = send(api, &Command::Attack { from, attack })?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

/// `fieldtwin devices`: asks a running site for its devices.
pub fn devices(api: SocketAddr) -> anyhow::Result<()> {
    let list: Vec<DeviceStatus> = runtime()?.block_on(async {
        reqwest::get(format!("http://{api}/api/v1/devices"))
            .await
            .with_context(|| unreachable(api))?
            .error_for_status()?
            .json()
            .await
            .context("the control API sent an unexpected answer")
    })?;
    print!("{}", crate::report::table(&list));
    Ok(())
}

/// `fieldtwin power ID on|off|cycle`.
pub fn power(api: SocketAddr, device: String, action: PowerAction) -> anyhow::Result<()> {
    let reply = send(api, &Command::Power { device, action })?;
    let status: DeviceStatus = serde_json::from_value(reply)?;
    print!("{}", crate::report::table(&[status]));
    Ok(())
}

/// `fieldtwin clock ...`: prints the clock after the command.
pub fn clock(api: SocketAddr, cmd: Option<Command>) -> anyhow::Result<()> {
    let status = match cmd {
        Some(cmd) => send(api, &cmd)?,
        None => runtime()?.block_on(async {
            reqwest::get(format!("http://{api}/api/v1/clock"))
                .await
                .with_context(|| unreachable(api))?
                .json::<serde_json::Value>()
                .await
                .context("unexpected answer")
        })?,
    };
    println!(
        "site time {}  elapsed {:.3} s  speed {}x{}",
        status["site_time"].as_str().unwrap_or("?"),
        status["elapsed_s"].as_f64().unwrap_or(0.0),
        status["speed"],
        if status["paused"] == true {
            "  (paused)"
        } else {
            ""
        }
    );
    Ok(())
}
