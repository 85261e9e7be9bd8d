//! Rendering: a pure function of the [`Snapshot`] and the [`App`]
//! (DESIGN.md principle 8). Nothing here talks to the site or changes state.
//!
//! Contract: the device table renders only the rows that fit on screen
//! (`App::offset` onwards), so a frame costs the same with 10 or 10,000
//! devices apart from filtering and sorting the index list.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, Table, Tabs, Wrap};

use fieldtwin_emulator::device::{DeviceStatus, Power};
use fieldtwin_emulator::scenario_api::{Run, RunState, Scenarios};

use crate::command::COMMANDS;
use crate::state::{App, Column, Conn, Mode, Snapshot, Tab, health_name, power_name};

/// Draws the whole dashboard.
pub fn render(frame: &mut Frame, app: &App, snap: &Snapshot) {
    let [top, tabs, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    title_bar(frame, top, snap);
    let titles: Vec<Line> = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| Line::from(format!("{} {}", i + 1, t.title())))
        .collect();
    let selected = Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(Style::new().reversed().bold()),
        tabs,
    );
    match app.tab {
        Tab::Devices => match (&app.detail, &snap.detail) {
            (Some(id), Some(d)) if &d.id == id => detail(frame, body, d, snap),
            (Some(id), _) => frame.render_widget(
                Paragraph::new(format!("loading {id}…")).block(Block::bordered()),
                body,
            ),
            (None, _) => devices(frame, body, app, snap),
        },
        Tab::Events => events(frame, body, app, snap),
        Tab::Clock => clock(frame, body, snap),
        Tab::Links => links(frame, body, snap),
        Tab::Scenarios => scenarios(frame, body, app, snap),
    }
    status_line(frame, bottom, app, snap);
    match &app.mode {
        Mode::Help => help(frame),
        Mode::Confirm(_, q) => {
            let area = centered(frame.area(), 60, 5);
            frame.render_widget(Clear, area);
            frame.render_widget(
                Paragraph::new(q.as_str())
                    .wrap(Wrap { trim: true })
                    .block(Block::bordered().title(" Confirm ").red()),
                area,
            );
        }
        _ => {}
    }
}

fn title_bar(frame: &mut Frame, area: Rect, snap: &Snapshot) {
    let conn = match &snap.conn {
        Conn::Connecting => Span::styled(" connecting… ", Style::new().yellow()),
        Conn::Connected if snap.reconnects > 0 => Span::styled(
            format!(" connected (reconnected {}x) ", snap.reconnects),
            Style::new().green(),
        ),
        Conn::Connected => Span::styled(" connected ", Style::new().green()),
        Conn::Lost(e) => Span::styled(
            format!(" connection lost, reconnecting: {e} "),
            Style::new().white().on_red(),
        ),
    };
    let mut spans = vec![
        Span::styled(" fieldtwin ", Style::new().bold().reversed()),
        Span::raw(format!(" api {} ", snap.api)),
        conn,
    ];
    if let Some(c) = &snap.clock {
        spans.push(Span::raw(format!(
            " site time {}  {}x{}",
            c.site_time.format("%Y-%m-%d %H:%M:%S"),
            c.speed,
            if c.paused { " PAUSED" } else { "" }
        )));
    }
    spans.push(Span::raw(format!("  {} devices", snap.devices.len())));
    frame.render_widget(Line::from(spans), area);
}

