//! RTSP 1.0 (RFC 2326): request parsing, the Transport header, SDP and the server session core.
pub mod auth;
pub mod client;
pub mod conn;
pub mod parse;
pub mod sdp;
pub mod session;
pub mod transport;
