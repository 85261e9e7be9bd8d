//! `fieldtwin firmware keygen | sign | inspect`: builds and checks signed
//! Panel Server firmware images (format in
//! fieldtwin_models::proto::firmware, docs/panel-server.md). The lab vendor
//! key in keys/ is lab-only.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use fieldtwin_models::proto::firmware;

#[derive(Debug, Subcommand)]
pub enum FirmwareCmd {
    /// Make an Ed25519 key pair: OUT.key (secret seed, hex) and OUT.pub.
    Keygen {
        /// Path prefix of the two files.
        out: PathBuf,
    },
    /// Sign PAYLOAD into a firmware image.
    Sign {
        /// Secret key file (hex), e.g. keys/lab-vendor.key.
        #[arg(long)]
        key: PathBuf,
        /// Version, MMM.mmm.ppp (e.g. 002.003.000).
        #[arg(long)]
        version: String,
        /// Target model family.
        #[arg(long, default_value = firmware::PANEL_SERVER_FAMILY)]
        family: String,
        /// Payload file (any bytes).
        payload: PathBuf,
        /// Image file to write.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print an image's header and check its signature (lab key unless --public).
    Inspect {
        image: PathBuf,
        /// Public key file (hex).
        #[arg(long)]
        public: Option<PathBuf>,
    },
}

fn read(p: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
}

pub fn run(cmd: FirmwareCmd) -> anyhow::Result<()> {
    match cmd {
        FirmwareCmd::Keygen { out } => {
            let (secret, public) = firmware::keygen();
            let k = out.with_extension("key");
            let p = out.with_extension("pub");
            std::fs::write(&k, format!("{secret}\n"))
                .with_context(|| format!("cannot write {}", k.display()))?;
            std::fs::write(&p, format!("{public}\n"))
                .with_context(|| format!("cannot write {}", p.display()))?;
            println!("wrote {} and {}", k.display(), p.display());
        }
        FirmwareCmd::Sign {
            key,
            version,
            family,
            payload,
            out,
        } => {
            let sk = firmware::signing_key(&String::from_utf8_lossy(&read(&key)?))?;
            let img = firmware::sign(&sk, &family, &version, &read(&payload)?)?;
            std::fs::write(&out, &img)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "wrote {} ({} bytes, {family} {version})",
                out.display(),
                img.len()
            );
        }
        FirmwareCmd::Inspect { image, public } => {
            let public = public.map(|p| read(&p)).transpose()?;
            let public = public
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let report = firmware::inspect(&read(&image)?, public.as_deref())?;
            print!("{report}");
            if !report.contains("signature: valid") {
                anyhow::bail!("the signature does not verify");
            }
        }
    }
    Ok(())
}
