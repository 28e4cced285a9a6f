//! Parsing and checking each value, and the cameras and streams against each other.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::{
    AbrSettings, CameraConfig, Codec, ConfigError, EncoderChoice, KeyRef, Multicast, RawConfig, Scope, SourceSpec,
    StreamConfig,
};
use crate::limits;

pub(super) struct Parser<'a> {
    pub(super) raw: &'a RawConfig,
}

impl Parser<'_> {
    pub(super) fn field<T>(&self, k: KeyRef, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        let (v, origin) = self.raw.value(k);
        f(v.trim()).map_err(|reason| ConfigError { key: k.name(), value: v.to_owned(), origin, reason })
    }

    pub(super) fn num(&self, k: KeyRef, min: u32, max: u32) -> Result<u32, ConfigError> {
        self.field(k, |v| {
            let n: u32 = v.parse().map_err(|_| "not a whole number".to_owned())?;
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("must be between {min} and {max}"))
            }
        })
    }

    pub(super) fn camera(&self, n: u8) -> Result<CameraConfig, ConfigError> {
        let k = |name| KeyRef::of(Scope::Camera, name, n);
        let source = self.field(k("source"), |v| match v {
            "testpattern" => Ok(SourceSpec::TestPattern),
            "v4l2" => Ok(SourceSpec::V4l2),
            "libcamera" => Ok(SourceSpec::Libcamera),
            _ => match v.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(SourceSpec::File(PathBuf::from(path))),
                _ => Err("expected testpattern, file:PATH, v4l2 or libcamera".into()),
            },
        })?;
        let libcamera = source == SourceSpec::Libcamera;
        Ok(CameraConfig {
            name: format!("camera{n}"),
            device: self.field(k("device"), |v| {
                let libcamera_name = libcamera && !v.is_empty() && !v.contains(char::is_control);
                if v == "auto" || v.starts_with('/') || libcamera_name {
                    Ok(v.to_owned())
                } else if libcamera {
                    Err("expected auto, a camera index (0, 1, ...), a camera id or a model such as imx477".into())
                } else {
                    Err("expected auto or a device path such as /dev/video0".into())
                }
            })?,
            source,
            pixel_format: self.field(k("pixel-format"), |v| match v {
                "auto" => Ok(None),
                _ if v.len() == 4 && v.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    let b = v.as_bytes();
                    Ok(Some([b[0], b[1], b[2], b[3]]))
                }
                _ => Err("expected auto or a FourCC such as NV12, YU12, YUYV, MJPG, H264".into()),
            })?,
            width: self.field(k("width"), even_dimension)?,
            height: self.field(k("height"), even_dimension)?,
            fps: self.num(k("fps"), 1, limits::MAX_FPS)?,
            snapshot: self.snapshot(n)?,
            raw: self.raw_socket(n)?,
            libcamera: self.libcamera(n)?,
        })
    }

    /// The libcamera keys of camera `n` (parsed whatever the source, so a typo is found early).
    fn libcamera(&self, n: u8) -> Result<crate::source::libcamera::settings::LibcameraSettings, ConfigError> {
        use crate::source::libcamera::settings::{flip_of, parse_bool, parse_control, LibcameraSettings, CONTROL_KEYS};
        let k = |name| KeyRef::of(Scope::Camera, name, n);
        let mut s = LibcameraSettings::default();
        for key in CONTROL_KEYS {
            let r = k(key);
            s.controls.extend(self.field(r, |v| parse_control(&r.name(), v))?);
        }
        let hflip = self.field(k("hflip"), parse_bool)?;
        let vflip = self.field(k("vflip"), parse_bool)?;
        s.flip = self.field(k("rotation"), |v| {
            let deg: u32 = v.parse().map_err(|_| "expected 0 or 180".to_owned())?;
            flip_of(hflip, vflip, deg)
        })?;
        s.tuning_file = self.field(k("tuning-file"), |v| match v {
            "" => Ok(None),
            _ if std::path::Path::new(v).is_file() => Ok(Some(PathBuf::from(v))),
            _ => Err("no such file".into()),
        })?;
        Ok(s)
    }

    /// The `snapshot-*` keys of camera `n`: `None` without a `snapshot-dir`.
    fn snapshot(&self, n: u8) -> Result<Option<crate::record::snapshot::SnapshotSettings>, ConfigError> {
        let k = |name| KeyRef::of(Scope::Camera, name, n);
        let Some(dir) = self.field(k("snapshot-dir"), |v| Ok((!v.is_empty()).then(|| PathBuf::from(v))))? else {
            return Ok(None);
        };
        let mut s = crate::record::snapshot::SnapshotSettings::new(dir);
        s.interval = self.field(k("snapshot-interval"), |v| match v.parse::<f64>() {
            Ok(x) if x.is_finite() && (0.05..=86_400.0).contains(&x) => Ok(std::time::Duration::from_secs_f64(x)),
            _ => Err("expected seconds between 0.05 and 86400, e.g. 1 or 0.5".into()),
        })?;
        s.quality = self.num(k("snapshot-quality"), 1, 100)? as u8;
        s.max_size =
            self.field(k("snapshot-max-size"), |v| if v.is_empty() { Ok(None) } else { parse_size(v).map(Some) })?;
        s.max_age =
            self.field(k("snapshot-max-age"), |v| if v.is_empty() { Ok(None) } else { parse_age(v).map(Some) })?;
        s.min_free = self.field(k("snapshot-min-free"), |v| parse_size(v).map(|b| (b > 0).then_some(b)))?;
        Ok(Some(s))
    }

    /// The `raw-*` keys of camera `n`: `None` without a `raw-socket`.
    fn raw_socket(&self, n: u8) -> Result<Option<crate::raw::RawSettings>, ConfigError> {
        let k = |name| KeyRef::of(Scope::Camera, name, n);
        let mode = self.field(k("raw-socket-mode"), |v| match u32::from_str_radix(v, 8) {
            Ok(m) if m <= 0o777 && !v.is_empty() => Ok(m),
            _ => Err("expected octal permission bits such as 0660 or 0666".into()),
        })?;
        let clients = self.num(k("raw-clients"), 1, limits::MAX_RAW_CLIENTS as u32)? as usize;
        let path = self.field(k("raw-socket"), |v| {
            if v.is_empty() {
                return Ok(None);
            }
            if !v.starts_with('/') || v.ends_with('/') || v.len() > crate::raw::MAX_PATH_BYTES {
                return Err(format!(
                    "expected an absolute file path of at most {} bytes, e.g. /run/uavstream/raw.sock",
                    crate::raw::MAX_PATH_BYTES
                ));
            }
            Ok(Some(PathBuf::from(v)))
        })?;
        if path.is_some() {
            let (v, origin) = self.raw.value(k("source"));
            if v.trim().starts_with("file:") {
                let (p, _) = self.raw.value(k("raw-socket"));
                return Err(ConfigError {
                    key: k("raw-socket").name(),
                    value: p.to_owned(),
                    origin: self.raw.value(k("raw-socket")).1,
                    reason: format!("a file source ({v}, from the {origin}) gives coded frames, not raw ones"),
                });
            }
        }
        Ok(path.map(|path| crate::raw::RawSettings { path, mode, clients }))
    }

    /// Two cameras never share a raw-frame socket.
    pub(super) fn check_unique_raw_sockets(&self, cameras: &[CameraConfig]) -> Result<(), ConfigError> {
        for (i, c) in cameras.iter().enumerate() {
            let Some(raw) = &c.raw else { continue };
            if let Some(o) = cameras[..i].iter().find(|o| o.raw.as_ref().is_some_and(|r| r.path == raw.path)) {
                let k = KeyRef::of(Scope::Camera, "raw-socket", i as u8 + 1);
                let (v, origin) = self.raw.value(k);
                return Err(ConfigError {
                    key: k.name(),
                    value: v.to_owned(),
                    origin,
                    reason: format!("{} already serves raw frames on this socket", o.name),
                });
            }
        }
        Ok(())
    }

    pub(super) fn stream(&self, n: u8, cameras: &[CameraConfig], global_dscp: u8) -> Result<StreamConfig, ConfigError> {
        let k = |name| KeyRef::of(Scope::Stream, name, n);
        let camera = self.field(k("camera"), |v| {
            let c: usize = v.parse().map_err(|_| "not a camera number (1, 2, ...)".to_owned())?;
            if (1..=cameras.len()).contains(&c) {
                Ok(c - 1)
            } else {
                Err(format!("no camera{c}: {} camera(s) configured", cameras.len()))
            }
        })?;
        let cam = &cameras[camera];
        // Size and rate default to the camera's; never more than it gives.
        let at_most = |name, of_camera: u32, what: &'static str, parse: fn(&str) -> Result<u32, String>| {
            self.field(k(name), |v| {
                if v.is_empty() {
                    return Ok(of_camera);
                }
                let x = parse(v)?;
                if x > of_camera {
                    return Err(format!("larger than its camera's {what} ({} gives {of_camera})", cam.name));
                }
                Ok(x)
            })
        };
        let width = at_most("width", cam.width, "width", even_dimension)?;
        let height = at_most("height", cam.height, "height", even_dimension)?;
        let fps = at_most("fps", cam.fps, "frame rate", |v| match v.parse::<u32>() {
            Ok(f) if (1..=limits::MAX_FPS).contains(&f) => Ok(f),
            _ => Err(format!("must be a whole number between 1 and {}", limits::MAX_FPS)),
        })?;
        let dscp = self.field(k("dscp"), |v| {
            if v.is_empty() {
                return Ok(global_dscp);
            }
            match v.parse::<u8>() {
                Ok(d) if d <= 63 => Ok(d),
                _ => Err("must be between 0 and 63".into()),
            }
        })?;
        let record = self.record(n)?;
        let bitrate = self.field(k("bitrate"), parse_bitrate)?;
        let abr = self.abr(n, bitrate)?;
        let st = StreamConfig {
            name: format!("stream{n}"),
            camera,
            record,
            path: self.field(k("path"), |v| {
                if !v.starts_with('/')
                    || v.len() > 64
                    || v.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
                {
                    Err("must start with '/', be at most 64 characters, without spaces, '?' or '#'".into())
                } else {
                    Ok(v.to_owned())
                }
            })?,
            codec: self.field(k("codec"), |v| match v {
                "h264" => Ok(Codec::H264),
                "mjpeg" | "jpeg" => Ok(Codec::Jpeg),
                _ => Err("expected h264 or mjpeg".into()),
            })?,
            encoder: self.field(k("encoder"), |v| match v {
                "auto" => Ok(EncoderChoice::Auto),
                "software" => Ok(EncoderChoice::Software),
                "passthrough" => Ok(EncoderChoice::Passthrough),
                "v4l2" => Ok(EncoderChoice::V4l2),
                _ => Err("expected auto, software, passthrough or v4l2".into()),
            })?,
            width,
            height,
            fps,
            bitrate,
            abr,
            idr_interval: self.num(k("idr-interval"), 0, 100_000)?,
            jpeg_quality: self.num(k("jpeg-quality"), 1, 100)? as u8,
            rtp_dest: self.field(k("rtp-dest"), |v| {
                if v.is_empty() {
                    return Ok(None);
                }
                let addr = match v.parse::<SocketAddr>() {
                    Ok(a) => a,
                    Err(_) => v
                        .to_socket_addrs()
                        .map_err(|e| format!("expected HOST:PORT ({e})"))?
                        .next()
                        .ok_or("HOST has no address")?,
                };
                if addr.port() == 0 {
                    return Err("PORT must not be 0".into());
                }
                Ok(Some(addr))
            })?,
            publish: self.field(k("publish"), |v| {
                if v.is_empty() {
                    return Ok(None);
                }
                crate::rtsp::client::PublishUrl::parse(v).map(Some).map_err(|e| e.to_owned())
            })?,
            sdp_out: self.field(k("sdp-out"), |v| Ok((!v.is_empty()).then(|| PathBuf::from(v))))?,
            dscp,
            multicast: {
                let port = self.field(k("multicast-port"), |v| match v.parse::<u16>() {
                    Ok(n) if n >= 2 && n % 2 == 0 && n < u16::MAX => Ok(n),
                    _ => Err("must be an even port number between 2 and 65534 (RTCP is port + 1)".into()),
                })?;
                let ttl = self.num(k("multicast-ttl"), 1, 255)? as u8;
                let interface = self.field(k("multicast-interface"), |v| {
                    if v.is_empty() {
                        return Ok(None);
                    }
                    let index = nix::net::if_::if_nametoindex(v).map_err(|_| "no such network interface".to_owned())?;
                    Ok(Some((v.to_owned(), index)))
                })?;
                self.field(k("multicast-group"), |v| {
                    if v.is_empty() {
                        return Ok(None);
                    }
                    let group = v.parse::<IpAddr>().map_err(|_| "not an IP address".to_owned())?;
                    if !group.is_multicast() {
                        return Err(
                            "not a multicast address (IPv4 224.0.0.0/4, e.g. 239.255.42.42; IPv6 ff00::/8)".into()
                        );
                    }
                    Ok(Some(Multicast { group, port, ttl, interface }))
                })?
            },
        };
        if st.record.is_some() && st.codec == Codec::Jpeg {
            let k = KeyRef::of(Scope::Stream, "record-dir", n);
            let (v, origin) = self.raw.value(k);
            return Err(ConfigError {
                key: k.name(),
                value: v.to_owned(),
                origin,
                reason: "only H.264 streams are recorded (MP4's motion-JPEG mapping plays in ffmpeg-based players only); record an H.264 stream of the camera".into(),
            });
        }
        Ok(st)
    }

    /// The `abr*` keys of stream `n`: `None` with `abr=off`. The bounds are checked either way.
    fn abr(&self, n: u8, bitrate: u32) -> Result<Option<AbrSettings>, ConfigError> {
        let k = |name| KeyRef::of(Scope::Stream, name, n);
        let on = self.field(k("abr"), |v| match v {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err("expected on or off".into()),
        })?;
        let max_bps = self.field(k("abr-max"), |v| if v.is_empty() { Ok(bitrate) } else { parse_bitrate(v) })?;
        let min_bps = self.field(k("abr-min"), |v| {
            let min = if v.is_empty() { (bitrate / 10).max(crate::abr::FLOOR_BPS) } else { parse_bitrate(v)? };
            if min > max_bps {
                return Err(format!("above abr-max ({} kbit/s)", max_bps / 1000));
            }
            Ok(min)
        })?;
        Ok(on.then_some(AbrSettings { min_bps, max_bps }))
    }

    /// The `record-*` keys of stream `n`: `None` without a `record-dir`.
    fn record(&self, n: u8) -> Result<Option<crate::record::RecorderSettings>, ConfigError> {
        use crate::record::{FsyncPolicy, RecorderSettings};
        let k = |name| KeyRef::of(Scope::Stream, name, n);
        let seconds = |v: &str| -> Result<std::time::Duration, String> {
            match v.parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(std::time::Duration::from_secs_f64(s)),
                _ => Err("expected seconds, e.g. 60 or 0.5".into()),
            }
        };
        let Some(dir) = self.field(k("record-dir"), |v| Ok((!v.is_empty()).then(|| PathBuf::from(v))))? else {
            return Ok(None);
        };
        let mut s = RecorderSettings::new(dir);
        s.segment = self.field(k("record-segment"), seconds)?;
        s.fragment = self.field(k("record-fragment"), seconds)?;
        s.fsync = self.field(k("record-fsync"), |v| {
            FsyncPolicy::parse(v).ok_or_else(|| "expected fragment, segment or off".to_owned())
        })?;
        s.max_size =
            self.field(k("record-max-size"), |v| if v.is_empty() { Ok(None) } else { parse_size(v).map(Some) })?;
        s.max_age =
            self.field(k("record-max-age"), |v| if v.is_empty() { Ok(None) } else { parse_age(v).map(Some) })?;
        s.min_free = self.field(k("record-min-free"), |v| parse_size(v).map(|b| (b > 0).then_some(b)))?;
        if let Err(why) = s.validate() {
            let key = if why.contains("fragment") { "record-fragment" } else { "record-segment" };
            let (v, origin) = self.raw.value(k(key));
            return Err(ConfigError { key: k(key).name(), value: v.to_owned(), origin, reason: why.to_owned() });
        }
        Ok(Some(s))
    }

    /// Two streams never share a multicast group and port, or an `sdp-out` file.
    pub(super) fn check_unique_destinations(&self, streams: &[StreamConfig]) -> Result<(), ConfigError> {
        for (i, s) in streams.iter().enumerate() {
            for o in &streams[..i] {
                let clash = match (&s.multicast, &o.multicast) {
                    (Some(a), Some(b)) if a.group == b.group && a.port == b.port => Some((
                        "multicast-group",
                        format!(
                            "{} already sends to this group at port {}; give one of them another multicast-port",
                            o.name, a.port
                        ),
                    )),
                    _ => None,
                }
                .or_else(|| {
                    (s.sdp_out.is_some() && s.sdp_out == o.sdp_out)
                        .then(|| ("sdp-out", format!("{} already writes this file", o.name)))
                })
                .or_else(|| match (&s.record, &o.record) {
                    (Some(a), Some(b)) if a.dir == b.dir => Some((
                        "record-dir",
                        format!("{} already records there (latest_video.mp4 is one per directory)", o.name),
                    )),
                    _ => None,
                });
                if let Some((name, reason)) = clash {
                    let k = KeyRef::of(Scope::Stream, name, i as u8 + 1);
                    let (v, origin) = self.raw.value(k);
                    return Err(ConfigError { key: k.name(), value: v.to_owned(), origin, reason });
                }
            }
        }
        Ok(())
    }
}

