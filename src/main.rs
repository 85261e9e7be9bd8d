//! The `fieldtwin` command line. Only argument parsing lives here; the
//! wiring of a site is in [`app`], the control-API client in [`client`], the
//! table printing in [`report`].

mod app;
mod bench;
mod client;
mod datalogger;
mod firmware;
mod lab;
mod report;
mod scenario;
mod tap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fieldtwin_emulator::control::{Command, PowerAction};

/// fieldtwin — a digital twin of a site of energy-management devices.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a site (the embedded default site unless --site is given).
    Run(app::RunOptions),
    /// List the devices of a running site (through its control API).
    Devices {
        /// Control API address of the running site.
        #[arg(long, default_value = app::DEFAULT_API)]
        api: SocketAddr,
    },
    /// Terminal dashboard of a running site (docs/tui.md).
    Tui {
        /// Control API address of the running site.
        #[arg(long, default_value = app::DEFAULT_API)]
        api: SocketAddr,
    },
    /// Build and check signed firmware images.
    Firmware {
        #[command(subcommand)]
        command: firmware::FirmwareCmd,
    },
    /// Power a device of a running site on, off, or off and on again.
    Power {
        device: String,
        #[arg(value_enum)]
        action: PowerArg,
        #[arg(long, default_value = app::DEFAULT_API)]
        api: SocketAddr,
    },
    /// Send any control command (JSON, docs/control-api.md) to a running
    /// site and print its JSON answer; `-` reads the JSON from stdin.
    Command {
        json: String,
        #[arg(long, default_value = app::DEFAULT_API)]
        api: SocketAddr,
    },
    /// Run an attack (JSON with a `kind`, docs/control-api.md) from
    /// Workstation FROM of a running site and print what it observed.
    Attack {
        from: String,
        json: String,
        #[arg(long, default_value = app::DEFAULT_API)]
        api: SocketAddr,
    },
    /// Show or change the virtual clock of a running site.
    Clock {
        /// Jump forward this many virtual seconds.
        #[arg(long, group = "change")]
        advance: Option<f64>,
        /// Run virtual time at this speed factor.
        #[arg(long, group = "change")]
        speed: Option<f64>,
        /// Pause virtual time.
        #[arg(long, group = "change")]
        pause: bool,
        /// Resume virtual time.
        #[arg(long, group = "change")]
        resume: bool,
        #[arg(long, default_value = app::DEFAULT_API)]
        api: SocketAddr,
    },
    /// Benchmarks (measure, assert nothing).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCmd,
    },
    /// Manage the lab network namespace of TAP mode (docs/lab.md).
    Lab {
        #[command(subcommand)]
        command: lab::LabCmd,
    },
    /// Run, list and check scenarios (docs/scenarios.md).
    Scenario {
        #[command(subcommand)]
        command: scenario::ScenarioCmd,
    },
    /// Data Logger tools (docs/datalogger.md).
    Datalogger {
        #[command(subcommand)]
        command: DataloggerCmd,
    },
    /// Play the mobile app on a Data Logger's BLE link (docs/datalogger.md).
    Ble {
        /// The logger's BLE link socket (`ble_socket` in the site file).
        #[arg(long)]
        socket: PathBuf,
        /// The logger's pairing key (printed at start).
        #[arg(long)]
        key: String,
        /// What to ask.
        #[arg(default_value = "status")]
        request: String,
        /// Send the sealed request a second time (a replay attack) and show
        /// that the logger slams the connection.
        #[arg(long)]
        replay: bool,
    },
    /// Show or check site files.
    Site {
        #[command(subcommand)]
        command: SiteCmd,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PowerArg {
    On,
    Off,
    Cycle,
}

impl From<PowerArg> for PowerAction {
    fn from(a: PowerArg) -> Self {
        match a {
            PowerArg::On => PowerAction::On,
            PowerArg::Off => PowerAction::Off,
            PowerArg::Cycle => PowerAction::Cycle,
        }
    }
}

#[derive(Debug, Subcommand)]
enum DataloggerCmd {
    /// Decode MQTT payloads (hex, e.g. from `mosquitto_sub -F %x`) into JSON
    /// rows; reads one payload a line from stdin when none is given.
    Decode {
        payload: Option<String>,
        /// Site file the logger is in (for its input names); default: the default site.
        #[arg(long)]
        site: Option<PathBuf>,
        /// Id of the logger in the site.
        #[arg(long, default_value = "dl1")]
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum SiteCmd {
    /// Print the embedded default site (or FILE) as TOML.
    Show { file: Option<PathBuf> },
    /// Validate a site file; exits non-zero and names the field on error.
    Check { file: PathBuf },
    /// Print (or write to --out) a site of N Panel Servers on one TAP segment.
    Generate {
        #[arg(long)]
        panel_servers: usize,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,fieldtwin=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Cmd::Run(opts) => app::run(opts),
        Cmd::Firmware { command } => firmware::run(command),
        Cmd::Tui { api } => fieldtwin_tui::run(api),
        Cmd::Devices { api } => client::devices(api),
        Cmd::Command { json, api } => client::command(api, &json),
        Cmd::Attack { from, json, api } => client::attack(api, from, &json),
        Cmd::Power {
            device,
            action,
            api,
        } => client::power(api, device, action.into()),
        Cmd::Clock {
            advance,
            speed,
            pause,
            resume,
            api,
        } => {
            let cmd = match (advance, speed, pause, resume) {
                (Some(seconds), ..) => Some(Command::AdvanceClock { seconds }),
                (_, Some(speed), ..) => Some(Command::SetSpeed { speed }),
                (_, _, true, _) => Some(Command::Pause { paused: true }),
                (_, _, _, true) => Some(Command::Pause { paused: false }),
                _ => None,
            };
            client::clock(api, cmd)
        }
        Cmd::Bench { command } => bench::run(command),
        Cmd::Lab { command } => match lab::run(command) {
            Ok(0) => Ok(()),
            Ok(code) => return ExitCode::from(code.clamp(1, 255) as u8),
            Err(e) => Err(e),
        },
        Cmd::Scenario { command } => match scenario::run(command) {
            Ok(0) => Ok(()),
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Cmd::Datalogger {
            command:
                DataloggerCmd::Decode {
                    payload,
                    site,
                    device,
                },
        } => datalogger::decode(payload.as_deref(), site.as_deref(), &device),
        Cmd::Ble {
            socket,
            key,
            request,
            replay,
        } => datalogger::ble(&socket, &key, &request, replay),
        Cmd::Site { command } => match command {
            SiteCmd::Show { file } => app::site_show(file.as_deref()),
            SiteCmd::Check { file } => app::site_check(&file),
            SiteCmd::Generate { panel_servers, out } => {
                bench::site_generate(panel_servers, out.as_deref())
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
