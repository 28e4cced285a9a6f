//! Frame buffers for libcamera and read-only views of them. This is the one libcamera module
//! allowed `unsafe`: mmap of DMABUF/memfd planes, closing the fds the `libcamera` crate leaks,
//! and the `AsFrameBuffer` forwarding that lets one request type carry either kind of buffer.
//!
//! Invariants:
//! - Buffers come from libcamera's `FrameBufferAllocator` (DMABUFs from the pipeline handler or a
//!   dma-heap) when it can; where it cannot (no `/dev/dma_heap`, no `/dev/udmabuf`: ENOBUFS),
//!   from memfds of our own, one per buffer, planes at offsets in it.
//! - Every plane is mapped once, read-only and shared, at set-up; the mapping lives as long as
//!   the [`PlaneMap`], which the pipeline drops after the camera has stopped.
//! - Plane sizes are computed from the layout, not taken from `PixelFormat::info()` (libcamera
//!   crate 0.7.0 reports no planes for NV12).

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use libcamera::framebuffer::{AsFrameBuffer, FrameBufferPlane, OwnedFrameBuffer};
use libcamera::framebuffer_allocator::FrameBuffer;

use crate::pipeline::frames::FrameLayout;

/// A frame buffer of either origin, so requests hold one type.
pub(super) enum CamBuffer {
    Allocated(FrameBuffer),
    Own(OwnedFrameBuffer),
}

impl AsFrameBuffer for CamBuffer {
    // SAFETY: forwards to the wrapped buffer, which returns a valid `libcamera::FrameBuffer`.
    unsafe fn ptr(&self) -> NonNull<libcamera_sys::libcamera_framebuffer_t> {
        match self {
            // SAFETY: as above.
            CamBuffer::Allocated(b) => unsafe { b.ptr() },
            // SAFETY: as above.
            CamBuffer::Own(b) => unsafe { b.ptr() },
        }
    }
}

/// (offset, length) of each plane of a frame of `layout`, in the order they follow each other.
pub(super) fn plane_spans(layout: &FrameLayout) -> Vec<(usize, usize)> {
    let (s, h) = (layout.stride as usize, layout.height as usize);
    match &layout.fourcc {
        b"YUYV" | b"BG24" | b"RG24" => vec![(0, s * h)],
        b"NV12" => vec![(0, s * h), (s * h, s * h / 2)],
        _ => vec![(0, s * h), (s * h, s * h / 4), (s * h + s * h / 4, s * h / 4)],
    }
}

/// A buffer backed by a memfd of our own (`frame_bytes` long), planes at the layout's offsets.
pub(super) fn memfd_buffer(layout: &FrameLayout, index: u64) -> io::Result<OwnedFrameBuffer> {
    let name = c"uavstream-libcamera";
    // SAFETY: a valid NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(layout.frame_bytes() as u64)?;
    let mut planes = Vec::new();
    let mut handed = Vec::new();
    for (offset, len) in plane_spans(layout) {
        let dup = OwnedFd::from(file.try_clone()?);
        handed.push(dup.as_raw_fd());
        planes.push(FrameBufferPlane {
            fd: dup,
            offset: u32::try_from(offset).map_err(io::Error::other)?,
            length: u32::try_from(len).map_err(io::Error::other)?,
        });
    }
    let buffer = OwnedFrameBuffer::new(planes, Some(index))?;
    // The crate hands the raw fds to libcamera's `SharedFD(const int &)`, which duplicates them,
    // and never closes ours (libcamera crate 0.7.0): close them here, or every rebuild leaks.
    for fd in handed {
        // SAFETY: these fds were released by `into_raw_fd` inside `OwnedFrameBuffer::new`, which
        // succeeded, so libcamera holds its own duplicates and nobody else owns these numbers.
        unsafe { libc::close(fd) };
    }
    Ok(buffer)
}

/// One plane mapped read-only.
pub(super) struct PlaneMap {
    ptr: NonNull<libc::c_void>,
    map_len: usize,
    offset: usize,
    len: usize,
    /// The DMABUF fd (borrowed from libcamera's buffer, which outlives the pipeline's use).
    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    pub(super) fd: RawFd,
}

// SAFETY: the mapping is read-only memory owned by this value; sending it to another thread
// is as safe as sending a `&[u8]` it hands out.
unsafe impl Send for PlaneMap {}

impl PlaneMap {
    /// Maps `len` bytes at `offset` of `fd` read-only.
    pub(super) fn new(fd: RawFd, offset: usize, len: usize) -> io::Result<PlaneMap> {
        let map_len = offset.checked_add(len).ok_or_else(|| io::Error::other("plane too large"))?;
        // SAFETY: a fresh shared read-only mapping of an fd we only read; the result is checked.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(PlaneMap { ptr, map_len, offset, len, fd })
    }

    /// The plane's bytes (what the camera last wrote).
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `offset + len <= map_len` bytes are mapped readable for the life of `self`.
        // The camera may write them again only after the request is re-queued, which happens
        // after the copy that reads them.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>().add(self.offset), self.len) }
    }
}

impl Drop for PlaneMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr(), self.map_len) };
    }
}

/// Maps every plane of `buffer`, computing sizes from `layout` (see the module docs).
pub(super) fn map_planes(buffer: &CamBuffer, layout: &FrameLayout) -> io::Result<Vec<PlaneMap>> {
    let planes = buffer.planes();
    let spans = plane_spans(layout);
    let mut maps = Vec::with_capacity(spans.len());
    if planes.len() == 1 && spans.len() > 1 {
        // One plane holding the whole frame (some allocators): map it once per span.
        let p = planes.get(0).ok_or_else(|| io::Error::other("no plane"))?;
        let base = p.offset().unwrap_or(0);
        for (off, len) in spans {
            maps.push(PlaneMap::new(p.fd(), base + off, len)?);
        }
        return Ok(maps);
    }
    if planes.len() != spans.len() {
        return Err(io::Error::other(format!(
            "buffer has {} planes, {} has {}",
            planes.len(),
            String::from_utf8_lossy(&layout.fourcc),
            spans.len()
        )));
    }
    for (i, (_, len)) in spans.into_iter().enumerate() {
        let p = planes.get(i).ok_or_else(|| io::Error::other("no plane"))?;
        maps.push(PlaneMap::new(p.fd(), p.offset().unwrap_or(0), len)?);
    }
    Ok(maps)
}
