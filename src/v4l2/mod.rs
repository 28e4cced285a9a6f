//! V4L2 devices, shared by capture (`source::v4l2`) and the M2M encoder (`encode::v4l2_m2m`):
//! finding and opening nodes, formats, frame rates, buffer queues and DMABUF export, on v4l2r's
//! ioctl layer. Neither user depends on the other.
pub mod device;
mod sys;
