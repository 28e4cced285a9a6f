//! Spreading an access unit's UDP fan-out over cores (`fanout-threads` > 1): the loop and
//! `fanout-threads - 1` persistent sender threads each send the access unit's packets to a
//! disjoint share of the playing UDP session slots, and the loop waits for all of them before it
//! goes on (fork-join).
//!
//! ```text
//!  loop:     catch_up each UDP slot ─▶ plan: (slot, dest, start, GSO state) per slot, in fair
//!            order ─▶ copy ring[earliest start..head) into the run ─▶ shares 1..T-1 to the
//!            senders ─▶ write the interleaved (TCP) slots ─▶ send share 0 ─▶ take every share
//!            back ─▶ merge what was sent and dropped into the slots ─▶ carry on
//!  sender k:  wait for a share ─▶ send it from the run (read lock) ─▶ hand it back
//! ```
//!
//! Invariants:
//! - The loop keeps sole ownership of session state: slots, readers, rings and sessions are
//!   never seen by a sender. A sender gets an immutable plan (a slot's RTP socket index,
//!   destination, first packet and GSO state) and the run of packets, and hands back what it
//!   sent, dropped (`EAGAIN` and other refusals: dropped, never queued, as on the loop) and
//!   whether the kernel refused GSO; the loop merges those into the slots.
//! - The run is a copy of the ring entries being sent, made before the shares go out and read
//!   under a read lock only while the loop waits: the ring (written by the next access unit) is
//!   never read by a sender, and no lock is held on anything the loop owns.
//! - Fork-join: [`Fanout::finish`] returns only when every share is back; nothing a sender
//!   holds outlives one access unit, and the slots after it are as the serial fan-out leaves
//!   them (same positions and counts; only the order of sends across clients differs). Between
//!   [`Fanout::start_send`] and `finish` the loop touches only what no share holds: the
//!   interleaved slots.
//! - No allocation per packet or access unit: the run, the plan and every share have their
//!   capacity from the start (`max-clients` destinations, a ring's worth of packets: reserved,
//!   resident only up to the largest access unit sent); the shares travel in bounded channels
//!   (array-backed) as boxes that go back and forth. `tests/alloc.rs` counts the loop's
//!   allocations with `fanout-threads=2`.
//! - The sockets are the slots' own (bound at start, kept for the process's life), shared with
//!   the senders once at start through `Arc`s: no fd is dup'ed, none is closed while a share is
//!   out.
//! - With fewer than [`MIN_PER_SHARE`] destinations per thread fewer senders are woken (one
//!   client is sent by the loop alone: a wake-up costs more than its sends).
//!
//! Trade-off: fork-join vs. pipelining. The loop waits for the slowest share, so an access unit
//! is out for every client at `max(share)` instead of `sum(shares)` of the serial fan-out, but
//! the loop does nothing else meanwhile (RTSP requests and RTCP wait a few ms more, as they do
//! for the serial fan-out). Pipelining (the loop moves on while senders still send) would
//! overlap the fan-out with the loop's other work, but then a sender would read packets the loop
//! may overwrite and slot state the loop may change (TEARDOWN, a new SETUP on the same slot),
//! which needs reference counts on ring entries or locks on slots: exactly the shared state the
//! single loop exists to avoid. The copy of the run (one memcpy of the access unit's packets,
//! microseconds) is the price of keeping the ring the loop's alone.

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ring_reader::RingReader;
use super::udp_tx::UdpTx;
use super::EventLoop;
use crate::hub::Ring;
use crate::sys;

/// Fewest destinations worth waking a sender thread for.
pub(super) const MIN_PER_SHARE: usize = 4;

/// The packets being sent: ring entries `first..first + ends.len()`, copied.
#[derive(Debug)]
struct Run {
    first: u64,
    bytes: Vec<u8>,
    /// End of each packet in `bytes`.
    ends: Vec<usize>,
}

impl Run {
    fn end(&self) -> u64 {
        self.first + self.ends.len() as u64
    }

    /// Packets from ring index `at` on, up to `batch.len()`; how many.
    fn batch<'r>(&'r self, at: u64, batch: &mut [&'r [u8]]) -> usize {
        let mut n = 0;
        let mut k = at.saturating_sub(self.first) as usize;
        while n < batch.len() && k < self.ends.len() {
            let start = if k == 0 { 0 } else { self.ends[k - 1] };
            batch[n] = &self.bytes[start..self.ends[k]];
            n += 1;
            k += 1;
        }
        n
    }
}

/// One slot's part of the plan, and (after sending) what became of it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dest {
    /// The slot (index into the loop's slots and the shared sockets).
    pub(super) slot: usize,
    pub(super) addr: SocketAddr,
    /// Starts at the slot's position with zero counts; what it sent, sent in bytes and dropped.
    pub(super) reader: RingReader,
    /// The slot's GSO state with zero counts; its counts and GSO state after sending.
    pub(super) tx: UdpTx,
}