fn status_line(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let line = match &app.mode {
        Mode::Command => Line::from(vec![
            Span::styled(":", Style::new().bold()),
            Span::raw(app.input.as_str()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled(
                "   (tab completes, enter runs, esc cancels)",
                Style::new().dark_gray(),
            ),
        ]),
        Mode::Filter => {
            let f = if app.tab == Tab::Events {
                &app.events_filter
            } else {
                &app.filter
            };
            Line::from(vec![
                Span::styled("/", Style::new().bold()),
                Span::raw(f.as_str()),
                Span::raw("█"),
                Span::styled(
                    "   (substring or field=value; enter keeps, esc clears)",
                    Style::new().dark_gray(),
                ),
            ])
        }
        _ => match app.message.as_ref().or(snap.reply.as_ref()) {
            Some((m, true)) => Line::from(Span::styled(m.as_str(), Style::new().red())),
            Some((m, false)) => Line::from(Span::styled(m.as_str(), Style::new().green())),
            None if app.tab == Tab::Scenarios => Line::from(Span::styled(
                "? help  : command  j/k select  enter run the selected scenario  :scenario run NAME  q quit",
                Style::new().dark_gray(),
            )),
            None => Line::from(Span::styled(
                "? help  : command  / filter  enter detail  c cycle  o on  x off  r restart  R reset  d/u link  q quit",
                Style::new().dark_gray(),
            )),
        },
    };
    frame.render_widget(line, area);
}

/// `1d02h`, `3h04m`, `12m05s`, `42s`.
pub fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// Signed drift, `+0.000s`, `-2m03s`.
pub fn fmt_drift(s: f64) -> String {
    let sign = if s < 0.0 { "-" } else { "+" };
    if s.abs() < 60.0 {
        format!("{sign}{:.3}s", s.abs())
    } else {
        format!("{sign}{}", fmt_duration(s.abs()))
    }
}

fn power_style(p: Power) -> Style {
    match p {
        Power::On => Style::new().green(),
        Power::Booting => Style::new().yellow(),
        Power::Off => Style::new().dark_gray(),
        Power::Failed => Style::new().red().bold(),
    }
}

fn cell(d: &DeviceStatus, c: Column, snap: &Snapshot) -> Cell<'static> {
    let join = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match c {
        Column::Name => Cell::from(d.id.clone()),
        Column::Model => Cell::from(d.model.clone()),
        Column::Power => Cell::from(power_name(d.power)).style(power_style(d.power)),
        Column::Addresses => Cell::from(join(&d.addresses)),
        Column::Segment => {
            let mut segs: Vec<&str> = d.segments.values().map(String::as_str).collect();
            segs.dedup();
            Cell::from(segs.join(","))
        }
        Column::Uptime => Cell::from(d.uptime_s.map(fmt_duration).unwrap_or_else(|| "-".into())),
        Column::Health => Cell::from(health_name(d)).style(power_style(d.power)),
        Column::Rtc => Cell::from(
            d.rtc
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        Column::Drift => Cell::from(d.rtc_offset_s.map(fmt_drift).unwrap_or_else(|| "-".into())),
        Column::Services => Cell::from(
            d.services
                .iter()
                .map(|s| format!("{}/{}:{}", s.name, s.interface, s.port))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Column::Requests => Cell::from(
            match (snap.rates.get(&d.id), d.counters.get(crate::state::REQ)) {
                (Some(r), _) => format!("{r:.0}"),
                (None, Some(_)) => "0".into(),
                (None, None) => "-".into(),
            },
        ),
    }
}

fn widths() -> [Constraint; 11] {
    [
        Constraint::Length(10),
        Constraint::Length(16),
        Constraint::Length(7),
        Constraint::Length(36),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Min(16),
        Constraint::Length(8),
    ]
}

fn devices(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let visible = app.visible(snap);
    let rows_fit = area.height.saturating_sub(3) as usize;
    let sel = app.selected.min(visible.len().saturating_sub(1));
    // Keep the selection on screen even if the page size changed.
    let mut offset = app.offset.min(visible.len().saturating_sub(1));
    if sel < offset {
        offset = sel;
    } else if rows_fit > 0 && sel >= offset + rows_fit {
        offset = sel + 1 - rows_fit;
    }
    let rows: Vec<Row> = visible
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, &di)| {
            let d = &snap.devices[di];
            let row = Row::new(Column::ALL.iter().map(|&c| cell(d, c, snap)));
            if i == sel {
                row.style(Style::new().reversed())
            } else {
                row
            }
        })
        .collect();
    let arrow = if app.descending { "▼" } else { "▲" };
    let header = Row::new(Column::ALL.iter().map(|&c| {
        let t = if c == app.sort {
            format!("{}{arrow}", c.title())
        } else {
            c.title().to_string()
        };
        Cell::from(t)
    }))
    .style(Style::new().bold().cyan());
    let mut title = format!(" Devices {}/{} ", visible.len(), snap.devices.len());
    if !app.filter.is_empty() {
        title.push_str(&format!("filter /{} ", app.filter));
    }
    if !visible.is_empty() {
        title.push_str(&format!("row {} ", sel + 1));
    }
    frame.render_widget(
        Table::new(rows, widths())
            .header(header)
            .column_spacing(1)
            .block(Block::bordered().title(title)),
        area,
    );
}