pub(super) fn even_dimension(v: &str) -> Result<u32, String> {
    let n: u32 = v.parse().map_err(|_| "not a whole number".to_owned())?;
    if !(16..=limits::MAX_DIMENSION).contains(&n) || n % 2 != 0 {
        return Err(format!("must be an even number between 16 and {}", limits::MAX_DIMENSION));
    }
    Ok(n)
}

pub(super) fn parse_bitrate(v: &str) -> Result<u32, String> {
    let (num, mult) = match v.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1_000),
        None => match v.strip_suffix('M') {
            Some(n) => (n, 1_000_000),
            None => (v, 1),
        },
    };
    let n: u64 = num.trim().parse().map_err(|_| "not a number (e.g. 2000000, 2000k or 2M)".to_owned())?;
    let bps = n.saturating_mul(mult);
    if !(10_000..=100_000_000).contains(&bps) {
        return Err("must be between 10k and 100M bit/s".into());
    }
    Ok(bps as u32)
}

/// `8G`, `500M`, `64k`, `1048576` (bytes; powers of 1024).
fn parse_size(v: &str) -> Result<u64, String> {
    let (num, mult) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err("expected a size such as 8G, 500M or 1048576".into()),
            };
            (&v[..i], m)
        }
        _ => (v, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| "expected a size such as 8G, 500M or 1048576".to_owned())?;
    n.checked_mul(mult).ok_or_else(|| "too large".into())
}

/// `7d`, `12h`, `30m`, `3600` (seconds).
fn parse_age(v: &str) -> Result<std::time::Duration, String> {
    let (num, mult) = match v.as_bytes().last() {
        Some(b'd') => (&v[..v.len() - 1], 86_400),
        Some(b'h') => (&v[..v.len() - 1], 3_600),
        Some(b'm') => (&v[..v.len() - 1], 60),
        Some(b's') => (&v[..v.len() - 1], 1),
        _ => (v, 1),
    };
    match num.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(std::time::Duration::from_secs(n.saturating_mul(mult))),
        _ => Err("expected an age such as 7d, 12h, 30m or 3600 (seconds)".into()),
    }
}
