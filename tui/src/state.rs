//! The dashboard's two pieces of state: the [`Snapshot`] of the site (what
//! the control API last said; filled by the client, read by the view) and
//! the [`App`] (what the user is looking at: tab, selection, filter, sort,
//! command line). Keys change only the `App` and return [`Action`]s; every
//! action on the site is a [`Command`] of the control API.
//!
//! Contract: [`App::visible`] is the one definition of which devices show,
//! in which order (filter then sort); the view and the keys both use it.
//! A filter is a case-insensitive substring of any column, or
//! `field=value` with field one of name, model, power, health, segment,
//! addr, service.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use fieldtwin_emulator::clock::ClockStatus;
use fieldtwin_emulator::control::{Command, Event, PowerAction};
use fieldtwin_emulator::device::DeviceStatus;
use fieldtwin_emulator::net::fault::LinkFault;
use fieldtwin_emulator::scenario_api::Scenarios;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::command::{self, Line};

/// How many events the dashboard keeps.
pub const EVENTS_KEPT: usize = 2000;
/// Points of Modbus traffic history per device (one per poll).
pub const HISTORY: usize = 60;

/// Connection to the control API.
#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    Connecting,
    Connected,
    /// Lost; the client retries. Holds the last error.
    Lost(String),
}

/// One event as received, stamped with the site time it arrived at.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    pub at: Option<DateTime<Utc>>,
    pub event: Event,
}

impl EventLine {
    /// The device an event is about, if any.
    pub fn device(&self) -> Option<&str> {
        match &self.event {
            Event::Power { device, .. }
            | Event::BootFailed { device, .. }
            | Event::FactoryReset { device }
            | Event::Device { device, .. } => Some(device),
            Event::Clock(_) | Event::ScenarioStep { .. } | Event::ScenarioEnded { .. } => None,
        }
    }

    /// (kind, text) as the Events tab shows them.
    pub fn describe(&self) -> (String, String) {
        match &self.event {
            Event::Power { device, power } => (
                "power".into(),
                format!("{device} power {}", power_name(*power)),
            ),
            Event::BootFailed { device, reason } => (
                "boot_failed".into(),
                format!("{device} boot failed: {reason}"),
            ),
            Event::FactoryReset { device } => {
                ("factory_reset".into(), format!("{device} factory reset"))
            }
            Event::Clock(c) => (
                "clock".into(),
                format!(
                    "site time {} speed {}x{}",
                    c.site_time.format("%Y-%m-%d %H:%M:%S"),
                    c.speed,
                    if c.paused { " paused" } else { "" }
                ),
            ),
            Event::Device {
                device,
                kind,
                message,
            } => (kind.clone(), format!("{device} {message}")),
            Event::ScenarioStep {
                run,
                scenario,
                step,
            } => (
                "scenario".into(),
                format!(
                    "{scenario} (run {run}) step {} {}: {} {}",
                    step.n,
                    if step.passed { "ok" } else { "FAIL" },
                    step.kind,
                    step.message
                ),
            ),
            Event::ScenarioEnded {
                run,
                scenario,
                state,
                error,
            } => (
                "scenario".into(),
                format!(
                    "{scenario} (run {run}) ended: {}{}",
                    serde_json::to_value(state)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    error
                        .as_ref()
                        .map(|e| format!(" — {e}"))
                        .unwrap_or_default()
                ),
            ),
        }
    }
}

pub fn power_name(p: fieldtwin_emulator::device::Power) -> &'static str {
    use fieldtwin_emulator::device::Power;
    match p {
        Power::Off => "off",
        Power::Booting => "booting",
        Power::On => "on",
        Power::Failed => "failed",
    }
}

/// What the control API last said about the site.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Control API address shown in the title.
    pub api: String,
    pub conn: Conn,
    /// Reconnections so far (shown after a restart of the emulator).
    pub reconnects: u32,
    pub devices: Vec<DeviceStatus>,
    /// Modbus requests per second of each device (from its counter).
    pub rates: HashMap<String, f64>,
    /// Recent Modbus requests/s of each device, oldest first.
    pub history: HashMap<String, VecDeque<u64>>,
    /// Detailed status of the device open in the detail view.
    pub detail: Option<DeviceStatus>,
    pub clock: Option<ClockStatus>,
    pub links: BTreeMap<String, LinkFault>,
    /// Newest last.
    pub events: VecDeque<EventLine>,
    /// The site's scenario library and its current or last run (`None`
    /// until the site answered `GET /api/v1/scenarios`).
    pub scenarios: Option<Scenarios>,
    /// Answer of the last command: (text, is_error).
    pub reply: Option<(String, bool)>,
    /// Bumped at every change (the view caches nothing, this is for callers).
    pub generation: u64,
}

