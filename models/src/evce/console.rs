//! The EV Charging Expert's local console: a USB keyboard with a display
//! on the HDMI port (DOCA0349 "Potential Risks": someone who plugs a
//! keyboard and a display into the media ports can attempt to obtain a
//! local console access). Played through the `usb_console` command: the
//! lines typed on the keyboard, and what the display shows after each.
//!
//! Contract:
//! - The display shows a login prompt (`<id> login: `); an empty line
//!   shows it again. A user name is followed by `Password: `; the password
//!   is checked by the shared login ([`crate::security::login`], `via` =
//!   `local console`): the same accounts and lockout as the web pages and
//!   SSH, every attempt audited. A wrong one shows `Login incorrect` and
//!   the prompt again; a locked device says so.
//! - Logged in, the console runs the diagnostic shell of
//!   [`super::ssh::run_command`] until `exit` (back to the login prompt).
//!   The console state lives in RAM: a reboot shows the login prompt again.

use std::sync::Mutex;

use fieldtwin_emulator::local::{Exchange, Transcript};

use super::ssh::{PROMPT, run_command};
use super::web::Web;
use crate::security::login::{self, Outcome};

/// Where the console is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    /// Showing `login:`.
    #[default]
    Login,
    /// Showing `Password:` for this user.
    Password(String),
    /// A shell of this user.
    Shell(String),
}

/// The local console of one EVCE (RAM only).
#[derive(Debug, Default)]
pub struct Console {
    state: Mutex<State>,
}

impl Console {
    /// Back to the login prompt (a reboot).
    pub fn reset(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Login;
    }

    fn get(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, s: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Types `lines` on the keyboard of the EVCE whose surface is `web`.
    pub async fn type_lines(&self, web: &Web, lines: Vec<String>) -> Transcript {
        let prompt = format!("{} login: ", web.ctx.id);
        let mut exchanges = Vec::new();
        for line in lines {
            let answer = match self.get() {
                State::Login if line.trim().is_empty() => prompt.clone(),
                State::Login => {
                    self.set(State::Password(line.trim().to_string()));
                    "Password: ".to_string()
                }
                State::Password(user) => {
                    match login::login(web, &user, &line, "local console").await {
                        Outcome::Ok(token) => {
                            web.close_session(&token);
                            self.set(State::Shell(user.clone()));
                            format!(
                                "EV Charging Expert {} - local console ({user}). Type help.\n{PROMPT}",
                                web.ctx.id
                            )
                        }
                        Outcome::Locked(m) | Outcome::Unavailable(m) => {
                            self.set(State::Login);
                            format!("{m}\n\n{prompt}")
                        }
                        Outcome::Wrong(_) => {
                            self.set(State::Login);
                            format!("Login incorrect\n\n{prompt}")
                        }
                    }
                }
                State::Shell(_) if matches!(line.trim(), "exit" | "logout") => {
                    self.set(State::Login);
                    format!("\n{prompt}")
                }
                State::Shell(_) => {
                    let (out, _) = run_command(web, &line);
                    out + PROMPT
                }
            };
            // The password is not echoed.
            let sent = if matches!(exchanges.last(), Some(Exchange { answer: Some(a), .. }) if a == "Password: ")
            {
                "********".to_string()
            } else {
                line
            };
            exchanges.push(Exchange {
                sent,
                answer: Some(answer),
                closed: false,
            });
        }
        Transcript {
            device: web.ctx.id.to_string(),
            port: "usb".into(),
            exchanges,
        }
    }
}