impl Dest {
    fn send(&mut self, sock: &UdpSocket, run: &Run) {
        let mut batch: [&[u8]; sys::BATCH] = [&[]; sys::BATCH];
        while self.reader.next < run.end() {
            let n = run.batch(self.reader.next, &mut batch);
            if n == 0 {
                break;
            }
            let sent = self.tx.send(sock, &self.addr, &batch[..n]);
            self.reader.advance(&batch[..n], sent);
        }
    }
}

/// A share of the plan: the destinations one thread sends to.
#[derive(Debug)]
struct Share {
    dests: Vec<Dest>,
}

impl Share {
    fn send(&mut self, sockets: &[Arc<UdpSocket>], run: &Run) {
        for d in &mut self.dests {
            d.send(&sockets[d.slot], run);
        }
    }
}

#[derive(Debug)]
struct Sender {
    to: SyncSender<Box<Share>>,
    from: Receiver<Box<Share>>,
    /// The share, while it is the loop's (`None`: out with the thread, or lost with it).
    share: Option<Box<Share>>,
    /// The part of the plan in the share this time.
    range: (usize, usize),
    thread: Option<JoinHandle<()>>,
}

/// The sender threads and the buffers the loop plans in.
#[derive(Debug)]
pub(super) struct Fanout {
    run: Arc<RwLock<Run>>,
    sockets: Arc<[Arc<UdpSocket>]>,
    senders: Vec<Sender>,
    /// The loop's own share.
    own: Share,
    /// The whole plan of an access unit, in send order.
    plan: Vec<Dest>,
}

impl Fanout {
    /// `threads` senders in all: the loop and `threads - 1` sender threads, for up to
    /// `sockets.len()` destinations and runs of up to `run_packets` packets of `max_packet` bytes.
    pub(super) fn start(
        threads: usize,
        sockets: Vec<Arc<UdpSocket>>,
        run_packets: usize,
        max_packet: usize,
    ) -> std::io::Result<Fanout> {
        let cap = sockets.len();
        let run = Arc::new(RwLock::new(Run {
            first: 0,
            bytes: Vec::with_capacity(run_packets * max_packet),
            ends: Vec::with_capacity(run_packets),
        }));
        let sockets: Arc<[Arc<UdpSocket>]> = sockets.into();
        let mut senders = Vec::with_capacity(threads.saturating_sub(1));
        for k in 1..threads {
            let (to, rx) = sync_channel::<Box<Share>>(1);
            let (tx, from) = sync_channel::<Box<Share>>(1);
            let (run, sockets) = (Arc::clone(&run), Arc::clone(&sockets));
            let thread = std::thread::Builder::new().name(format!("fanout-{k}")).spawn(move || {
                // Ends when the loop drops its end of the channel.
                while let Ok(mut share) = rx.recv() {
                    {
                        let run = run.read().unwrap_or_else(PoisonError::into_inner);
                        share.send(&sockets, &run);
                    }
                    if tx.send(share).is_err() {
                        break;
                    }
                }
            })?;
            let share = Box::new(Share { dests: Vec::with_capacity(cap) });
            senders.push(Sender { to, from, share: Some(share), range: (0, 0), thread: Some(thread) });
        }
        log::info!("fan-out: the loop and {} sender thread(s) send to UDP clients", threads - 1);
        Ok(Fanout {
            run,
            sockets,
            senders,
            own: Share { dests: Vec::with_capacity(cap) },
            plan: Vec::with_capacity(cap),
        })
    }

    /// Starts a new plan.
    pub(super) fn clear(&mut self) {
        self.plan.clear();
    }

    /// Adds a destination: `slot`'s socket sends to `addr` from its reader's position on.
    pub(super) fn add(&mut self, slot: usize, addr: SocketAddr, reader: &RingReader, tx: &UdpTx) {
        debug_assert!(self.plan.len() < self.plan.capacity());
        if self.plan.len() < self.plan.capacity() {
            self.plan.push(Dest { slot, addr, reader: reader.detached(), tx: tx.detached() });
        }
    }

