//! Human-readable output: the device table printed at start and by the
//! client subcommands.

use fieldtwin_emulator::device::DeviceStatus;

/// Formats devices as an aligned table: id, model, power, addresses,
/// services (name host:port) and logins.
pub fn table(devices: &[DeviceStatus]) -> String {
    let rows: Vec<[String; 6]> = devices
        .iter()
        .map(|d| {
            let addresses = d
                .addresses
                .iter()
                .map(|(i, a)| format!("{i}={a}"))
                .collect::<Vec<_>>()
                .join(" ");
            let services = if d.services.is_empty() {
                "-".to_string()
            } else {
                d.services
                    .iter()
                    .map(|s| format!("{}/{} {}", s.name, s.interface, s.address))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let logins = if d.credentials.is_empty() {
                "-".to_string()
            } else {
                d.credentials
                    .iter()
                    .map(|c| format!("{}: {} / {}", c.service, c.user, c.password))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            [
                d.id.clone(),
                d.model.clone(),
                format!("{:?}", d.power).to_lowercase(),
                addresses,
                services,
                logins,
            ]
        })
        .collect();
    let header = ["DEVICE", "MODEL", "POWER", "ADDRESSES", "SERVICES", "LOGIN"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
