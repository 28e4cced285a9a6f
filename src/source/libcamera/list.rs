//! `uavstream --list-devices` for libcamera: every camera with its index, id and model, the
//! sensor modes (raw formats and sizes) and what the VideoRecording role offers.

use std::fmt::Write;

use libcamera::stream::StreamRole;

use super::capture::{entries, manager};

/// The listing, or why libcamera could not be asked.
pub fn list_devices() -> String {
    let mgr = match manager() {
        Ok(m) => m,
        Err(e) => return format!("libcamera: {e}\n"),
    };
    let cams = entries(&mgr);
    let list = mgr.cameras();
    let mut out = format!("libcamera {} cameras (source=libcamera device=INDEX|ID|MODEL):\n", mgr.version());
    if cams.is_empty() {
        out.push_str("  none\n");
    }
    for (i, entry) in cams.iter().enumerate() {
        let _ = writeln!(out, "  {i}: {} id {}", entry.model, entry.id);
        let Some(cam) = list.get(i) else { continue };
        for (role, label) in [(StreamRole::Raw, "sensor modes (raw)"), (StreamRole::VideoRecording, "VideoRecording")] {
            let Some(config) = cam.generate_configuration(&[role]) else {
                let _ = writeln!(out, "     {label}: not offered");
                continue;
            };
            let Some(sc) = config.get(0) else { continue };
            let f = sc.formats();
            let _ = writeln!(out, "     {label}:");
            let pfs = f.pixel_formats();
            for pf in pfs.value() {
                let sizes: Vec<String> = f.sizes(pf).iter().map(|s| format!("{}x{}", s.width, s.height)).collect();
                let r = f.range(pf);
                let _ = writeln!(
                    out,
                    "       {pf}: {} (range {}x{} to {}x{})",
                    if sizes.is_empty() { "-".to_owned() } else { sizes.join(" ") },
                    r.min.width,
                    r.min.height,
                    r.max.width,
                    r.max.height
                );
            }
        }
        let two = cam.generate_configuration(&[StreamRole::VideoRecording, StreamRole::ViewFinder]).is_some();
        let _ = writeln!(
            out,
            "     second output (Viewfinder role) for a smaller stream: {}",
            if two { "offered" } else { "not offered (the smaller stream is scaled in software)" }
        );
    }
    out
}