fn kv(k: &str, v: impl Into<String>) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{k:<12}"), Style::new().cyan()),
        Span::raw(v.into()),
    ])
}

fn detail(frame: &mut Frame, area: Rect, d: &DeviceStatus, snap: &Snapshot) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
    let mut lines = vec![
        kv("model", d.model.clone()),
        Line::from(vec![
            Span::styled(format!("{:<12}", "power"), Style::new().cyan()),
            Span::styled(power_name(d.power), power_style(d.power)),
        ]),
        kv("health", health_name(d)),
        kv(
            "uptime",
            d.uptime_s.map(fmt_duration).unwrap_or_else(|| "-".into()),
        ),
        kv(
            "rtc",
            d.rtc
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        kv(
            "rtc drift",
            d.rtc_offset_s.map(fmt_drift).unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(f) = &d.failure {
        lines.push(kv("failure", f.clone()));
    }
    for (iface, addr) in &d.addresses {
        let seg = d.segments.get(iface).map(String::as_str).unwrap_or("-");
        lines.push(kv(iface, format!("{addr}  segment {seg}")));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Services and ports",
        Style::new().bold(),
    )));
    if d.services.is_empty() {
        lines.push(Line::from("  (none open)"));
    }
    for s in &d.services {
        lines.push(Line::from(format!(
            "  {:<8} {:<5} {}/{}  {}",
            s.name, s.interface, s.protocol, s.port, s.address
        )));
    }
    if !d.credentials.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("Logins", Style::new().bold())));
        for c in &d.credentials {
            lines.push(Line::from(format!(
                "  {:<8} {} / {}",
                c.service, c.user, c.password
            )));
        }
    }
    if !d.counters.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("Counters", Style::new().bold())));
        for (k, v) in &d.counters {
            lines.push(Line::from(format!("  {k:<18} {v}")));
        }
    }
    frame.render_widget(
        Paragraph::new(Text::from(lines))
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" {} (esc back) ", d.id))),
        left,
    );

    let [spark, rest] = Layout::vertical([Constraint::Length(5), Constraint::Min(3)]).areas(right);
    let hist: Vec<u64> = snap
        .history
        .get(&d.id)
        .map(|h| h.iter().copied().collect())
        .unwrap_or_default();
    let rate = snap.rates.get(&d.id).copied().unwrap_or(0.0);
    frame.render_widget(
        Sparkline::default()
            .data(&hist)
            .style(Style::new().green())
            .block(Block::bordered().title(format!(" Modbus requests/s: {rate:.0} "))),
        spark,
    );
    let mut lines: Vec<Line> = Vec::new();
    let details = d.details.clone().unwrap_or_default();
    lines.push(Line::from(Span::styled(
        "Field devices",
        Style::new().bold(),
    )));
    if details.field_devices.is_empty() {
        lines.push(Line::from("  (none)"));
    }
    let yn = |b: Option<bool>, y: &str, n: &str| match b {
        Some(true) => y.to_string(),
        Some(false) => n.to_string(),
        None => "-".to_string(),
    };
    for f in &details.field_devices {
        let mut s = format!(
            "  {:<12} {:<14} {:<10} unit {:<3} {}",
            f.id,
            f.model,
            f.link,
            f.unit.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
            yn(f.connected, "connected", "not connected"),
        );
        if f.powered == Some(false) {
            s.push_str(" unpowered");
        }
        if let Some(a) = &f.address {
            s.push_str(&format!(" {a}"));
        }
        if let Some(r) = f.rssi_dbm {
            s.push_str(&format!(" RSSI {r:.0} dBm"));
        }
        if let Some(q) = f.lqi {
            s.push_str(&format!(" LQI {q}"));
        }
        lines.push(Line::from(s));
    }
    if let Some(l) = &details.web_lockout {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("Web login", Style::new().bold())));
        let state = match l.locked_until {
            Some(t) => Span::styled(
                format!("  LOCKED until {}", t.format("%H:%M:%S")),
                Style::new().red().bold(),
            ),
            None => Span::styled("  not locked", Style::new().green()),
        };
        lines.push(Line::from(vec![
            state,
            Span::raw(format!(
                "  failures {}/{}  locks {}",
                l.failures, l.threshold, l.locks
            )),
        ]));
    }
    if !details.audit_tail.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            "Audit log (newest last)",
            Style::new().bold(),
        )));
        for a in &details.audit_tail {
            lines.push(Line::from(format!(
                "  {} {:<14} {}",
                a.time.format("%m-%d %H:%M:%S"),
                a.kind,
                a.detail
            )));
        }
    }
    frame.render_widget(
        Paragraph::new(Text::from(lines))
            .wrap(Wrap { trim: false })
            .block(Block::bordered()),
        rest,
    );
}