    /// Starts sending `ring`, from the earliest position in the plan to its head, to every
    /// destination of the plan: the sender threads get their shares. The loop may then do work
    /// of its own that touches no UDP slot of the plan; [`Fanout::finish`] sends its share and
    /// waits for the others.
    pub(super) fn start_send(&mut self, ring: &Ring) {
        self.own.dests.clear();
        for s in &mut self.senders {
            s.range = (0, 0);
        }
        let Some(from) = self.plan.iter().map(|d| d.reader.next).min() else { return };
        {
            let mut run = self.run.write().unwrap_or_else(PoisonError::into_inner);
            run.first = from;
            run.bytes.clear();
            run.ends.clear();
            for i in from..ring.head() {
                let Some(p) = ring.get(i) else { break };
                if run.ends.len() == run.ends.capacity() || run.bytes.len() + p.bytes.len() > run.bytes.capacity() {
                    break;
                }
                run.bytes.extend_from_slice(p.bytes);
                let end = run.bytes.len();
                run.ends.push(end);
            }
        }
        let dests = self.plan.len();
        let alive = self.senders.iter().filter(|s| s.share.is_some()).count();
        let threads = (dests / MIN_PER_SHARE).clamp(1, alive + 1);
        let per = dests.div_ceil(threads).max(1);
        let mut chunks = self.plan.chunks(per);
        self.own.dests.extend_from_slice(chunks.next().unwrap_or_default());
        let mut at = self.own.dests.len();
        for s in &mut self.senders {
            let Some(mut share) = s.share.take() else { continue };
            share.dests.clear();
            let Some(chunk) = chunks.next() else {
                s.share = Some(share);
                continue;
            };
            share.dests.extend_from_slice(chunk);
            s.range = (at, at + chunk.len());
            at += chunk.len();
            if let Err(e) = s.to.send(share) {
                // The thread is gone: the loop sends its share itself (below).
                s.share = Some(e.0);
            }
        }
    }

    /// Sends the loop's share, then takes every share back (fork-join): the outcome is
    /// [`Fanout::outcome`].
    pub(super) fn finish(&mut self) {
        {
            let run = self.run.read().unwrap_or_else(PoisonError::into_inner);
            self.own.send(&self.sockets, &run);
            for s in self.senders.iter_mut().filter(|s| s.range.1 > s.range.0) {
                if let Some(share) = s.share.as_mut() {
                    share.send(&self.sockets, &run);
                }
            }
        }
        // Join: every share comes back before the loop touches a slot or the ring again.
        let own = self.own.dests.len();
        self.plan[..own].copy_from_slice(&self.own.dests);
        for s in &mut self.senders {
            let (a, b) = s.range;
            if b == a {
                continue;
            }
            if s.share.is_none() {
                match s.from.recv() {
                    Ok(share) => s.share = Some(share),
                    Err(_) => {
                        // It panicked mid-share: its slots keep their position (they are sent
                        // from there next time, by the others).
                        log::error!("fan-out: a sender thread is gone; the loop and the others take its share");
                        continue;
                    }
                }
            }
            if let Some(share) = s.share.as_ref() {
                self.plan[a..b].copy_from_slice(&share.dests);
            }
        }
    }

    /// The plan as sent: each destination with what it sent, dropped and its GSO state.
    pub(super) fn outcome(&self) -> &[Dest] {
        &self.plan
    }
}