impl Snapshot {
    pub fn new(api: &str) -> Self {
        Self {
            api: api.to_string(),
            conn: Conn::Connecting,
            reconnects: 0,
            devices: Vec::new(),
            rates: HashMap::new(),
            history: HashMap::new(),
            detail: None,
            clock: None,
            links: BTreeMap::new(),
            events: VecDeque::new(),
            scenarios: None,
            reply: None,
            generation: 0,
        }
    }

    /// Adds an event (and applies power and clock events at once, so the
    /// screen does not wait for the next poll).
    pub fn push_event(&mut self, at: Option<DateTime<Utc>>, event: Event) {
        match &event {
            Event::Power { device, power } => {
                if let Some(d) = self.devices.iter_mut().find(|d| &d.id == device) {
                    d.power = *power;
                    d.health = (*power).into();
                }
                if let Some(d) = self.detail.as_mut().filter(|d| &d.id == device) {
                    d.power = *power;
                    d.health = (*power).into();
                }
            }
            Event::Clock(c) => self.clock = Some(c.clone()),
            _ => {}
        }
        self.events.push_back(EventLine { at, event });
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
        self.generation += 1;
    }

    /// Replaces the device list; `dt_s` seconds after the previous one
    /// (for the request rates).
    pub fn set_devices(&mut self, devices: Vec<DeviceStatus>, dt_s: Option<f64>) {
        if let Some(dt) = dt_s.filter(|&dt| dt > 0.0) {
            let before: HashMap<&str, u64> = self
                .devices
                .iter()
                .filter_map(|d| Some((d.id.as_str(), *d.counters.get(REQ)?)))
                .collect();
            for d in &devices {
                let Some(&now) = d.counters.get(REQ) else {
                    continue;
                };
                let prev = before.get(d.id.as_str()).copied().unwrap_or(now);
                let rate = now.saturating_sub(prev) as f64 / dt;
                self.rates.insert(d.id.clone(), rate);
                let h = self.history.entry(d.id.clone()).or_default();
                h.push_back(rate.round() as u64);
                while h.len() > HISTORY {
                    h.pop_front();
                }
            }
        }
        self.devices = devices;
        // Kept in natural name order, so the default sort costs nothing.
        self.devices.sort_by(|a, b| natural_cmp(&a.id, &b.id));
        self.generation += 1;
    }
}

/// The counter of Modbus requests (models/src/proto/modbus/server.rs).
pub const REQ: &str = "modbus_requests";

/// Tabs, in order (keys 1-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Devices,
    Events,
    Clock,
    Links,
    Scenarios,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Devices,
        Tab::Events,
        Tab::Clock,
        Tab::Links,
        Tab::Scenarios,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Devices => "Devices",
            Tab::Events => "Events",
            Tab::Clock => "Clock",
            Tab::Links => "Links/faults",
            Tab::Scenarios => "Scenarios",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn by_name(name: &str) -> Option<Tab> {
        Tab::ALL
            .into_iter()
            .find(|t| t.title().to_lowercase().starts_with(name))
    }
}

/// Columns of the device table (sortable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Name,
    Model,
    Power,
    Addresses,
    Segment,
    Uptime,
    Health,
    Rtc,
    Drift,
    Services,
    Requests,
}

impl Column {
    pub const ALL: [Column; 11] = [
        Column::Name,
        Column::Model,
        Column::Power,
        Column::Addresses,
        Column::Segment,
        Column::Uptime,
        Column::Health,
        Column::Rtc,
        Column::Drift,
        Column::Services,
        Column::Requests,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Name => "NAME",
            Column::Model => "MODEL",
            Column::Power => "POWER",
            Column::Addresses => "ADDRESSES",
            Column::Segment => "SEGMENT",
            Column::Uptime => "UPTIME",
            Column::Health => "HEALTH",
            Column::Rtc => "RTC",
            Column::Drift => "DRIFT",
            Column::Services => "SERVICES",
            Column::Requests => "MB REQ/S",
        }
    }
}

/// Input mode.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// Typing a `/` filter (of the Devices or the Events tab).
    Filter,
    /// Typing a `:` command.
    Command,
    /// Waiting for y/n before sending a command.
    Confirm(Command, String),
    Help,
}

/// What a key asks of the program.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send(Command),
    /// Open (or close, `None`) the detail view of a device: the client
    /// then fetches its detailed status.
    Detail(Option<String>),
    /// Run a scenario of the site's library, by file stem.
    RunScenario(String),
    Quit,
}

