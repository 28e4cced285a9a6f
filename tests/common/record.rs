//! Reading recordings back: segment lists, our own fMP4 reader, ffprobe.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use uavstream::media::fmp4::read;
use uavstream::record::naming::parse_segment_name;

/// The segments in `dir`, in recording order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            Some((parse_segment_name(&name)?.sequence, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// (samples, ticks) of a segment written by us; panics unless it is init + whole fragments.
pub fn parse_complete(path: &Path) -> (u64, u64) {
    let data = fs::read(path).unwrap();
    let (_, mut rest) = read::init(&data).unwrap_or_else(|e| panic!("{}: init {e:?}", path.display()));
    let (mut samples, mut ticks) = (0, 0);
    while !rest.is_empty() {
        let (f, r) = read::fragment(rest).unwrap_or_else(|e| panic!("{}: fragment {e:?}", path.display()));
        assert_eq!(f.moof.base_decode_time, ticks, "{}: tfdt continues", path.display());
        samples += f.moof.sample_count as u64;
        ticks += f.moof.duration();
        rest = r;
    }
    (samples, ticks)
}

/// Length and sample count of the longest prefix made of init + whole fragments.
pub fn complete_prefix(data: &[u8]) -> (usize, u64) {
    let Ok((_, mut rest)) = read::init(data) else { return (0, 0) };
    let mut samples = 0;
    while let Ok((f, r)) = read::fragment(rest) {
        samples += f.moof.sample_count as u64;
        rest = r;
    }
    (data.len() - rest.len(), samples)
}

pub struct Probe {
    pub errors: String,
    pub frames: u64,
    pub duration: f64,
}

pub fn ffprobe(args: &[&str]) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames:format=duration", "-of", "default=nw=1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ffprobe (scripts/test installs ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("").trim().to_string();
    Probe {
        errors: String::from_utf8_lossy(&out.stderr).into_owned(),
        frames: field("nb_read_frames=").parse().unwrap_or(0),
        duration: field("duration=").parse().unwrap_or(0.0),
    }
}

/// A small tmpfs mounted for one test, unmounted on drop; `None` without the right to mount.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("uavstream-tmpfs-{name}-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().unwrap()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("cannot mount a tmpfs (needs root): disk-full test skipped");
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = fs::remove_dir_all(&self.0);
    }
}
