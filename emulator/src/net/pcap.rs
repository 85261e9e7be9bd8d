//! pcap capture of a switch segment: classic libpcap format, link type 1
//! (Ethernet), microsecond timestamps, readable by Wireshark and tshark.
//! The radio sniffer uses the same writer with link type 195
//! (IEEE802_15_4_WITHFCS) and virtual-time stamps.
//!
//! Contract: one file per segment; writing stops (and says so once) when the
//! file reaches its size bound, so a long run cannot fill the disk. Write
//! errors stop the capture, never the network.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::SystemTime;

/// Default bound of one capture file.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// A bounded pcap file.
#[derive(Debug)]
pub struct PcapWriter {
    out: Option<BufWriter<File>>,
    written: u64,
    max: u64,
    name: String,
}

impl PcapWriter {
    /// Creates `path` and writes the global header.
    pub fn create(path: &Path, max: u64) -> std::io::Result<Self> {
        Self::create_linktype(path, max, 1)
    }

    /// Creates `path` for frames of link type `linktype`.
    pub fn create_linktype(path: &Path, max: u64, linktype: u32) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut hdr = Vec::with_capacity(24);
        hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        hdr.extend_from_slice(&2u16.to_le_bytes());
        hdr.extend_from_slice(&4u16.to_le_bytes());
        hdr.extend_from_slice(&0i32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&65535u32.to_le_bytes());
        hdr.extend_from_slice(&linktype.to_le_bytes());
        out.write_all(&hdr)?;
        out.flush()?;
        Ok(Self {
            out: Some(out),
            written: 24,
            max,
            name: path.display().to_string(),
        })
    }

    /// Appends one frame, stamped with the host's time.
    pub fn write(&mut self, frame: &[u8]) {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.write_at(t, frame);
    }

    /// Appends one frame stamped `t` after the Unix epoch.
    pub fn write_at(&mut self, t: std::time::Duration, frame: &[u8]) {
        let Some(out) = self.out.as_mut() else { return };
        let rec = 16 + frame.len() as u64;
        if self.written + rec > self.max {
            tracing::warn!(
                "capture {} reached its bound of {} bytes; capture stopped",
                self.name,
                self.max
            );
            let _ = out.flush();
            self.out = None;
            return;
        }
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
        hdr[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
        hdr[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        hdr[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        let r = out
            .write_all(&hdr)
            .and_then(|_| out.write_all(frame))
            .and_then(|_| out.flush());
        if let Err(e) = r {
            tracing::warn!("capture {} failed: {e}; capture stopped", self.name);
            self.out = None;
        }
        self.written += rec;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records_and_bound() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pcap");
        let mut w = PcapWriter::create(&p, 24 + 2 * (16 + 60)).unwrap();
        w.write(&[0u8; 60]);
        w.write(&[1u8; 60]);
        w.write(&[2u8; 60]); // over the bound: not written
        let data = std::fs::read(&p).unwrap();
        assert_eq!(&data[0..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(data[20..24].try_into().unwrap()), 1);
        assert_eq!(data.len(), 24 + 2 * 76);
    }
}