/// What the user is looking at.
#[derive(Debug, Clone)]
pub struct App {
    pub tab: Tab,
    pub mode: Mode,
    /// Device whose detail view is open (Devices tab).
    pub detail: Option<String>,
    /// Index into [`App::visible`].
    pub selected: usize,
    /// First visible row.
    pub offset: usize,
    /// Table rows that fit on screen (set by the run loop from the terminal
    /// size, used for paging).
    pub page: usize,
    pub filter: String,
    pub sort: Column,
    pub descending: bool,
    pub input: String,
    pub events_filter: String,
    /// While paused, the Events tab shows only the first `n` events.
    pub events_paused: Option<usize>,
    /// Selected row of the Scenarios tab's library.
    pub scenario_selected: usize,
    /// Message of the dashboard itself (errors of the command line).
    pub message: Option<(String, bool)>,
}

impl Default for App {
    fn default() -> Self {
        Self {
            tab: Tab::Devices,
            mode: Mode::Normal,
            detail: None,
            selected: 0,
            offset: 0,
            page: 20,
            filter: String::new(),
            sort: Column::Name,
            descending: false,
            input: String::new(),
            events_filter: String::new(),
            events_paused: None,
            scenario_selected: 0,
            message: None,
        }
    }
}

fn field_matches(d: &DeviceStatus, field: &str, value: &str) -> Option<bool> {
    let has = |s: &str| s.to_lowercase().contains(value);
    Some(match field {
        "name" | "id" => has(&d.id),
        "model" => has(&d.model),
        "power" => power_name(d.power) == value,
        "health" => has(&health_name(d)),
        "segment" | "seg" => d.segments.values().any(|s| has(s)),
        "addr" | "address" | "ip" => d.addresses.values().any(|s| has(s)),
        "service" | "svc" => d.services.iter().any(|s| has(&s.name)),
        _ => return None,
    })
}

