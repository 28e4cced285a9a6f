//! Receives a camera's raw frames from uavstream's raw-frame socket (`raw-socket=PATH`) and
//! prints one line per frame, like `examples/raw_frames.py`:
//!
//! ```text
//! cargo run --example raw_frames -- /run/uavstream/raw.sock 100
//! ```
//!
//! The frame is mapped read-only, not copied. Mapping it is safe because the memfd is sealed
//! against writing, shrinking and growing: nobody can change it under the mapping or cut it
//! short (which would raise SIGBUS); `Received::is_sealed` checks that first.
#![allow(clippy::print_stdout)]

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use uavstream::raw::client::{RawClient, Received};

/// Maps the frame read-only and gives its bytes to `f`.
#[allow(unsafe_code)]
fn with_mapped<T>(frame: &Received, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    if !frame.is_sealed()? {
        return Err(std::io::Error::other("the frame's memfd is not sealed"));
    }
    let len = usize::try_from(frame.header.size).map_err(std::io::Error::other)?;
    let file_len = nix::sys::stat::fstat(frame.fd.as_raw_fd())?.st_size;
    if len == 0 || u64::try_from(file_len).unwrap_or(0) < frame.header.size {
        return Err(std::io::Error::other("the memfd is shorter than the header says"));
    }
    // SAFETY: a fresh read-only shared mapping of a sealed memfd of at least `len` bytes (the
    // seals forbid shrinking it and writing to it, so the bytes are stable while mapped).
    let ptr =
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, frame.fd.as_raw_fd(), 0) };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `ptr` maps `len` readable bytes until the munmap below.
    let out = f(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
    // SAFETY: unmaps exactly the mapping made above; the slice is gone.
    unsafe { libc::munmap(ptr, len) };
    Ok(out)
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_nanos() as u64)
        .unwrap_or(0)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or_else(|| "/run/uavstream/raw.sock".into()));
    let wanted: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let client = RawClient::connect(&path)?;
    let mut got = 0;
    while wanted == 0 || got < wanted {
        let Some(frame) = client.recv()? else {
            println!("closed by uavstream (every raw-clients slot taken?)");
            return Ok(());
        };
        let now = monotonic_ns();
        let h = frame.header;
        let luma_bytes = (h.stride[0] as usize) * (h.height as usize);
        let mean = with_mapped(&frame, |bytes| {
            let y = &bytes[h.offset[0] as usize..][..luma_bytes];
            y.iter().map(|&b| u64::from(b)).sum::<u64>() as f64 / luma_bytes.max(1) as f64
        })?;
        println!(
            "seq {} {} {}x{} planes {} size {} skipped {} latency {:.3} ms luma {mean:.1}",
            h.sequence,
            String::from_utf8_lossy(&h.fourcc),
            h.width,
            h.height,
            h.planes,
            h.size,
            h.skipped,
            now.saturating_sub(h.capture_ns) as f64 / 1e6
        );
        got += 1;
    }
    Ok(())
}