fn events(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let f = app.events_filter.to_lowercase();
    let upto = app
        .events_paused
        .unwrap_or(snap.events.len())
        .min(snap.events.len());
    let fit = area.height.saturating_sub(2) as usize;
    let mut shown: Vec<Line> = snap
        .events
        .iter()
        .take(upto)
        .rev()
        .filter_map(|e| {
            let (kind, text) = e.describe();
            if !f.is_empty()
                && !kind.to_lowercase().contains(&f)
                && !text.to_lowercase().contains(&f)
            {
                return None;
            }
            let at =
                e.at.map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_else(|| "--:--:--".into());
            let style = match kind.as_str() {
                "power" => Style::new().yellow(),
                "boot_failed" | "factory_reset" => Style::new().red(),
                "clock" => Style::new().blue(),
                _ => Style::new(),
            };
            Some(Line::from(vec![
                Span::styled(format!("{at} "), Style::new().dark_gray()),
                Span::styled(format!("{kind:<14} "), style),
                Span::raw(text),
            ]))
        })
        .take(fit)
        .collect();
    shown.reverse();
    let mut title = format!(" Events ({}) ", snap.events.len());
    if app.events_paused.is_some() {
        title.push_str("PAUSED (p resumes) ");
    }
    if !f.is_empty() {
        title.push_str(&format!("filter /{} ", app.events_filter));
    }
    frame.render_widget(
        Paragraph::new(Text::from(shown)).block(Block::bordered().title(title)),
        area,
    );
}

fn clock(frame: &mut Frame, area: Rect, snap: &Snapshot) {
    let Some(c) = &snap.clock else {
        frame.render_widget(
            Paragraph::new("no clock yet").block(Block::bordered().title(" Clock ")),
            area,
        );
        return;
    };
    let mut lines = vec![
        kv(
            "site time",
            c.site_time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ),
        kv(
            "elapsed",
            format!("{} ({:.3} s)", fmt_duration(c.elapsed_s), c.elapsed_s),
        ),
        kv("speed", format!("{}x", c.speed)),
        Line::from(vec![
            Span::styled(format!("{:<12}", "state"), Style::new().cyan()),
            if c.paused {
                Span::styled("PAUSED", Style::new().yellow().bold())
            } else {
                Span::styled("running", Style::new().green())
            },
        ]),
        kv("timers", format!("{} pending", c.pending_timers)),
    ];
    for (i, d) in c.next_deadlines_s.iter().enumerate() {
        lines.push(kv(
            if i == 0 { "next" } else { "" },
            format!("in {}", fmt_drift(*d).trim_start_matches('+')),
        ));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "p pause/resume  + faster x10  - slower /10  a advance 1h  (:advance 15m, :speed 100)",
        Style::new().dark_gray(),
    )));
    frame.render_widget(
        Paragraph::new(Text::from(lines)).block(Block::bordered().title(" Clock ")),
        area,
    );
}

fn links(frame: &mut Frame, area: Rect, snap: &Snapshot) {
    if snap.links.is_empty() {
        frame.render_widget(
            Paragraph::new(
                "No link faults in force. Faults exist in TAP mode (fieldtwin run --tap): \
                 d / u on a device row pulls / plugs its cable; :link DEVICE|segment:NAME \
                 down|up|loss PCT|latency MS.",
            )
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Links/faults ")),
            area,
        );
        return;
    }
    let rows: Vec<Row> = snap
        .links
        .iter()
        .map(|(k, f)| {
            Row::new(vec![
                Cell::from(k.clone()),
                Cell::from(if f.down { "DOWN" } else { "up" }).style(if f.down {
                    Style::new().red().bold()
                } else {
                    Style::new().green()
                }),
                Cell::from(format!("{}", f.latency_ms)),
                Cell::from(format!("{}", f.jitter_ms)),
                Cell::from(format!("{}", f.loss_pct)),
                Cell::from(if f.bandwidth_kbps > 0.0 {
                    format!("{}", f.bandwidth_kbps)
                } else {
                    "unlimited".into()
                }),
            ])
        })
        .collect();
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(16),
                Constraint::Length(6),
                Constraint::Length(11),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(14),
            ],
        )
        .header(
            Row::new([
                "LINK",
                "STATE",
                "LATENCY ms",
                "JITTER ms",
                "LOSS %",
                "BANDWIDTH kb/s",
            ])
            .style(Style::new().bold().cyan()),
        )
        .block(Block::bordered().title(format!(" Links/faults ({}) ", snap.links.len()))),
        area,
    );
}

