//! The `fieldtwin` command line. Only argument parsing lives here; the
//! wiring of a site is in [`app`], the table printing in [`report`].

mod app;
mod firmware;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Build and check signed firmware images.
    Firmware {
        #[command(subcommand)]
        command: firmware::FirmwareCmd,
    },
    /// Show or check site files.
    Site {
        #[command(subcommand)]
        command: SiteCmd,
    },
}

#[derive(Debug, Subcommand)]
enum SiteCmd {
    /// Print the embedded default site (or FILE) as TOML.
    Show { file: Option<PathBuf> },
    /// Validate a site file; exits non-zero and names the field on error.
    Check { file: PathBuf },
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
        Cmd::Devices { api } => report::devices(api),
        Cmd::Firmware { command } => firmware::run(command),
        Cmd::Site { command } => match command {
            SiteCmd::Show { file } => app::site_show(file.as_deref()),
            SiteCmd::Check { file } => app::site_check(&file),
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
