//! The few V4L2 details v4l2r 0.0.6 leaves as C unions. This is the one V4L2 module allowed
//! `unsafe`; every block reads a union member that the kernel filled for the queue type we set.
#![allow(unsafe_code)]

use v4l2r::bindings::{v4l2_fract, v4l2_streamparm};
use v4l2r::QueueType;

/// The frame interval a `VIDIOC_G_PARM`/`S_PARM` answer carries for `queue`.
pub(super) fn timeperframe(parm: &v4l2_streamparm, queue: QueueType) -> v4l2_fract {
    if queue.direction() == v4l2r::QueueDirection::Output {
        // SAFETY: for OUTPUT buffer types the kernel fills `parm.output` (videodev2.h,
        // struct v4l2_streamparm), and every bit pattern is a valid `v4l2_outputparm`.
        unsafe { parm.parm.output.timeperframe }
    } else {
        // SAFETY: for CAPTURE buffer types the kernel fills `parm.capture`; every bit pattern
        // is a valid `v4l2_captureparm` (plain integers).
        unsafe { parm.parm.capture.timeperframe }
    }
}

/// `V4L2_CAP_TIMEPERFRAME` in the capability field of the same union.
pub(super) fn supports_timeperframe(parm: &v4l2_streamparm, queue: QueueType) -> bool {
    let caps = if queue.direction() == v4l2r::QueueDirection::Output {
        // SAFETY: as in `timeperframe`: the OUTPUT member is the one the kernel filled.
        unsafe { parm.parm.output.capability }
    } else {
        // SAFETY: as in `timeperframe`: the CAPTURE member is the one the kernel filled.
        unsafe { parm.parm.capture.capability }
    };
    caps & v4l2r::bindings::V4L2_CAP_TIMEPERFRAME != 0
}