fn scenarios(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let Some(sc) = &snap.scenarios else {
        frame.render_widget(
            Paragraph::new(
                "The site serves no scenarios (GET /api/v1/scenarios did not answer); \
                 start it with `fieldtwin run` of this version.",
            )
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Scenarios ")),
            area,
        );
        return;
    };
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(42), Constraint::Percentage(58)]).areas(area);
    scenario_library(frame, left, app, sc);
    scenario_run(frame, right, sc.run.as_ref());
}

fn scenario_library(frame: &mut Frame, area: Rect, app: &App, sc: &Scenarios) {
    let [list, about] = Layout::vertical([Constraint::Min(3), Constraint::Length(6)]).areas(area);
    let title = format!(" Library ({}) {} ", sc.library.len(), sc.library_dir);
    if let Some(e) = &sc.library_error {
        frame.render_widget(
            Paragraph::new(e.as_str())
                .red()
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title(title)),
            area,
        );
        return;
    }
    let sel = app
        .scenario_selected
        .min(sc.library.len().saturating_sub(1));
    let rows_fit = usize::from(list.height.saturating_sub(3)).max(1);
    let offset = sel.saturating_sub(rows_fit - 1);
    let running = sc
        .run
        .as_ref()
        .filter(|r| r.state == RunState::Running)
        .map(|r| r.file.as_str());
    let rows = sc
        .library
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_fit)
        .map(|(i, e)| {
            let mark = if Some(e.file.as_str()) == running {
                "▶"
            } else {
                " "
            };
            let name = match &e.error {
                Some(_) => Cell::from("(invalid header)").red(),
                None => Cell::from(e.name.clone()),
            };
            let row = Row::new([Cell::from(format!("{mark}{}", e.file)), name]);
            if i == sel {
                row.style(Style::new().reversed())
            } else {
                row
            }
        });
    frame.render_widget(
        Table::new(rows, [Constraint::Length(28), Constraint::Fill(1)])
            .header(Row::new(["FILE", "NAME"]).style(Style::new().bold().cyan()))
            .block(Block::bordered().title(title)),
        list,
    );
    let text = match sc.library.get(sel) {
        None => Text::from("The library is empty."),
        Some(e) => match &e.error {
            Some(err) => Text::from(Span::styled(err.clone(), Style::new().red())),
            None => Text::from(vec![
                Line::from(e.description.clone()),
                Line::from(Span::styled(
                    format!("tags: {}", e.tags.join(", ")),
                    Style::new().dark_gray(),
                )),
            ]),
        },
    };
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" enter runs the selected scenario ")),
        about,
    );
}

fn run_state(state: RunState) -> Span<'static> {
    match state {
        RunState::Running => Span::styled(" RUNNING ", Style::new().black().on_yellow()),
        RunState::Passed => Span::styled(" PASSED ", Style::new().black().on_green()),
        RunState::Failed => Span::styled(" FAILED ", Style::new().white().on_red()),
        RunState::Error => Span::styled(" ERROR ", Style::new().white().on_red()),
    }
}