pub fn health_name(d: &DeviceStatus) -> String {
    serde_json::to_value(d.health)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

/// Whether device `d` passes filter `f` (already lower-case).
pub fn device_matches(d: &DeviceStatus, f: &str) -> bool {
    if f.is_empty() {
        return true;
    }
    if let Some((field, value)) = f.split_once('=')
        && let Some(m) = field_matches(d, field.trim(), value.trim())
    {
        return m;
    }
    let has = |s: &str| s.to_lowercase().contains(f);
    has(&d.id)
        || has(&d.model)
        || has(power_name(d.power))
        || d.addresses.values().any(|a| has(a))
        || d.segments.values().any(|s| has(s))
        || d.services.iter().any(|s| has(&s.name))
}

impl App {
    /// Indices into `snap.devices` of the rows shown, filtered and sorted.
    pub fn visible(&self, snap: &Snapshot) -> Vec<usize> {
        let f = self.filter.to_lowercase();
        let mut idx: Vec<usize> = if f.is_empty() {
            (0..snap.devices.len()).collect()
        } else {
            (0..snap.devices.len())
                .filter(|&i| device_matches(&snap.devices[i], &f))
                .collect()
        };
        let devs = &snap.devices;
        let num = |d: &DeviceStatus| -> f64 {
            match self.sort {
                Column::Uptime => d.uptime_s.unwrap_or(-1.0),
                Column::Drift => d.rtc_offset_s.unwrap_or(0.0),
                Column::Requests => snap.rates.get(&d.id).copied().unwrap_or(0.0),
                Column::Rtc => d.rtc.map_or(0.0, |t| t.timestamp_micros() as f64),
                _ => 0.0,
            }
        };
        match self.sort {
            Column::Name => {} // the snapshot keeps natural name order
            Column::Uptime | Column::Drift | Column::Requests | Column::Rtc => {
                idx.sort_by(|&a, &b| num(&devs[a]).total_cmp(&num(&devs[b])));
            }
            c => {
                let key = |d: &DeviceStatus| -> String {
                    match c {
                        Column::Model => d.model.clone(),
                        Column::Power => power_name(d.power).to_string(),
                        Column::Health => health_name(d),
                        Column::Addresses => {
                            d.addresses.values().next().cloned().unwrap_or_default()
                        }
                        Column::Segment => d.segments.values().next().cloned().unwrap_or_default(),
                        Column::Services => d.services.len().to_string(),
                        _ => String::new(),
                    }
                };
                idx.sort_by_cached_key(|&i| key(&devs[i]));
            }
        }
        if self.descending {
            idx.reverse();
        }
        idx
    }

    /// The selected device's id.
    pub fn selected_id(&self, snap: &Snapshot) -> Option<String> {
        let v = self.visible(snap);
        v.get(self.selected.min(v.len().saturating_sub(1)))
            .map(|&i| snap.devices[i].id.clone())
    }

    fn move_to(&mut self, sel: usize, len: usize) {
        self.selected = sel.min(len.saturating_sub(1));
        let page = self.page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
    }

    /// Handles one key; returns what the program must do.
    pub fn key(&mut self, key: KeyEvent, snap: &Snapshot) -> Vec<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return vec![Action::Quit];
        }
        match self.mode.clone() {
            Mode::Help => {
                self.mode = Mode::Normal;
                vec![]
            }
            Mode::Confirm(cmd, _) => {
                self.mode = Mode::Normal;
                if key.code == KeyCode::Char('y') {
                    vec![Action::Send(cmd)]
                } else {
                    self.message = Some(("cancelled".into(), false));
                    vec![]
                }
            }
            Mode::Filter => {
                let target = if self.tab == Tab::Events {
                    &mut self.events_filter
                } else {
                    &mut self.filter
                };
                match key.code {
                    KeyCode::Esc => {
                        target.clear();
                        self.mode = Mode::Normal;
                    }
                    KeyCode::Enter => self.mode = Mode::Normal,
                    KeyCode::Backspace => {
                        target.pop();
                    }
                    KeyCode::Char(c) => target.push(c),
                    _ => {}
                }
                self.selected = 0;
                self.offset = 0;
                vec![]
            }
            Mode::Command => match key.code {
                KeyCode::Esc => {
                    self.input.clear();
                    self.mode = Mode::Normal;
                    vec![]
                }
                KeyCode::Tab => {
                    let ids: Vec<&str> = snap.devices.iter().map(|d| d.id.as_str()).collect();
                    let lib: Vec<&str> = snap
                        .scenarios
                        .iter()
                        .flat_map(|s| s.library.iter().map(|e| e.file.as_str()))
                        .collect();
                    self.input = command::complete(&self.input, &ids, &lib);
                    vec![]
                }
                KeyCode::Backspace => {
                    self.input.pop();
                    vec![]
                }
                KeyCode::Char(c) => {
                    self.input.push(c);
                    vec![]
                }
                KeyCode::Enter => {
                    let line = std::mem::take(&mut self.input);
                    self.mode = Mode::Normal;
                    self.run_line(&line)
                }
                _ => vec![],
            },
            Mode::Normal => self.normal_key(key, snap),
        }
    }

    fn run_line(&mut self, line: &str) -> Vec<Action> {
        match command::parse(line) {
            Ok(Line::Send(cmd)) => {
                self.message = None;
                vec![Action::Send(cmd)]
            }
            Ok(Line::Confirm(cmd, q)) => {
                self.mode = Mode::Confirm(cmd, q);
                vec![]
            }
            Ok(Line::Tab(name)) => {
                if let Some(t) = Tab::by_name(&name) {
                    self.tab = t;
                }
                vec![]
            }
            Ok(Line::RunScenario(name)) => {
                self.tab = Tab::Scenarios;
                vec![Action::RunScenario(name)]
            }
            Ok(Line::Quit) => vec![Action::Quit],
            Err(e) => {
                self.message = Some((e, true));
                vec![]
            }
        }
    }

    fn normal_key(&mut self, key: KeyEvent, snap: &Snapshot) -> Vec<Action> {
        let len = self.visible(snap).len();
        match key.code {
            KeyCode::Char('q') => return vec![Action::Quit],
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Char(':') => {
                self.mode = Mode::Command;
                self.input.clear();
            }
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Esc => {
                self.message = None;
                if self.detail.take().is_some() {
                    return vec![Action::Detail(None)];
                }
                if self.tab == Tab::Events {
                    self.events_filter.clear();
                } else {
                    self.filter.clear();
                }
            }
            KeyCode::Tab => self.tab = Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()],
            KeyCode::BackTab => {
                self.tab = Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
            }
            KeyCode::Char(c @ '1'..='5') => self.tab = Tab::ALL[c as usize - '1' as usize],
            _ => {
                return match self.tab {
                    Tab::Devices => self.devices_key(key, snap, len),
                    Tab::Events => self.events_key(key, snap),
                    Tab::Clock => clock_key(key, snap),
                    Tab::Scenarios => self.scenarios_key(key, snap),
                    _ => vec![],
                };
            }
        }
        vec![]
    }

    fn devices_key(&mut self, key: KeyEvent, snap: &Snapshot, len: usize) -> Vec<Action> {
        let page = self.page.max(1);
        match key.code {
            KeyCode::Down | KeyCode::Char('j') => self.move_to(self.selected + 1, len),
            KeyCode::Up | KeyCode::Char('k') => self.move_to(self.selected.saturating_sub(1), len),
            KeyCode::PageDown => self.move_to(self.selected + page, len),
            KeyCode::PageUp => self.move_to(self.selected.saturating_sub(page), len),
            KeyCode::Home | KeyCode::Char('g') => self.move_to(0, len),
            KeyCode::End | KeyCode::Char('G') => self.move_to(len.saturating_sub(1), len),
            KeyCode::Char('s') => {
                let i = Column::ALL
                    .iter()
                    .position(|c| *c == self.sort)
                    .unwrap_or(0);
                self.sort = Column::ALL[(i + 1) % Column::ALL.len()];
            }
            KeyCode::Char('S') => self.descending = !self.descending,
            _ => {
                let Some(id) = self.selected_id(snap) else {
                    return vec![];
                };
                let power = |action| {
                    Action::Send(Command::Power {
                        device: id.clone(),
                        action,
                    })
                };
                let link = |down| {
                    Action::Send(Command::SetLink {
                        device: id.clone(),
                        fault: LinkFault {
                            down,
                            ..Default::default()
                        },
                    })
                };
                return match key.code {
                    KeyCode::Enter => {
                        self.detail = Some(id.clone());
                        vec![Action::Detail(Some(id))]
                    }
                    KeyCode::Char('c') => vec![power(PowerAction::Cycle)],
                    KeyCode::Char('o') => vec![power(PowerAction::On)],
                    KeyCode::Char('x') => vec![power(PowerAction::Off)],
                    KeyCode::Char('r') => vec![Action::Send(Command::RestartButton {
                        device: id,
                        hold_s: 1.0,
                    })],
                    KeyCode::Char('R') => {
                        self.mode = Mode::Confirm(
                            Command::FactoryReset { device: id.clone() },
                            format!(
                                "Factory reset {id}? Its configuration, accounts and logs are erased. (y/n)"
                            ),
                        );
                        vec![]
                    }
                    KeyCode::Char('d') => vec![link(true)],
                    KeyCode::Char('u') => vec![link(false)],
                    _ => vec![],
                };
            }
        }
        vec![]
    }

    /// Scenarios tab: move in the library, enter runs the selected one.
    fn scenarios_key(&mut self, key: KeyEvent, snap: &Snapshot) -> Vec<Action> {
        let lib = snap.scenarios.as_ref().map_or(&[][..], |s| &s.library[..]);
        let last = lib.len().saturating_sub(1);
        let sel = self.scenario_selected.min(last);
        match key.code {
            KeyCode::Down | KeyCode::Char('j') => self.scenario_selected = (sel + 1).min(last),
            KeyCode::Up | KeyCode::Char('k') => self.scenario_selected = sel.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.scenario_selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.scenario_selected = last,
            KeyCode::Enter => {
                return lib
                    .get(sel)
                    .map(|e| Action::RunScenario(e.file.clone()))
                    .into_iter()
                    .collect();
            }
            _ => {}
        }
        vec![]
    }

    fn events_key(&mut self, key: KeyEvent, snap: &Snapshot) -> Vec<Action> {
        match key.code {
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.events_paused = match self.events_paused {
                    Some(_) => None,
                    None => Some(snap.events.len()),
                };
            }
            KeyCode::Char('c') => self.events_filter.clear(),
            _ => {}
        }
        vec![]
    }
}

fn clock_key(key: KeyEvent, snap: &Snapshot) -> Vec<Action> {
    let Some(c) = &snap.clock else {
        return vec![];
    };
    let cmd = match key.code {
        KeyCode::Char('p') | KeyCode::Char(' ') => Command::Pause { paused: !c.paused },
        KeyCode::Char('+') => Command::SetSpeed {
            speed: (c.speed * 10.0).min(1_000_000.0),
        },
        KeyCode::Char('-') => Command::SetSpeed {
            speed: (c.speed / 10.0).max(0.001),
        },
        KeyCode::Char('a') => Command::AdvanceClock { seconds: 3600.0 },
        _ => return vec![],
    };
    vec![Action::Send(cmd)]
}

/// Orders `ps2` before `ps10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let t = s.trim_end_matches(|c: char| c.is_ascii_digit());
        (t.len(), s[t.len()..].parse::<u64>().ok())
    };
    let (la, na) = split(a);
    let (lb, nb) = split(b);
    match (na, nb) {
        (Some(x), Some(y)) if a[..la] == b[..lb] => x.cmp(&y),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["ps10", "ps2", "dl1", "ps1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["dl1", "ps1", "ps2", "ps10"]);
    }
}
