//! The pure parts of `source=libcamera`, built with or without the `libcamera` feature so the
//! configuration can be checked (and unit-tested) anywhere: camera controls parsed from the
//! configuration and resolved against what a camera offers, camera choice by index, id or
//! model, the size of the ISP's second (Viewfinder) output, and request pacing.
//!
//! Invariants:
//! - Controls are named by libcamera's control names (`AeMeteringMode`), never by numeric id:
//!   ids and even some controls differ between libcamera releases (0.4 has `AeEnable`, 0.5+
//!   `ExposureTimeMode`/`AnalogueGainMode`), so a setting lists alternatives and the first one the
//!   camera offers is used. A setting the camera offers none of is a warning naming the key, never
//!   an error.
//! - Enumerated values are libcamera's (`control_ids_core.yaml`), stable across releases.

use std::time::{Duration, Instant};

/// A float parsed from the configuration: finite, so it is `Eq` by bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Real(pub f32);

impl Eq for Real {}

/// A control value as libcamera types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlVal {
    Bool(bool),
    Int(i32),
    Float(Real),
    /// `FrameDurationLimits`: minimum and maximum frame duration in µs.
    I64Pair([i64; 2]),
}

/// One configuration key's wish for the camera: the first of `targets` whose controls the camera
/// offers is set (every control of that alternative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSetting {
    /// The key as the operator spelled it in `--print-config` terms (`camera2.ev`).
    pub key: String,
    /// The value as configured, for log lines.
    pub value: String,
    /// Alternatives, best first; each is a list of (libcamera control name, value).
    pub targets: Vec<Vec<(&'static str, ControlVal)>>,
    /// A default the operator never asked for: unsupported is a debug line, not a warning.
    pub quiet: bool,
}

/// How the picture is flipped: libcamera's `Orientation` as (mirror, vertical flip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flip {
    pub hflip: bool,
    pub vflip: bool,
}

/// Everything `source=libcamera` takes from a camera's keys besides size and rate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LibcameraSettings {
    pub controls: Vec<ControlSetting>,
    pub flip: Flip,
    /// `tuning-file`: exported as `LIBCAMERA_RPI_TUNING_FILE` before libcamera starts.
    pub tuning_file: Option<std::path::PathBuf>,
}