fn scenario_run(frame: &mut Frame, area: Rect, run: Option<&Run>) {
    let Some(run) = run else {
        frame.render_widget(
            Paragraph::new(
                "No scenario has run on this site yet. Select one and press enter, \
                 or type :scenario run NAME.",
            )
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Run ")),
            area,
        );
        return;
    };
    let failed = run.steps.iter().filter(|s| !s.passed).count();
    let mut lines = vec![Line::from(vec![
        run_state(run.state),
        Span::raw(format!(
            " {} steps, {} passed, {failed} failed, wall {:.1}s",
            run.steps.len(),
            run.steps.len() - failed,
            run.wall_s
        )),
    ])];
    if let Some(e) = &run.error {
        lines.push(Line::from(Span::styled(e.clone(), Style::new().red())));
    }
    // The newest steps that fit, oldest first.
    let fit = usize::from(area.height.saturating_sub(2)).saturating_sub(lines.len());
    let skip = run.steps.len().saturating_sub(fit);
    for st in &run.steps[skip..] {
        let (mark, style) = match (st.kind.as_str(), st.passed) {
            ("log", _) => ("  ..", Style::new().dark_gray()),
            (_, true) => ("  ok", Style::new().green()),
            (_, false) => ("FAIL", Style::new().red().bold()),
        };
        let observed = if st.observed.is_empty() || st.kind == "log" {
            String::new()
        } else {
            format!(" (observed: {})", st.observed)
        };
        lines.push(Line::from(vec![
            Span::styled(mark, style),
            Span::raw(format!(
                " [{:>3}] t={:.3}s line {} {} {}{observed}",
                st.n, st.virtual_s, st.line, st.kind, st.message
            )),
        ]));
    }
    frame.render_widget(
        Paragraph::new(Text::from(lines)).block(
            Block::bordered().title(format!(" Run {}: {} ({}) ", run.id, run.name, run.file)),
        ),
        area,
    );
}

/// The keys and commands (also docs/tui.md).
pub const KEYS: &[(&str, &str)] = &[
    ("? / esc", "this help / back (close detail, clear filter)"),
    (
        "1-5, tab",
        "switch tab (Devices, Events, Clock, Links/faults, Scenarios)",
    ),
    (":", "command line (tab completes)"),
    (
        "/",
        "filter: text, or field=value (name model power health segment addr service)",
    ),
    ("j k ↑ ↓ pgup pgdn g G", "move the selection"),
    ("s / S", "sort by the next column / reverse"),
    (
        "enter",
        "device detail / run the selected scenario (Scenarios tab)",
    ),
    ("c o x", "power-cycle / on / off the selected device"),
    (
        "r / R",
        "Restart button (short press) / factory reset (asks y/n)",
    ),
    ("d / u", "link down / up (TAP mode)"),
    ("p (Events)", "pause / resume the event stream"),
    (
        "p + - a (Clock)",
        "pause/resume, speed x10, speed /10, advance 1 h",
    ),
    ("q, ctrl-c", "quit"),
];

fn help(frame: &mut Frame) {
    let area = centered(frame.area(), 100, (KEYS.len() + COMMANDS.len() + 5) as u16);
    let mut lines: Vec<Line> = vec![Line::from(Span::styled("Keys", Style::new().bold()))];
    for (k, v) in KEYS {
        lines.push(Line::from(vec![
            Span::styled(format!("  {k:<22}"), Style::new().cyan()),
            Span::raw(*v),
        ]));
    }
    lines.push(Line::from(Span::styled(
        "Commands (:)",
        Style::new().bold(),
    )));
    for (_, usage) in COMMANDS {
        lines.push(Line::from(Span::raw(format!("  :{usage}"))));
    }
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(Text::from(lines)).block(
            Block::bordered()
                .title(" Help (any key closes) ")
                .fg(Color::White),
        ),
        area,
    );
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

#[cfg(test)]
mod tests {
    //! Snapshot tests: every view and the help overlay rendered from the
    //! fixed [`crate::bench::sample_site`] into ratatui's `TestBackend`.
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::*;
    use crate::bench::sample_site;

    fn screen(app: &App, snap: &Snapshot) -> String {
        let mut t = Terminal::new(TestBackend::new(150, 32)).unwrap();
        t.draw(|f| render(f, app, snap)).unwrap();
        t.backend().to_string()
    }

    fn press(app: &mut App, snap: &Snapshot, keys: &str) {
        for c in keys.chars() {
            let code = match c {
                '\n' => KeyCode::Enter,
                '\x1b' => KeyCode::Esc,
                c => KeyCode::Char(c),
            };
            app.key(KeyEvent::new(code, KeyModifiers::NONE), snap);
        }
    }

    #[test]
    fn devices_view() {
        insta::assert_snapshot!(screen(&App::default(), &sample_site()));
    }

