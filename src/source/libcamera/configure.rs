//! Configuring a libcamera camera: roles and sizes (with the second output when it comes at the
//! asked size), pixel format, orientation, and the controls it starts with.

use libcamera::camera::{ActiveCamera, CameraConfiguration, CameraConfigurationStatus, Orientation};
use libcamera::control::ControlList;
use libcamera::control_value::ControlValue;
use libcamera::geometry::Size;
use libcamera::pixel_format::PixelFormat;
use libcamera::stream::{Stream, StreamRole};

use super::convert::Rgb24;
use super::settings::{check_lores, frame_duration_limits, resolve_controls, ControlSetting, ControlVal, Flip};
use crate::config::PipelineConfig;
use crate::pipeline::frames::FrameLayout;

/// Requests in flight at most (and buffers per stream): enough for the ISP's pipeline depth,
/// few for latency.
const MAX_REQUESTS: u32 = 6;
const MIN_REQUESTS: u32 = 3;

/// Formats the encoders read, best first: the Pi ISP's native YUV420, then NV12 (the virtual
/// and simple pipelines), then YUYV. Packed RGB (vimc) is accepted too and converted.
const FORMATS: [[u8; 4]; 3] = [*b"YU12", *b"NV12", *b"YUYV"];

fn pixel_format(fourcc: [u8; 4]) -> PixelFormat {
    PixelFormat::new(u32::from_le_bytes(fourcc), 0)
}

pub(super) fn fourcc(p: PixelFormat) -> [u8; 4] {
    p.fourcc().to_le_bytes()
}

fn orientation(f: Flip) -> Orientation {
    match (f.hflip, f.vflip) {
        (false, false) => Orientation::Rotate0,
        (true, false) => Orientation::Rotate0Mirror,
        (false, true) => Orientation::Rotate180Mirror,
        (true, true) => Orientation::Rotate180,
    }
}

/// One validated stream: its handle, layout and buffer count.
pub(super) fn stream_of(config: &CameraConfiguration, i: usize) -> Result<(Stream, FrameLayout, u32), String> {
    let sc = config.get(i).ok_or("missing stream configuration")?;
    let size = sc.get_size();
    let layout = FrameLayout {
        fourcc: fourcc(sc.get_pixel_format()),
        width: size.width,
        height: size.height,
        stride: sc.get_stride(),
    };
    let stream = sc.stream().ok_or("stream not configured")?;
    Ok((stream, layout, sc.get_buffer_count().clamp(MIN_REQUESTS, MAX_REQUESTS)))
}