/// Parses one control key. `value` is trimmed; an empty value means "the camera's default" and
/// gives no setting. Errors are the reason for the configuration error.
pub fn parse_control(key: &str, value: &str) -> Result<Vec<ControlSetting>, String> {
    let base = key.rsplit('.').next().unwrap_or(key);
    if value.is_empty() {
        if base == "denoise" {
            // Nothing asked for: the low-latency choice, quietly where the camera has it.
            let mut s = parse_control(key, "fast")?;
            for c in &mut s {
                c.quiet = true;
                c.value = "auto (fast)".into();
            }
            return Ok(s);
        }
        return Ok(Vec::new());
    }
    let one = |targets: Vec<Vec<(&'static str, ControlVal)>>| {
        vec![ControlSetting { key: key.to_owned(), value: value.to_owned(), targets, quiet: false }]
    };
    let float = |min: f32, max: f32| -> Result<ControlVal, String> {
        match value.parse::<f32>() {
            Ok(x) if x.is_finite() && (min..=max).contains(&x) => Ok(ControlVal::Float(Real(x))),
            _ => Err(format!("expected a number from {min} to {max}")),
        }
    };
    let choice =
        |names: &[(&str, i32)]| -> Result<ControlVal, String> {
            names.iter().find(|(n, _)| n.eq_ignore_ascii_case(value)).map(|(_, v)| ControlVal::Int(*v)).ok_or_else(
                || format!("expected one of {}", names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
            )
        };
    Ok(match base {
        "exposure-time" => {
            let us: i32 = value
                .parse()
                .ok()
                .filter(|us| (1..=60_000_000).contains(us))
                .ok_or("expected microseconds from 1 to 60000000, e.g. 10000")?;
            let mut s = one(vec![vec![("ExposureTime", ControlVal::Int(us))]]);
            s.extend(one(vec![
                vec![("ExposureTimeMode", ControlVal::Int(1))],
                vec![("AeEnable", ControlVal::Bool(false))],
            ]));
            s
        }
        "analogue-gain" => {
            let mut s = one(vec![vec![("AnalogueGain", float(1.0, 64.0)?)]]);
            s.extend(one(vec![
                vec![("AnalogueGainMode", ControlVal::Int(1))],
                vec![("AeEnable", ControlVal::Bool(false))],
            ]));
            s
        }
        "ae" => {
            let on = parse_bool(value)?;
            let mode = ControlVal::Int(if on { 0 } else { 1 });
            let mut s = one(vec![vec![("ExposureTimeMode", mode)], vec![("AeEnable", ControlVal::Bool(on))]]);
            s.extend(one(vec![vec![("AnalogueGainMode", mode)], vec![("AeEnable", ControlVal::Bool(on))]]));
            s
        }
        "ae-metering" => one(vec![vec![("AeMeteringMode", choice(&[("centre", 0), ("spot", 1), ("matrix", 2)])?)]]),
        "ev" => one(vec![vec![("ExposureValue", float(-8.0, 8.0)?)]]),
        "awb" => one(vec![vec![(
            "AwbMode",
            choice(&[
                ("auto", 0),
                ("incandescent", 1),
                ("tungsten", 2),
                ("fluorescent", 3),
                ("indoor", 4),
                ("daylight", 5),
                ("cloudy", 6),
            ])?,
        )]]),
        "brightness" => one(vec![vec![("Brightness", float(-1.0, 1.0)?)]]),
        "contrast" => one(vec![vec![("Contrast", float(0.0, 32.0)?)]]),
        "saturation" => one(vec![vec![("Saturation", float(0.0, 32.0)?)]]),
        "sharpness" => one(vec![vec![("Sharpness", float(0.0, 16.0)?)]]),
        "denoise" => one(vec![vec![(
            "NoiseReductionMode",
            choice(&[("off", 0), ("fast", 1), ("high-quality", 2), ("minimal", 3), ("zsl", 4)])?,
        )]]),
        "af-mode" => one(vec![vec![("AfMode", choice(&[("manual", 0), ("auto", 1), ("continuous", 2)])?)]]),
        "lens-position" => {
            // A lens position means manual focus (libcamera ignores it in the other AF modes).
            let mut s = one(vec![vec![("LensPosition", float(0.0, 32.0)?)]]);
            s.extend(one(vec![vec![("AfMode", ControlVal::Int(0))]]));
            s
        }
        _ => return Err(format!("{key} is not a libcamera control key")),
    })
}

/// The control keys, in the order they are applied.
pub const CONTROL_KEYS: [&str; 13] = [
    "ae",
    "exposure-time",
    "analogue-gain",
    "ae-metering",
    "ev",
    "awb",
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "denoise",
    "af-mode",
    "lens-position",
];

/// `0`/`1`, `off`/`on`, `false`/`true`, `no`/`yes`.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Ok(true),
        "0" | "off" | "false" | "no" => Ok(false),
        _ => Err("expected on or off (1/0, true/false, yes/no)".into()),
    }
}

/// `hflip`, `vflip` and `rotation` (0 or 180) as one flip: a 180° rotation is both flips.
pub fn flip_of(hflip: bool, vflip: bool, rotation: u32) -> Result<Flip, String> {
    let turn = match rotation {
        0 => false,
        180 => true,
        _ => return Err("expected 0 or 180 (the sensor cannot rotate by 90 degrees)".into()),
    };
    Ok(Flip { hflip: hflip ^ turn, vflip: vflip ^ turn })
}

/// What the camera takes: per control name, the value to set. Settings whose every alternative
/// names a control the camera lacks come back as warnings (or, for quiet defaults, notes).
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    pub set: Vec<(&'static str, ControlVal)>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

/// Resolves settings against the control names a camera offers.
pub fn resolve_controls(settings: &[ControlSetting], offered: &dyn Fn(&str) -> bool) -> Resolved {
    let mut r = Resolved::default();
    for s in settings {
        match s.targets.iter().find(|alt| alt.iter().all(|(name, _)| offered(name))) {
            Some(alt) => {
                for &(name, val) in alt {
                    match r.set.iter_mut().find(|(n, _)| *n == name) {
                        Some(slot) => slot.1 = val,
                        None => r.set.push((name, val)),
                    }
                }
            }
            None => {
                let names: Vec<&str> = s.targets.iter().map(|alt| alt[0].0).collect();
                let line = format!("{}={}: the camera has no {} control; ignored", s.key, s.value, names.join(" or "));
                if s.quiet {
                    r.notes.push(line);
                } else {
                    r.warnings.push(line);
                }
            }
        }
    }
    r
}

/// Which libcamera camera `device=` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraSelector {
    /// `auto`: the first camera libcamera lists.
    First,
    /// `0`, `1`, …: the camera at that place in `--list-devices` (rpicam-apps' `--camera N`).
    Index(usize),
    /// A camera id (`/base/axi/pcie@120000/rp1/i2c@88000/imx477@1a`), or a model or a part of an
    /// id (`imx477`), case-insensitive.
    Named(String),
}

