//! Raw frames for local processes (`raw-socket`): each connected process receives the newest
//! frame of a camera as a sealed memfd plus a small header, over a `SOCK_SEQPACKET` unix socket.
//!
//! ```text
//!  camera ──shared frame (no copy)──▶ FrameTap ─▶ raw-frame thread (own poll: tap, listener, consumers)
//!                                                  │ nobody ready: nothing copied
//!                                                  │ else one sealed memfd per frame (one copy)
//!                                                  └─▶ each ready consumer: header + the memfd's fd (SCM_RIGHTS)
//! ```
//!
//! The decisions are the sans-IO [`fanout`] core (slots, newest wins, skip accounting) and the
//! [`header`] wire format; `server` does the sockets and memfds on its own thread; [`client`]
//! is the receiving end for tests, the benchmark and Rust consumers.
//!
//! Invariants:
//! - The camera, its streams and other consumers never wait for a consumer: the camera hands
//!   the thread a reference through a newest-wins mailbox, and a consumer that has not read its
//!   previous message (`SIOCOUTQ` > 0) is skipped for this frame and its counter goes up.
//! - One copy per frame, only when at least one consumer takes it: the memfd is written once,
//!   sealed (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`: nobody can change or
//!   truncate it, so a consumer's mapping never sees a torn frame or a SIGBUS), and the same fd
//!   is passed to every consumer.
//! - Bounded memory: a consumer gets a message only once it has read the previous one, so at
//!   most one unread message (one memfd) waits in each consumer's socket: with N = `raw-clients`
//!   slots, at most N frames wait in the kernel plus the one being written, whatever consumers
//!   do. A frame a consumer has received is its own: its memory is freed when the consumer
//!   closes the fd and unmaps it (a consumer that keeps every fd is stopped by its own fd limit).
//! - Fixed slots: `raw-clients` consumers; one more is accepted and closed at once (it reads
//!   end-of-file), with a log line. A consumer that closes frees its slot.
//! - No panics on any input: what a consumer sends is read and discarded.

#[cfg(feature = "std")]
pub mod client;
pub mod fanout;
pub mod header;
#[cfg(feature = "std")]
mod server;

#[cfg(feature = "std")]
pub use server::{RawOutput, RawSettings, RawStatus, MAX_PATH_BYTES};
