//! Control plane: the one [`Command`] enum that the CLI, the TUI, the REST API
//! and scenarios send, the one [`Event`] enum they all watch, and the REST API
//! (documented in docs/control-api.md).
//!
//! Contract:
//! - [`execute`] is the only way a command reaches the runtime.
//! - REST: `GET /api/v1/devices`, `GET /api/v1/devices/{id}`,
//!   `POST /api/v1/devices/{id}/power` `{"action":"on"|"off"|"cycle"}`,
//!   `POST /api/v1/devices/{id}/factory-reset`, `GET|POST /api/v1/clock`,
//!   `POST /api/v1/commands` (any [`Command`] as JSON), `GET /api/v1/events`
//!   (server-sent events). Every error is a 4xx/5xx with a JSON body
//!   `{"error": "..."}` that says what was wrong.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::clock::{ClockError, ClockStatus};
use crate::device::{DeviceStatus, Power, Runtime, RuntimeError};

/// What a power command does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    On,
    Off,
    Cycle,
}

/// Everything that can be asked of a running site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    Power {
        device: String,
        action: PowerAction,
    },
    FactoryReset {
        device: String,
    },
    /// The physical Restart button: held at least [`RESTART_BUTTON_RESET_S`]
    /// seconds it erases the device (factory reset), shorter it reboots it
    /// ([NF] durations, docs/panel-server.md).
    RestartButton {
        device: String,
        #[serde(default)]
        hold_s: f64,
    },
    AdvanceClock {
        seconds: f64,
    },
    SetSpeed {
        speed: f64,
    },
    Pause {
        paused: bool,
    },
}

/// Seconds the Restart button must be held for a factory reset.
pub const RESTART_BUTTON_RESET_S: f64 = 10.0;

/// Everything a running site reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Power {
        device: String,
        power: Power,
    },
    BootFailed {
        device: String,
        reason: String,
    },
    FactoryReset {
        device: String,
    },
    Clock(ClockStatus),
    /// Something a device model reports (audit entries, alarms, ...).
    Device {
        device: String,
        kind: String,
        message: String,
    },
}

/// Broadcast bus of [`Event`]s. Slow subscribers miss events rather than
/// slowing the site down.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
        }
    }

    pub fn send(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// The answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Reply {
    Device(Box<DeviceStatus>),
    Clock(ClockStatus),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Clock(#[from] ClockError),
    #[error("{0}")]
    BadRequest(String),
}

/// Carries out one command.
pub async fn execute(rt: &Runtime, cmd: Command) -> Result<Reply, CommandError> {
    let clock_reply = |rt: &Runtime| {
        let st = rt.clock().status();
        rt.events().send(Event::Clock(st.clone()));
        Ok(Reply::Clock(st))
    };
    match cmd {
        Command::Power { device, action } => {
            match action {
                PowerAction::On => rt.power_on(&device).await?,
                PowerAction::Off => rt.power_off(&device).await?,
                PowerAction::Cycle => rt.power_cycle(&device).await?,
            };
            Ok(Reply::Device(Box::new(rt.status(&device)?)))
        }
        Command::FactoryReset { device } => {
            rt.factory_reset(&device).await?;
            Ok(Reply::Device(Box::new(rt.status(&device)?)))
        }
        Command::RestartButton { device, hold_s } => {
            if hold_s >= RESTART_BUTTON_RESET_S {
                rt.factory_reset(&device).await?;
            } else {
                rt.power_cycle(&device).await?;
            }
            Ok(Reply::Device(Box::new(rt.status(&device)?)))
        }
        Command::AdvanceClock { seconds } => {
            rt.clock().advance_secs(seconds)?;
            clock_reply(rt)
        }
        Command::SetSpeed { speed } => {
            rt.clock().set_speed(speed)?;
            clock_reply(rt)
        }
        Command::Pause { paused } => {
            rt.clock().set_paused(paused);
            clock_reply(rt)
        }
    }
}

/// An error as the REST API returns it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match &e {
            CommandError::Runtime(RuntimeError::UnknownDevice(_)) => StatusCode::NOT_FOUND,
            CommandError::Runtime(RuntimeError::Storage(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            CommandError::Clock(_) | CommandError::BadRequest(_) => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self {
            status: e.status(),
            message: e.body_text(),
        }
    }
}

/// JSON body of `POST /api/v1/devices/{id}/power`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerBody {
    action: PowerAction,
}

/// JSON body of `POST /api/v1/clock`: exactly one field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    advance_s: Option<f64>,
    speed: Option<f64>,
    paused: Option<bool>,
}

type Shared = Arc<Runtime>;

/// The REST router of the control API.
pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/power", post(power))
        .route("/api/v1/devices/{id}/factory-reset", post(factory_reset))
        .route("/api/v1/clock", get(get_clock).post(set_clock))
        .route("/api/v1/commands", post(command))
        .route("/api/v1/events", get(events))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such endpoint; see docs/control-api.md".into(),
            }
        })
        .with_state(rt)
}

async fn list_devices(State(rt): State<Shared>) -> Json<Vec<DeviceStatus>> {
    Json(rt.statuses())
}

async fn get_device(
    State(rt): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<DeviceStatus>, ApiError> {
    Ok(Json(rt.status(&id).map_err(CommandError::from)?))
}

async fn power(
    State(rt): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<PowerBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let cmd = Command::Power {
        device: id,
        action: body.action,
    };
    Ok(Json(execute(&rt, cmd).await?))
}

async fn factory_reset(
    State(rt): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Reply>, ApiError> {
    Ok(Json(
        execute(&rt, Command::FactoryReset { device: id }).await?,
    ))
}

async fn get_clock(State(rt): State<Shared>) -> Json<ClockStatus> {
    Json(rt.clock().status())
}

async fn set_clock(
    State(rt): State<Shared>,
    body: Result<Json<ClockBody>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(body) = body?;
    let cmd = match (body.advance_s, body.speed, body.paused) {
        (Some(seconds), None, None) => Command::AdvanceClock { seconds },
        (None, Some(speed), None) => Command::SetSpeed { speed },
        (None, None, Some(paused)) => Command::Pause { paused },
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of {\"advance_s\": seconds}, {\"speed\": factor}, {\"paused\": true|false}",
            ));
        }
    };
    Ok(Json(execute(&rt, cmd).await?))
}

async fn command(
    State(rt): State<Shared>,
    body: Result<Json<Command>, JsonRejection>,
) -> Result<Json<Reply>, ApiError> {
    let Json(cmd) = body?;
    Ok(Json(execute(&rt, cmd).await?))
}

async fn events(
    State(rt): State<Shared>,
) -> Sse<impl Stream<Item = Result<axum::response::sse::Event, Infallible>>> {
    let stream = BroadcastStream::new(rt.events().subscribe()).filter_map(|e| {
        let e = e.ok()?;
        let name = serde_json::to_value(&e)
            .ok()
            .and_then(|v| v.get("event").and_then(|n| n.as_str().map(String::from)))
            .unwrap_or_else(|| "event".into());
        axum::response::sse::Event::default()
            .event(name)
            .json_data(&e)
            .ok()
            .map(Ok)
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