impl CameraSelector {
    pub fn parse(device: &str) -> CameraSelector {
        match device {
            "" | "auto" => CameraSelector::First,
            d if d.bytes().all(|b| b.is_ascii_digit()) => {
                d.parse().map_or(CameraSelector::Named(d.into()), CameraSelector::Index)
            }
            d => CameraSelector::Named(d.into()),
        }
    }
}

/// A camera as libcamera lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraEntry {
    pub id: String,
    pub model: String,
}

/// The index of the camera `sel` names. A name matches an id exactly, else a model exactly,
/// else a part of an id or model; more than one camera matching is an error (say which).
pub fn select_camera(cams: &[CameraEntry], sel: &CameraSelector) -> Result<usize, String> {
    let listing = || {
        if cams.is_empty() {
            "libcamera lists no camera".to_owned()
        } else {
            let list: Vec<String> =
                cams.iter().enumerate().map(|(i, c)| format!("{i}: {} ({})", c.model, c.id)).collect();
            format!("libcamera lists {}", list.join(", "))
        }
    };
    match sel {
        CameraSelector::First if !cams.is_empty() => Ok(0),
        CameraSelector::First => Err(listing()),
        CameraSelector::Index(i) if *i < cams.len() => Ok(*i),
        CameraSelector::Index(i) => Err(format!("no libcamera camera {i}: {}", listing())),
        CameraSelector::Named(name) => {
            let lower = name.to_ascii_lowercase();
            if let Some(i) = cams.iter().position(|c| c.id == *name) {
                return Ok(i);
            }
            let exact: Vec<usize> = (0..cams.len()).filter(|&i| cams[i].model.eq_ignore_ascii_case(name)).collect();
            let partial: Vec<usize> = (0..cams.len())
                .filter(|&i| {
                    cams[i].id.to_ascii_lowercase().contains(&lower)
                        || cams[i].model.to_ascii_lowercase().contains(&lower)
                })
                .collect();
            let found = if exact.is_empty() { partial } else { exact };
            match found.as_slice() {
                [i] => Ok(*i),
                [] => Err(format!("no libcamera camera matches {name:?}: {}", listing())),
                _ => Err(format!(
                    "{name:?} matches several cameras ({}): name one by index or id; {}",
                    found.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
                    listing()
                )),
            }
        }
    }
}

/// The size to ask the ISP's second output (the Viewfinder role, the Pi's "lores") for: the first
/// of the camera's further streams that is smaller than the main stream in both directions.
pub fn lores_size(main: (u32, u32), further: &[(u32, u32)]) -> Option<(u32, u32)> {
    further.iter().copied().find(|&(w, h)| w <= main.0 && h <= main.1 && (w, h) != main)
}

/// Whether the second output libcamera validated serves the stream that asked for `wanted`:
/// the same size, in a format the encoders read. The error is why the scaler is used instead.
pub fn check_lores(wanted: (u32, u32), got: Option<((u32, u32), [u8; 4])>) -> Result<(), String> {
    match got {
        None => Err("the pipeline offers no second stream".into()),
        Some((size, _)) if size != wanted => Err(format!(
            "the pipeline adjusted the second stream to {}x{} (asked {}x{})",
            size.0, size.1, wanted.0, wanted.1
        )),
        Some((_, f)) if !matches!(&f, b"YU12" | b"NV12" | b"YUYV") => {
            Err(format!("the second stream comes as {}, which the encoders do not read", String::from_utf8_lossy(&f)))
        }
        Some(_) => Ok(()),
    }
}

/// Re-queueing policy for cameras that do not pace their frames.
///
/// A real camera completes one request per frame interval and each is re-queued at once. Some
/// complete a request as soon as it is queued (libcamera 0.4's `virtual` handler): a request
/// that completes less than a quarter interval after the last delivered frame is parked and
/// re-queued, one at a time, a frame interval after that frame. So such a camera gives the
/// configured rate instead of spinning a core.
#[derive(Debug, Clone)]
pub struct RequeuePacer {
    interval: Duration,
    last: Option<Instant>,
    unpaced: bool,
}