    #[test]
    fn devices_filtered_and_sorted() {
        let snap = sample_site();
        let mut app = App::default();
        press(&mut app, &snap, "/segment=lan\n");
        assert_eq!(app.visible(&snap).len(), 3);
        press(&mut app, &snap, "ssS"); // sort by power, descending
        insta::assert_snapshot!(screen(&app, &snap));
    }

    #[test]
    fn detail_view() {
        let snap = sample_site();
        let mut app = App::default();
        press(&mut app, &snap, "/ps1\n\n");
        assert_eq!(app.detail.as_deref(), Some("ps1"));
        insta::assert_snapshot!(screen(&app, &snap));
    }

    #[test]
    fn events_view() {
        let snap = sample_site();
        let mut app = App::default();
        press(&mut app, &snap, "2");
        insta::assert_snapshot!(screen(&app, &snap));
        press(&mut app, &snap, "/power\n");
        let s = screen(&app, &snap);
        assert!(
            s.contains("ps1 power booting") && !s.contains("boot failed"),
            "{s}"
        );
    }

    #[test]
    fn clock_view() {
        let snap = sample_site();
        let mut app = App::default();
        press(&mut app, &snap, "3");
        insta::assert_snapshot!(screen(&app, &snap));
    }

    #[test]
    fn links_view() {
        let mut snap = sample_site();
        let mut app = App::default();
        press(&mut app, &snap, "4");
        let empty = screen(&app, &snap);
        assert!(empty.contains("No link faults in force"), "{empty}");
        snap.links.insert(
            "ps1".into(),
            fieldtwin_emulator::net::fault::LinkFault {
                down: true,
                ..Default::default()
            },
        );
        snap.links.insert(
            "segment:ot".into(),
            fieldtwin_emulator::net::fault::LinkFault {
                loss_pct: 20.0,
                latency_ms: 50.0,
                ..Default::default()
            },
        );
        insta::assert_snapshot!(screen(&app, &snap));
    }

    /// A library of three (one with a broken header) and a run in progress:
    /// two steps passed, one failed.
    fn with_scenarios(mut snap: Snapshot, state: RunState) -> Snapshot {
        use fieldtwin_emulator::scenario_api::{Entry, Step};
        let entry = |file: &str, name: &str, description: &str| Entry {
            file: file.into(),
            name: name.into(),
            description: description.into(),
            tags: vec!["attack".into(), "svf".into()],
            error: None,
        };
        let step = |n: usize, passed: bool, message: &str, observed: &str| Step {
            n,
            kind: "expect_eq".into(),
            message: message.into(),
            passed,
            observed: observed.into(),
            virtual_s: 0.5 * n as f64,
            wall_s: 0.1 * n as f64,
            line: 8 + n,
        };
        snap.scenarios = Some(Scenarios {
            library_dir: "scenarios/library".into(),
            library: vec![
                entry(
                    "brute-force",
                    "Web login brute force",
                    "Dictionary attack on the web login.",
                ),
                Entry {
                    file: "broken".into(),
                    error: Some("broken.rhai: header line 1: missing name".into()),
                    ..Entry::default()
                },
                entry(
                    "port-scan",
                    "Port scan",
                    "A full TCP scan finds exactly the documented ports.",
                ),
            ],
            library_error: None,
            run: Some(Run {
                id: 2,
                file: "port-scan".into(),
                name: "Port scan".into(),
                state,
                steps: vec![
                    step(1, true, "https open", "true"),
                    step(2, true, "modbus open", "true"),
                    step(
                        3,
                        false,
                        "open ports",
                        "[443, 502] != expected [443, 502, 5357]",
                    ),
                ],
                error: None,
                wall_s: 0.3,
            }),
        });
        snap
    }

