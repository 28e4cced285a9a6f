SUMMARY = "Low-latency RTSP/RTP camera streaming daemon"
DESCRIPTION = "uavstream streams a libcamera or V4L2 camera (or a test pattern) as H.264 \
               over RTSP/RTP with the lowest latency the hardware allows, \
               for drones, robots and IP cameras. It is configured from the \
               kernel command line (uavstream.KEY=VALUE), UAVSTREAM_* \
               environment variables or flags."
HOMEPAGE = "https://example.invalid/uavstream"
BUGTRACKER = "https://example.invalid/uavstream/issues"
SECTION = "multimedia"
CVE_PRODUCT = "uavstream"
LICENSE = "MIT | Apache-2.0"
# Dual-licensed like most Rust crates (Cargo.toml: license = "MIT OR Apache-2.0");
# the checksums cover the two licence texts, not Cargo.toml, so editing the
# manifest never invalidates them (scripts/check-image verifies them).
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=3b83ef96387f14655fc854ddc3c6bd57 \
                    file://LICENSE-MIT;md5=6b7f02d07d27c5f9292ad92d6c8e84f4"

PV = "0.1.0+git"

# Source. By default the recipe builds the checkout this layer lives in
# (UAVSTREAM_TREE, the directory above the layer, set in conf/layer.conf),
# in place through externalsrc: no edit, no download of the daemon itself,
# and what gets built is exactly what is checked out. externalsrc keeps the
# crate:// entries of the crates .inc, so the dependencies are still fetched
# and checked against their sha256 like any other download.
#
# Pinned release instead (for example in a product's distro layer or
# local.conf): turn the checkout off and name the repository and commit,
#   UAVSTREAM_EXTERNALSRC:pn-uavstream = ""
#   UAVSTREAM_GIT_URI:pn-uavstream = "git://git.example.com/uavstream.git;protocol=https;branch=release-0.1"
#   SRCREV:pn-uavstream = "<40-hex commit of the release tag>"
# The crates .inc and LIC_FILES_CHKSUM of that commit's layer then match
# its Cargo.lock and licences (scripts/check-image checks both on every
# commit), so use the layer from the same tag.
UAVSTREAM_EXTERNALSRC ??= "${UAVSTREAM_TREE}"
UAVSTREAM_GIT_URI ??= ""
EXTERNALSRC = "${UAVSTREAM_EXTERNALSRC}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"
# No oe-workdir/oe-logs symlinks in the developer's checkout.
EXTERNALSRC_SYMLINKS = ""
inherit_defer ${@'externalsrc' if d.getVar('UAVSTREAM_EXTERNALSRC') else ''}

SRC_URI = "${@'' if d.getVar('UAVSTREAM_EXTERNALSRC') else d.getVar('UAVSTREAM_GIT_URI') + ';destsuffix=' + d.getVar('BP')}"
# No SRCREV default: a git build without one is refused by the fetcher, so a
# release build is always pinned to a commit.

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd update-rc.d useradd

# Cargo features. "std" is the I/O half of the crate and always on; the
# encoders are PACKAGECONFIG options, passed to `cargo build` through
# PACKAGECONFIG_CONFARGS by cargo.bbclass.
#   software: OpenH264 built from source (C++), the only H.264 encoder on a
#             CM5 (no hardware encoder) and a fallback elsewhere.
#   v4l2:     V4L2 capture and M2M encoder through the v4l2r crate, whose
#             build script runs bindgen, hence libclang from clang-native
#             and the target's uapi headers through the sysroot.
#   libcamera: source=libcamera, Pi CSI cameras through the ISP, through
#             the libcamera crate: its build script finds libcamera with
#             pkg-config, compiles a C++ shim and runs bindgen (clang-native).
#             libcamera is in meta-multimedia; with meta-raspberrypi its Pi
#             pipelines are there. The Raspberry Pi machines turn it on
#             (dynamic-layers/multimedia-layer).
#   webrtc:   browsers play the streams over WebRTC (WHEP) through str0m with
#             its aws-lc-rs crypto; aws-lc-sys builds its C and assembly
#             with the target's C compiler alone (no cmake, nasm or bindgen
#             on Linux).
CARGO_BUILD_FLAGS += "--no-default-features --features std"
PACKAGECONFIG ??= "software v4l2 webrtc"
PACKAGECONFIG[software] = "--features software"
PACKAGECONFIG[webrtc] = "--features webrtc"
PACKAGECONFIG[v4l2] = "--features v4l2,,clang-native"
PACKAGECONFIG[libcamera] = "--features libcamera,,libcamera clang-native"

export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "--sysroot=${STAGING_DIR_TARGET}"
# libcamera-sys asks pkg-config for libcamera while cross-compiling.
export PKG_CONFIG_ALLOW_CROSS = "1"

do_install:append() {
    install -d ${D}${sysconfdir}/default
    install -m 0644 ${S}/dist/default/uavstream ${D}${sysconfdir}/default/uavstream

    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${S}/dist/uavstream.service ${D}${systemd_system_unitdir}/uavstream.service
        install -d ${D}${nonarch_libdir}/sysusers.d
        install -m 0644 ${S}/dist/uavstream.sysusers ${D}${nonarch_libdir}/sysusers.d/uavstream.conf
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -d ${D}${INIT_D_DIR}
        install -m 0755 ${S}/dist/S99uavstream ${D}${INIT_D_DIR}/uavstream
    fi
}

# A fixed system user in "video" (camera, encoder and dma-heap nodes are
# group video), the same account dist/uavstream.sysusers describes.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir /nonexistent \
                       --shell /sbin/nologin --user-group --groups video uavstream"

SYSTEMD_SERVICE:${PN} = "uavstream.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

INITSCRIPT_NAME = "uavstream"
INITSCRIPT_PARAMS = "start 99 2 3 4 5 . stop 01 0 1 6 ."

# The sysusers.d file describes the same account for systemd-sysusers
# (images that create users at boot, or a factory reset of /etc).
FILES:${PN} += "${nonarch_libdir}/sysusers.d"

CONFFILES:${PN} = "${sysconfdir}/default/uavstream"
