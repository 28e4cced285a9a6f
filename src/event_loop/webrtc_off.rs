//! WebRTC without the `webrtc` feature: the same interface, and no value of it ever exists
//! (`WebRtc::new` fails), so the loop's WebRTC paths are never taken.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Instant;

pub(super) use super::webrtc_api::{PeerStatus, Refusal, Unit};

#[derive(Debug, Clone, Copy)]
pub(super) enum Never {}

#[derive(Debug)]
pub(super) struct WebRtc {
    never: Never,
    pub(super) created: u64,
    pub(super) ended: u64,
}

impl WebRtc {
    pub(super) fn new(_: &[IpAddr], _: u16, _: usize, _: usize, _: u8) -> io::Result<WebRtc> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "built without the `webrtc` feature"))
    }
    pub(super) fn candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        match self.never {}
        #[allow(unreachable_code)]
        std::iter::empty()
    }
    pub(super) fn fds(&self) -> impl Iterator<Item = (usize, RawFd)> + '_ {
        match self.never {}
        #[allow(unreachable_code)]
        std::iter::empty()
    }
    pub(super) fn sessions(&self, _: usize) -> usize {
        match self.never {}
    }
    pub(super) fn slots(&self) -> usize {
        match self.never {}
    }
    pub(super) fn status(&self) -> impl Iterator<Item = PeerStatus> + '_ {
        match self.never {}
        #[allow(unreachable_code)]
        std::iter::empty()
    }
    pub(super) fn offer(&mut self, _: usize, _: &[u8], _: u64, _: Instant) -> Result<(u64, String), Refusal> {
        match self.never {}
    }
    pub(super) fn end(&mut self, _: usize, _: u64) -> bool {
        match self.never {}
    }
    pub(super) fn on_socket(&mut self, _: usize, _: Instant) {
        match self.never {}
    }
    pub(super) fn push_unit(&mut self, _: usize, _: &Unit<'_>, _: Instant) {
        match self.never {}
    }
    pub(super) fn take_idr_requests(&mut self) -> impl Iterator<Item = usize> + '_ {
        match self.never {}
        #[allow(unreachable_code)]
        std::iter::empty()
    }
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.never {}
    }
    pub(super) fn on_timers(&mut self, _: Instant) {
        match self.never {}
    }
}