    #[test]
    fn scenarios_view() {
        let mut app = App::default();
        let none = sample_site();
        press(&mut app, &none, "5");
        let s = screen(&app, &none);
        assert!(s.contains("The site serves no scenarios"), "{s}");

        let snap = with_scenarios(sample_site(), RunState::Running);
        press(&mut app, &snap, "jj");
        insta::assert_snapshot!(screen(&app, &snap));
        let s = screen(&app, &with_scenarios(sample_site(), RunState::Failed));
        assert!(s.contains(" FAILED ") && s.contains("FAIL [  3]"), "{s}");
        // Enter runs the selected scenario; the selection stops at the end.
        press(&mut app, &snap, "j");
        assert_eq!(
            app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &snap),
            [crate::state::Action::RunScenario("port-scan".into())]
        );
        press(&mut app, &snap, "k");
        let s = screen(&app, &snap);
        assert!(s.contains("header line 1: missing name"), "{s}");
    }

    #[test]
    fn scenario_run_command_completes_names_and_runs() {
        let snap = with_scenarios(sample_site(), RunState::Passed);
        let mut app = App::default();
        press(&mut app, &snap, ":scenario run bru");
        app.key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE), &snap);
        assert_eq!(app.input, "scenario run brute-force ");
        assert_eq!(
            app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &snap),
            [crate::state::Action::RunScenario("brute-force".into())]
        );
        assert_eq!(app.tab, Tab::Scenarios);
        let s = screen(&app, &snap);
        assert!(
            s.contains(" PASSED ") && s.contains("Run 2: Port scan"),
            "{s}"
        );
        // Steps and the end of a run also arrive as events.
        let mut snap = snap;
        let run = snap.scenarios.as_ref().unwrap().run.clone().unwrap();
        snap.push_event(
            None,
            fieldtwin_emulator::control::Event::ScenarioStep {
                run: 2,
                scenario: "port-scan".into(),
                step: run.steps[2].clone(),
            },
        );
        snap.push_event(
            None,
            fieldtwin_emulator::control::Event::ScenarioEnded {
                run: 2,
                scenario: "port-scan".into(),
                state: RunState::Failed,
                error: None,
            },
        );
        press(&mut app, &snap, "2");
        let s = screen(&app, &snap);
        assert!(
            s.contains("port-scan (run 2) step 3 FAIL: expect_eq open ports")
                && s.contains("port-scan (run 2) ended: failed"),
            "{s}"
        );
    }

    #[test]
    fn help_overlay() {
        let snap = sample_site();
        let mut app = App::default();
        press(&mut app, &snap, "?");
        insta::assert_snapshot!(screen(&app, &snap));
    }

    #[test]
    fn command_line_and_confirmation() {
        let snap = sample_site();
        let mut app = App::default();
        press(&mut app, &snap, ":power p");
        app.key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE), &snap);
        assert_eq!(app.input, "power ps1 ");
        insta::assert_snapshot!("command_line", screen(&app, &snap));
        press(&mut app, &snap, "\x1b/ps1\nR");
        insta::assert_snapshot!("confirm_reset", screen(&app, &snap));
        let mut no = app.clone();
        assert!(
            no.key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::NONE), &snap)
                .is_empty()
        );
        let sent = app.key(KeyEvent::new(KeyCode::Char('y'), KeyModifiers::NONE), &snap);
        assert_eq!(
            sent,
            [crate::state::Action::Send(
                fieldtwin_emulator::control::Command::FactoryReset {
                    device: "ps1".into()
                }
            )]
        );
    }

    #[test]
    fn bad_command_says_why() {
        let snap = sample_site();
        let mut app = App::default();
        press(&mut app, &snap, ":power ps1 sideways\n");
        let s = screen(&app, &snap);
        assert!(s.contains("\"sideways\" is not on, off or cycle"), "{s}");
    }

    #[test]
    fn lost_connection_is_on_screen() {
        let mut snap = sample_site();
        snap.conn = Conn::Lost("127.0.0.1:7780 (connection refused)".into());
        let s = screen(&App::default(), &snap);
        assert!(s.contains("connection lost, reconnecting"), "{s}");
        snap.conn = Conn::Connected;
        snap.reconnects = 1;
        assert!(screen(&App::default(), &snap).contains("reconnected 1x"));
    }

    #[test]
    fn ten_thousand_devices_render_the_selected_page_only() {
        let snap = crate::bench::synthetic(10_000);
        let mut app = App {
            page: crate::page_rows(32),
            ..App::default()
        };
        press(&mut app, &snap, "G");
        assert_eq!(app.selected, 9_999);
        let s = screen(&app, &snap);
        assert!(s.contains("ps10000") && s.contains("row 10000"), "{s}");
        assert!(!s.contains("ps1 "), "{s}");
        press(&mut app, &snap, "g");
        let s = screen(&app, &snap);
        assert!(s.contains("ps1 ") && !s.contains("ps10000"), "{s}");
    }
}
