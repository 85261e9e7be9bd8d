//! fieldtwin-tui: the terminal dashboard (`fieldtwin tui`, `fieldtwin run
//! --tui`). It attaches to a running site through the control API only:
//! [`client`] polls it and follows its event stream into a
//! [`state::Snapshot`], [`view::render`] draws a frame as a pure function of
//! that snapshot and the [`state::App`] (DESIGN.md principle 8), and every
//! key that acts on the site sends a `Command` of the control API
//! (docs/tui.md lists the keys and commands).

pub mod bench;
pub mod client;
pub mod command;
pub mod state;
pub mod view;

use std::net::SocketAddr;
use std::time::Duration;

use ratatui::crossterm::event::{self, KeyEventKind};

use crate::client::Client;
use crate::state::{Action, App};

/// The control API address the dashboard talks to by default.
pub const DEFAULT_API: &str = "127.0.0.1:7780";

/// How often the dashboard polls the site.
pub const POLL: Duration = Duration::from_millis(500);

/// Runs the dashboard against the control API at `api` until the user quits.
pub fn run(api: SocketAddr) -> anyhow::Result<()> {
    let client = Client::spawn(api, POLL)?;
    let mut terminal = ratatui::try_init()?;
    let result = ui_loop(&mut terminal, &client);
    ratatui::restore();
    result
}

/// Rows of the device table that fit a terminal of `height` lines (title,
/// tabs, status line, borders and header take 6).
pub fn page_rows(height: u16) -> usize {
    usize::from(height.saturating_sub(6)).max(1)
}

fn ui_loop(terminal: &mut ratatui::DefaultTerminal, client: &Client) -> anyhow::Result<()> {
    let mut app = App::default();
    loop {
        app.page = page_rows(terminal.size()?.height);
        {
            let snap = client.snapshot();
            terminal.draw(|f| view::render(f, &app, &snap))?;
        }
        if !event::poll(Duration::from_millis(100))? {
            continue;
        }
        let event::Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        let actions = app.key(key, &client.snapshot());
        for a in actions {
            match a {
                Action::Quit => return Ok(()),
                Action::Send(cmd) => {
                    app.message = None;
                    client.send(cmd);
                }
                Action::Detail(id) => client.detail(id),
                Action::RunScenario(name) => {
                    app.message = None;
                    client.run_scenario(name);
                }
            }
        }
    }
}