/// What to do with a completed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Use its frame and re-queue it at once.
    Deliver,
    /// Keep it until [`RequeuePacer::release_at`].
    Park,
}

impl RequeuePacer {
    pub fn new(fps: u32) -> RequeuePacer {
        RequeuePacer { interval: Duration::from_secs(1) / fps.max(1), last: None, unpaced: false }
    }

    /// A request completed at `at`. The first time a camera is found not to pace itself, the
    /// second value is `true` (log it once).
    pub fn on_completed(&mut self, at: Instant) -> (Verdict, bool) {
        match self.last {
            Some(last) if at < last + self.interval / 4 => {
                let first = !self.unpaced;
                self.unpaced = true;
                (Verdict::Park, first)
            }
            _ => {
                self.last = Some(at);
                (Verdict::Deliver, false)
            }
        }
    }

    /// The configured frame interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When a parked request goes back to the camera.
    pub fn release_at(&self) -> Option<Instant> {
        self.last.map(|t| t + self.interval)
    }

    pub fn unpaced(&self) -> bool {
        self.unpaced
    }
}

/// The frame durations (µs) that ask for `fps`: `FrameDurationLimits` min = max.
pub fn frame_duration_limits(fps: u32) -> [i64; 2] {
    let us = 1_000_000 / i64::from(fps.max(1));
    [us, us]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &[ControlSetting], offered: &[&str]) -> Resolved {
        resolve_controls(s, &|n| offered.contains(&n))
    }

    #[test]
    fn controls_parse_to_libcamera_names_and_values() {
        let s = parse_control("ae-metering", "Spot").unwrap();
        assert_eq!(s[0].targets, vec![vec![("AeMeteringMode", ControlVal::Int(1))]]);
        let s = parse_control("camera2.awb", "daylight").unwrap();
        assert_eq!((s[0].key.as_str(), s[0].targets[0][0]), ("camera2.awb", ("AwbMode", ControlVal::Int(5))));
        assert_eq!(parse_control("ev", "-1.5").unwrap()[0].targets[0][0].1, ControlVal::Float(Real(-1.5)));
        assert!(parse_control("ev", "9").unwrap_err().contains("-8"));
        assert!(parse_control("ev", "NaN").is_err());
        assert!(parse_control("awb", "sunny").unwrap_err().contains("daylight"));
        assert!(parse_control("exposure-time", "0").is_err());
        assert!(parse_control("exposure-time", "1e3").is_err());
        assert!(parse_control("ae", "maybe").is_err());
        assert_eq!(parse_control("brightness", "").unwrap(), vec![]);
        let d = parse_control("denoise", "").unwrap();
        assert!(d[0].quiet && d[0].targets[0][0] == ("NoiseReductionMode", ControlVal::Int(1)));
        assert!(!parse_control("denoise", "off").unwrap()[0].quiet);
        for k in CONTROL_KEYS {
            assert!(parse_control(k, "").is_ok(), "{k}");
        }
    }

    #[test]
    fn manual_exposure_uses_the_mode_controls_of_the_release_the_camera_has() {
        let s = parse_control("exposure-time", "10000").unwrap();
        // libcamera 0.4: AeEnable.
        let old = names(&s, &["ExposureTime", "AeEnable", "AnalogueGain"]);
        assert_eq!(old.set, vec![("ExposureTime", ControlVal::Int(10000)), ("AeEnable", ControlVal::Bool(false))]);
        // 0.5+: ExposureTimeMode manual, gain stays automatic.
        let new = names(&s, &["ExposureTime", "ExposureTimeMode", "AnalogueGainMode"]);
        assert_eq!(new.set, vec![("ExposureTime", ControlVal::Int(10000)), ("ExposureTimeMode", ControlVal::Int(1))]);
        assert!(old.warnings.is_empty() && new.warnings.is_empty());
    }

    #[test]
    fn an_unsupported_control_is_a_warning_naming_it() {
        let mut s = parse_control("sharpness", "2").unwrap();
        s.extend(parse_control("brightness", "0.2").unwrap());
        s.extend(parse_control("denoise", "").unwrap());
        let r = names(&s, &["Brightness"]);
        assert_eq!(r.set, vec![("Brightness", ControlVal::Float(Real(0.2)))]);
        assert_eq!(r.warnings, vec!["sharpness=2: the camera has no Sharpness control; ignored".to_owned()]);
        assert_eq!(r.notes.len(), 1, "the quiet default is only a note");
    }

    #[test]
    fn lens_position_means_manual_focus() {
        let mut s = parse_control("af-mode", "continuous").unwrap();
        s.extend(parse_control("lens-position", "2.5").unwrap());
        let r = names(&s, &["AfMode", "LensPosition"]);
        assert_eq!(r.set, vec![("AfMode", ControlVal::Int(0)), ("LensPosition", ControlVal::Float(Real(2.5)))]);
        assert_eq!(names(&s, &[]).warnings.len(), 3, "a camera without AF warns for each");
    }

    #[test]
    fn flips_and_rotation_compose() {
        assert_eq!(flip_of(false, false, 180).unwrap(), Flip { hflip: true, vflip: true });
        assert_eq!(flip_of(true, false, 180).unwrap(), Flip { hflip: false, vflip: true });
        assert_eq!(flip_of(true, true, 0).unwrap(), Flip { hflip: true, vflip: true });
        assert!(flip_of(false, false, 90).is_err());
    }

    fn cams() -> Vec<CameraEntry> {
        vec![
            CameraEntry { id: "/base/axi/pcie@120000/rp1/i2c@88000/imx477@1a".into(), model: "imx477".into() },
            CameraEntry { id: "/base/axi/pcie@120000/rp1/i2c@80000/imx708@1a".into(), model: "imx708_wide".into() },
            CameraEntry { id: "Virtual0".into(), model: "Virtual0".into() },
        ]
    }

    #[test]
    fn cameras_are_chosen_by_index_id_or_model() {
        let c = cams();
        let sel = |s: &str| select_camera(&c, &CameraSelector::parse(s));
        assert_eq!(sel("auto"), Ok(0));
        assert_eq!(sel("1"), Ok(1));
        assert_eq!(sel("IMX477"), Ok(0));
        assert_eq!(sel("imx708"), Ok(1), "a part of the model");
        assert_eq!(sel("/base/axi/pcie@120000/rp1/i2c@80000/imx708@1a"), Ok(1));
        assert_eq!(sel("virtual0"), Ok(2));
        assert!(sel("3").unwrap_err().contains("2: Virtual0"), "the error lists the cameras");
        assert!(sel("imx219").unwrap_err().contains("no libcamera camera matches"));
        assert!(sel("rp1").unwrap_err().contains("several"), "ambiguous names are refused");
        assert!(select_camera(&[], &CameraSelector::First).unwrap_err().contains("no camera"));
        assert_eq!(
            CameraSelector::parse("99999999999999999999999"),
            CameraSelector::Named("99999999999999999999999".into())
        );
    }

    #[test]
    fn the_second_isp_output_serves_the_first_smaller_stream() {
        assert_eq!(lores_size((1920, 1080), &[(1920, 1080), (640, 360), (320, 180)]), Some((640, 360)));
        assert_eq!(lores_size((1280, 720), &[(1280, 720)]), None, "same size: no second output");
        assert_eq!(lores_size((1280, 720), &[(1920, 360)]), None, "wider than the main stream");
        assert!(check_lores((640, 360), Some(((640, 360), *b"YU12"))).is_ok());
        assert!(check_lores((640, 360), Some(((640, 368), *b"YU12"))).unwrap_err().contains("adjusted"));
        assert!(check_lores((640, 360), Some(((640, 360), *b"RGGB"))).is_err());
        assert!(check_lores((640, 360), None).is_err());
    }

    #[test]
    fn an_unpaced_camera_is_paced_by_parking_requests() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = RequeuePacer::new(25);
        assert_eq!(p.on_completed(ms(0)), (Verdict::Deliver, false));
        // Three more complete at once: parked, logged once.
        assert_eq!(p.on_completed(ms(1)), (Verdict::Park, true));
        assert_eq!(p.on_completed(ms(1)), (Verdict::Park, false));
        assert_eq!(p.release_at(), Some(ms(40)));
        assert_eq!(p.on_completed(ms(41)), (Verdict::Deliver, false));
        assert!(p.unpaced());
        // A paced camera at its own rate is never parked.
        let mut q = RequeuePacer::new(30);
        for n in 0..10 {
            assert_eq!(q.on_completed(ms(n * 33)).0, Verdict::Deliver);
        }
        assert!(!q.unpaced());
        assert_eq!(frame_duration_limits(30), [33_333, 33_333]);
    }
}