/// Generates and validates the configuration: VideoRecording at the stream's size, plus a
/// Viewfinder output at `lores` when asked for and the pipeline gives it as asked. Returns
/// whether the second output is in.
pub(super) fn configure(
    cam: &ActiveCamera<'static>,
    cfg: &PipelineConfig,
    lores: Option<(u32, u32)>,
    name: &str,
) -> Result<(CameraConfiguration, bool), String> {
    if let Some(size) = lores {
        let attempt = cam.generate_configuration(&[StreamRole::VideoRecording, StreamRole::ViewFinder]);
        let reason = match attempt {
            None => "the pipeline cannot generate VideoRecording + Viewfinder".to_owned(),
            Some(mut config) => match fill(&mut config, cfg, Some(size), name) {
                Ok(()) => {
                    let got = config.get(1).map(|s| {
                        let z = s.get_size();
                        ((z.width, z.height), fourcc(s.get_pixel_format()))
                    });
                    match check_lores(size, got) {
                        Ok(()) => {
                            log::info!(
                                "{name}: the {}x{} stream comes from the ISP's second output (Viewfinder role), not the scaler",
                                size.0,
                                size.1
                            );
                            return Ok((config, true));
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            },
        };
        log::warn!("{name}: {reason}: the {}x{} stream is scaled in software instead", size.0, size.1);
    }
    let mut config = cam
        .generate_configuration(&[StreamRole::VideoRecording])
        .ok_or_else(|| format!("{name}: the pipeline cannot generate a VideoRecording configuration"))?;
    fill(&mut config, cfg, None, name)?;
    Ok((config, false))
}

/// Sets sizes, format and orientation, validates, and checks the main stream is as asked.
fn fill(
    config: &mut CameraConfiguration,
    cfg: &PipelineConfig,
    lores: Option<(u32, u32)>,
    name: &str,
) -> Result<(), String> {
    for (i, (w, h)) in std::iter::once((cfg.width, cfg.height)).chain(lores).enumerate() {
        let mut sc = config.get_mut(i).ok_or("missing stream configuration")?;
        sc.set_size(Size { width: w, height: h });
        sc.set_pixel_format(pixel_format(FORMATS[0]));
        let count = sc.get_buffer_count().clamp(MIN_REQUESTS, MAX_REQUESTS);
        sc.set_buffer_count(count);
    }
    let want = orientation(cfg.libcamera.flip);
    config.set_orientation(want);
    // Offered formats before validation may move them (for the error message).
    let offered = config.get(0).map(|sc| {
        let f = sc.formats();
        let mut out = Vec::new();
        let pfs = f.pixel_formats();
        for pf in pfs.value() {
            let sizes: Vec<String> = f.sizes(pf).iter().map(|s| format!("{}x{}", s.width, s.height)).collect();
            let r = f.range(pf);
            out.push(format!(
                "{pf}: {} (range {}x{} to {}x{})",
                if sizes.is_empty() { "-".into() } else { sizes.join(" ") },
                r.min.width,
                r.min.height,
                r.max.width,
                r.max.height
            ));
        }
        out.join("; ")
    });
    let status = config.validate();
    if matches!(status, CameraConfigurationStatus::Invalid) {
        return Err(format!("{name}: configuration invalid; the camera offers {}", offered.unwrap_or_default()));
    }
    for i in 0..config.len() {
        let Some(sc) = config.get(i) else { continue };
        let f = fourcc(sc.get_pixel_format());
        if Rgb24::of_fourcc(f).is_some() {
            log::info!(
                "{name}: stream {i} comes as {} (the pipeline offers no YUV): converted to I420 in the frame copy",
                sc.get_pixel_format()
            );
        } else if !FORMATS.contains(&f) {
            return Err(format!(
                "{name}: stream {i} would come as {}, which the encoders do not read; the camera offers {}",
                sc.get_pixel_format(),
                offered.clone().unwrap_or_default()
            ));
        }
    }
    let main = config.get(0).ok_or("missing stream configuration")?;
    let size = main.get_size();
    if (size.width, size.height) != (cfg.width, cfg.height) {
        return Err(format!(
            "{name} cannot give {}x{} (it proposed {}x{}); it offers {}",
            cfg.width,
            cfg.height,
            size.width,
            size.height,
            offered.unwrap_or_default()
        ));
    }
    if config.orientation() != want {
        log::warn!(
            "{name}: hflip/vflip/rotation asked for {want:?}, the camera gives {:?} (it cannot flip)",
            config.orientation()
        );
    }
    Ok(())
}

/// A control the camera was started with, to compare with what its requests report.
#[derive(Debug, Clone)]
pub(super) struct SetControl {
    pub name: String,
    pub id: u32,
    pub value: ControlVal,
}

/// The controls the camera starts with: the configured ones it offers (the rest are warnings
/// naming the key) and the frame rate through `FrameDurationLimits`; with the list of those set.
pub(super) fn start_controls(
    cam: &ActiveCamera<'static>,
    cfg: &PipelineConfig,
    name: &str,
) -> Result<(libcamera::utils::UniquePtr<ControlList>, Vec<SetControl>), String> {
    let mut list = ControlList::from_info_map(cam.controls()).ok_or("cannot create a control list")?;
    let ids: Vec<(String, u32)> = list
        .id_map()
        .and_then(|m| m.iter())
        .map(|it| it.map(|(id, c)| (c.name().to_owned(), id)).collect())
        .unwrap_or_default();
    let offered: Vec<(String, u32)> = ids.into_iter().filter(|(_, id)| cam.controls().find(*id).is_ok()).collect();
    let has = |n: &str| offered.iter().any(|(o, _)| o == n);
    let mut settings = cfg.libcamera.controls.clone();
    settings.push(ControlSetting {
        key: "fps".into(),
        value: cfg.fps.to_string(),
        targets: vec![vec![("FrameDurationLimits", ControlVal::I64Pair(frame_duration_limits(cfg.fps)))]],
        quiet: true,
    });
    let r = resolve_controls(&settings, &has);
    for w in &r.warnings {
        log::warn!("{name}: {w}");
    }
    for n in &r.notes {
        log::info!("{name}: {n}");
    }
    let mut set = Vec::new();
    for (control, val) in &r.set {
        let Some(&(_, id)) = offered.iter().find(|(o, _)| o == control) else { continue };
        match list.set_raw(id, control_value(*val)) {
            Ok(()) => {
                log::info!("{name}: control {control} = {val:?}");
                set.push(SetControl { name: (*control).to_owned(), id, value: *val });
            }
            Err(e) => log::warn!("{name}: control {control} = {val:?} refused: {e:?}; ignored"),
        }
    }
    Ok((list, set))
}

pub(super) fn control_value(v: ControlVal) -> ControlValue {
    match v {
        ControlVal::Bool(b) => ControlValue::from(b),
        ControlVal::Int(i) => ControlValue::from(i),
        ControlVal::Float(f) => ControlValue::from(f.0),
        ControlVal::I64Pair(p) => ControlValue::from(p),
    }
}

/// Puts the start controls on `req` too: some pipeline handlers ignore the list `start()` gets
/// (vimc's in libcamera 0.4 does) and apply only what requests carry.
pub(super) fn put_controls(req: &mut libcamera::request::Request, set: &[SetControl], name: &str) {
    for c in set {
        if let Err(e) = req.controls_mut().set_raw(c.id, control_value(c.value)) {
            log::warn!("{name}: control {} on the first request refused: {e:?}", c.name);
        }
    }
}

/// A control value as the read-back line prints it: scalars plain (`0.5`), arrays `[a, b]`.
fn value_text(v: &ControlValue) -> String {
    fn list<T: std::fmt::Display>(v: &[T]) -> String {
        match v {
            [one] => one.to_string(),
            many => format!("[{}]", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        }
    }
    match v {
        ControlValue::Bool(v) => list(v),
        ControlValue::Byte(v) => list(v),
        ControlValue::Uint16(v) => list(v),
        ControlValue::Uint32(v) => list(v),
        ControlValue::Int32(v) => list(v),
        ControlValue::Int64(v) => list(v),
        ControlValue::Float(v) => list(v),
        other => format!("{other:?}"),
    }
}

fn val_text(v: &ControlVal) -> String {
    match v {
        ControlVal::Bool(b) => b.to_string(),
        ControlVal::Int(i) => i.to_string(),
        ControlVal::Float(f) => f.0.to_string(),
        ControlVal::I64Pair([a, b]) => format!("[{a}, {b}]"),
    }
}

/// The line that compares the controls the camera started with against a completed request's
/// metadata (what the pipeline handler and its IPA report they applied), and names every
/// control the metadata carries.
pub(super) fn readback_line(set: &[SetControl], metadata: &ControlList) -> String {
    let reported: Vec<(u32, ControlValue)> = metadata.into_iter().collect();
    let mut parts: Vec<String> = set
        .iter()
        .map(|c| match reported.iter().find(|(id, _)| *id == c.id) {
            Some((_, v)) => {
                let (got, want) = (value_text(v), val_text(&c.value));
                let verdict = if got == want { "matches" } else { "differs" };
                format!("{} = {got} (set {want}: {verdict})", c.name)
            }
            None => format!("{} not reported (set {})", c.name, val_text(&c.value)),
        })
        .collect();
    let names: Vec<String> = reported
        .iter()
        .map(|(id, _)| match libcamera::controls::ControlId::try_from(*id) {
            Ok(c) => format!("{c:?}"),
            Err(_) => format!("0x{id:x}"),
        })
        .collect();
    parts.push(format!("the metadata carries {}", if names.is_empty() { "nothing".into() } else { names.join(", ") }));
    format!("controls read back from request metadata: {}", parts.join("; "))
}