impl EventLoop<'_> {
    /// Sends stream `si`'s new packets to its session slots, in fair order from slot `first`:
    /// serially by the loop, or (`fanout-threads` > 1) the UDP slots spread over the fan-out
    /// threads while the loop writes the interleaved ones.
    pub(super) fn fan_out(&mut self, si: usize, first: usize, now: Instant) {
        let n = self.slots.len();
        let Some(mut f) = self.fanout.take() else {
            for k in 0..n {
                let s = (first + k) % n;
                if self.slots[s].stream == si {
                    self.pump(s, now);
                }
            }
            return;
        };
        f.clear();
        let ring = &self.streams[si].hub.ring;
        for k in 0..n {
            let i = (first + k) % n;
            let s = &mut self.slots[i];
            if s.stream != si || !s.playing || s.conn.is_some() {
                continue;
            }
            let Some(dest) = s.rtp_dest else { continue };
            let waited = s.reader.waiting_keyframe;
            if !s.reader.catch_up(ring) {
                continue;
            }
            if let Some(t) = s.play_at.take().filter(|_| waited) {
                log::debug!(
                    "slot {i}: first IDR {:.1} ms after PLAY",
                    now.saturating_duration_since(t).as_secs_f64() * 1e3
                );
            }
            f.add(i, dest, &s.reader, &s.tx);
        }
        f.start_send(ring);
        // Meanwhile the loop writes the interleaved (TCP) slots: none of them is in the plan.
        for k in 0..n {
            let s = (first + k) % n;
            if self.slots[s].stream == si && self.slots[s].conn.is_some() {
                self.pump(s, now);
            }
        }
        f.finish();
        let core_now = self.core_now(now);
        let mut dropped = 0;
        for d in f.outcome() {
            let s = &mut self.slots[d.slot];
            let from = s.reader.next;
            s.reader.merge(&d.reader);
            s.tx.merge(&d.tx);
            if let Some(rtx) = s.rtx.as_mut() {
                rtx.on_sent(from, s.reader.next, core_now);
            }
            dropped += d.reader.dropped;
        }
        self.fanout = Some(f);
        if dropped > 0 && now.saturating_duration_since(self.udp_drops_logged) > Duration::from_secs(5) {
            self.udp_drops_logged = now;
            log::warn!("fan-out: {dropped} packets of this access unit dropped (kernel send buffers full)");
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        for s in &mut self.senders {
            // Closing the channel ends the thread.
            let (to, _) = sync_channel(1);
            drop(std::mem::replace(&mut s.to, to));
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receivers(n: usize) -> Vec<UdpSocket> {
        (0..n)
            .map(|_| {
                let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
                rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                rx
            })
            .collect()
    }

    fn sockets(n: usize) -> Vec<Arc<UdpSocket>> {
        (0..n)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                Arc::new(s)
            })
            .collect()
    }

    fn ring_with(lens: &[usize]) -> Ring {
        let mut ring = Ring::new(64, 1500);
        for (i, &len) in lens.iter().enumerate() {
            let pkt: Vec<u8> = (0..len).map(|b| (b as u8) ^ (i as u8)).collect();
            ring.push_packet(&pkt, i == 0, i + 1 == lens.len());
        }
        ring
    }

    #[test]
    fn every_destination_gets_every_packet_from_its_own_position() {
        let n = 12;
        let (rxs, socks) = (receivers(n), sockets(n));
        let lens = [30, 12, 1200, 1200, 1200, 777, 1200, 640];
        let ring = ring_with(&lens);
        let kernel = super::super::udp_tx::kernel_gso();
        let mut f = Fanout::start(3, socks, 64, 1500).unwrap();
        f.clear();
        for (i, rx) in rxs.iter().enumerate() {
            // Slot 5 starts later (a joiner whose keyframe is further on).
            let reader = RingReader { next: if i == 5 { 3 } else { 0 }, ..RingReader::default() };
            f.add(i, rx.local_addr().unwrap(), &reader, &UdpTx::new(kernel));
        }
        f.start_send(&ring);
        f.finish();
        let out = f.outcome();
        assert_eq!(out.len(), n);
        let mut buf = [0u8; 2048];
        for (i, rx) in rxs.iter().enumerate() {
            let d = out.iter().find(|d| d.slot == i).unwrap();
            let from = if i == 5 { 3 } else { 0 };
            assert_eq!((d.reader.next, d.reader.sent, d.reader.dropped), (8, 8 - from, 0));
            for k in from..8 {
                let len = rx.recv(&mut buf).unwrap();
                assert_eq!(&buf[..len], ring.get(k).unwrap().bytes, "slot {i} packet {k}");
            }
        }
        // Again, with the shares back in place: a second access unit goes the same way.
        f.clear();
        for (i, rx) in rxs.iter().enumerate() {
            f.add(i, rx.local_addr().unwrap(), &RingReader { next: 6, ..RingReader::default() }, &UdpTx::new(kernel));
        }
        f.start_send(&ring);
        f.finish();
        assert!(f.outcome().iter().all(|d| d.reader.sent == 2 && d.reader.next == 8));
    }

    #[test]
    fn a_gso_refusal_in_a_sender_thread_comes_back_to_the_slot() {
        let n = 8;
        let (rxs, socks) = (receivers(n), sockets(n));
        for s in &socks {
            // Checksums off: the kernel refuses every GSO message on these sockets.
            sys::test_disable_udp_checksum(s).unwrap();
        }
        let lens = [1200, 1200, 1200, 1200, 640];
        let ring = ring_with(&lens);
        let mut f = Fanout::start(2, socks, 64, 1500).unwrap();
        f.clear();
        for (i, rx) in rxs.iter().enumerate() {
            f.add(i, rx.local_addr().unwrap(), &RingReader::default(), &UdpTx::new(true));
        }
        f.start_send(&ring);
        f.finish();
        let mut buf = [0u8; 2048];
        for d in f.outcome() {
            assert!(!d.tx.gso(), "slot {} still asks for GSO", d.slot);
            assert_eq!((d.tx.gso_messages, d.tx.datagrams, d.reader.sent), (0, 5, 5));
            for k in 0..5 {
                let len = rxs[d.slot].recv(&mut buf).unwrap();
                assert_eq!(&buf[..len], ring.get(k).unwrap().bytes);
            }
        }
        let mut slot_tx = UdpTx::new(true);
        slot_tx.merge(&f.outcome()[7].tx);
        assert!(!slot_tx.gso());
        assert_eq!(slot_tx.datagrams, 5);
    }
}
