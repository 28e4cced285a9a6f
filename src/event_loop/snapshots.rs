//! A camera's snapshots (`snapshot-dir`): one JPEG every `snapshot-interval`.
//!
//! ```text
//!  raw camera ──tap (thinned to one frame per interval, no copy)──▶ JPEG encoder at the camera's size ─┐
//!  MJPEG camera: its capturing stream's JPEGs, one per interval (Snapshotter::due) ─────────────────────┴▶ Snapshotter (writer thread)
//! ```
//!
//! Invariants: the encoder's tap is one of its camera's feeds (`feed_camera`), thinned to the
//! interval, so it encodes only the frames that become snapshots; the loop hands each JPEG to
//! the [`Snapshotter`] without waiting (a busy writer drops it and counts it). A camera with
//! neither raw nor JPEG frames (H.264 passed through) gets no snapshots, with one warning. An
//! encoder that fails is retried no sooner than [`RETRY`]; it is started (and a rebuilt camera
//! re-checked) by the once-a-second supervision.

use std::time::{Duration, Instant};

use super::EventLoop;
use crate::encode::jpeg::{JpegPipeline, Target};
use crate::record::snapshot::{SnapshotStatus, Snapshotter};
use crate::rtp::Codec;
use crate::source::{Pipeline, PollRequest};

/// Earliest retry after the snapshot encoder failed to start or died.
const RETRY: Duration = Duration::from_secs(2);

/// Snapshots of one camera.
#[derive(Debug)]
pub(super) struct CameraSnapshots {
    pub(super) writer: Snapshotter,
    encoder: Option<JpegPipeline>,
    retry_at: Option<Instant>,
    pub(super) reqs: Vec<PollRequest>,
    /// Said once that this camera gives nothing to take snapshots of.
    warned_no_frames: bool,
}

/// Where a camera's snapshots come from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Supply {
    /// Raw frames: the snapshot encoder taps them.
    Raw,
    /// The capturing stream's own JPEGs (an MJPEG camera), as they are.
    StreamJpeg,
    /// H.264 passed through, or the camera is being rebuilt.
    Nothing,
}

impl CameraSnapshots {
    pub(super) fn encoder(&self) -> Option<&JpegPipeline> {
        self.encoder.as_ref()
    }

    /// Refreshes `reqs` from the encoder; called before every `poll(2)`.
    pub(super) fn poll_requests(&mut self) {
        self.reqs.clear();
        if let Some(e) = &self.encoder {
            e.poll_requests(&mut self.reqs);
        }
    }

    pub(super) fn status(&self) -> SnapshotStatus {
        self.writer.status()
    }
}

impl EventLoop<'_> {
    /// Starts the snapshot writers of the cameras that have a `snapshot-dir`. A directory that
    /// cannot be made is logged and the camera streams on without snapshots.
    pub(super) fn start_snapshots(&mut self) {
        for (c, cam) in self.cfg.cameras.iter().enumerate() {
            let Some(settings) = &cam.snapshot else { continue };
            match Snapshotter::start(settings.clone()) {
                Ok(writer) => {
                    log::info!("{}: snapshots every {:?} into {}", cam.name, settings.interval, settings.dir.display());
                    self.cameras[c].snapshots = Some(CameraSnapshots {
                        writer,
                        encoder: None,
                        retry_at: None,
                        reqs: Vec::new(),
                        warned_no_frames: false,
                    });
                }
                Err(e) => log::error!(
                    "{}: snapshot-dir {}: {e}; the camera streams without snapshots",
                    cam.name,
                    settings.dir.display()
                ),
            }
        }
    }

    fn snapshot_supply(&self, c: usize) -> Supply {
        match self.capturing_stream(c) {
            None => Supply::Raw,
            Some(si) => match self.streams[si].pipeline.as_ref() {
                None => Supply::Nothing,
                Some(p) if p.raw_layout().is_some() => Supply::Raw,
                Some(p) if p.codec() == Codec::Jpeg => Supply::StreamJpeg,
                Some(_) => Supply::Nothing,
            },
        }
    }

    /// Once a second: starts a raw camera's snapshot encoder, stops it when the camera no longer
    /// gives raw frames.
    pub(super) fn supervise_snapshots(&mut self, c: usize, now: Instant) {
        let supply = self.snapshot_supply(c);
        let rebuilding = self.capturing_stream(c).is_some_and(|si| self.streams[si].pipeline.is_none());
        let layout = self.camera_layout(c);
        let cam = &self.cfg.cameras[c];
        let Some(settings) = &cam.snapshot else { return };
        let Some(snap) = self.cameras[c].snapshots.as_mut() else { return };
        let mut refeed = false;
        match (supply, snap.encoder.is_some()) {
            (Supply::Raw, false) if snap.retry_at.is_none_or(|t| now >= t) => {
                let layout = layout.unwrap_or(crate::encode::jpeg::FrameLayout {
                    fourcc: *b"YU12",
                    width: cam.width,
                    height: cam.height,
                    stride: cam.width,
                });
                match JpegPipeline::start_scaled(layout, (cam.width, cam.height), settings.quality, Target::Http) {
                    Ok(p) => {
                        log::info!("{}: snapshot encoder started: {}", cam.name, p.describe());
                        snap.encoder = Some(p);
                        snap.retry_at = None;
                        refeed = true;
                    }
                    Err(e) => {
                        log::warn!("{}: cannot start the snapshot encoder: {e}; next try in {RETRY:?}", cam.name);
                        snap.retry_at = Some(now + RETRY);
                    }
                }
            }
            (Supply::StreamJpeg | Supply::Nothing, true) => {
                snap.encoder = None;
                refeed = true;
            }
            _ => {}
        }
        if supply == Supply::Nothing && !rebuilding && !snap.warned_no_frames {
            snap.warned_no_frames = true;
            log::warn!(
                "{}: no snapshots: the camera gives neither raw frames nor JPEGs (its H.264 is passed through); \
                 use a raw --pixel-format or MJPG",
                cam.name
            );
        }
        if refeed {
            self.feed_camera(c);
        }
    }

    /// JPEGs from camera `c`'s snapshot encoder go to its writer.
    pub(super) fn on_snapshot_encoder(&mut self, c: usize, index: usize, revents: i16, now: Instant) {
        let Some(snap) = self.cameras[c].snapshots.as_mut() else { return };
        let Some(encoder) = snap.encoder.as_mut() else { return };
        let writer = &mut snap.writer;
        let result = encoder.on_ready(index, revents, now, &mut |jpeg: &[u8], _capture| writer.push(jpeg));
        if let Err(e) = result {
            log::warn!("{}: snapshot encoder failed: {e}; next try in {RETRY:?}", self.cfg.cameras[c].name);
            snap.encoder = None;
            snap.retry_at = Some(now + RETRY);
            self.feed_camera(c);
        }
    }
}
