################################################################################
#
# uavstream
#
################################################################################

# The package lives in the repository it builds: this external tree is the
# repository's buildroot-ext/ directory, so the source is its parent, copied
# (rsync) into the build directory with nothing downloaded. Build products
# and caches of the checkout stay out of the copy.
UAVSTREAM_SITE = $(BR2_EXTERNAL_UAVSTREAM_PATH)/..
UAVSTREAM_SITE_METHOD = local
UAVSTREAM_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=/target --exclude=/.rig-cache --exclude=/fuzz \
	--exclude=/VENDOR --exclude=/.cargo
UAVSTREAM_LICENSE = MIT or Apache-2.0
UAVSTREAM_LICENSE_FILES = LICENSE-APACHE LICENSE-MIT

# "std" is the I/O half of the crate and always on; the encoders are
# Kconfig options. cargo-package runs `cargo build` and then
# `cargo install`, so both get the same feature list.
UAVSTREAM_FEATURES = std
ifeq ($(BR2_PACKAGE_UAVSTREAM_SOFTWARE_ENCODER),y)
UAVSTREAM_FEATURES += software
endif
ifeq ($(BR2_PACKAGE_UAVSTREAM_WEBRTC),y)
UAVSTREAM_FEATURES += webrtc
endif
ifeq ($(BR2_PACKAGE_UAVSTREAM_V4L2),y)
UAVSTREAM_FEATURES += v4l2
# v4l2r's build script runs bindgen: libclang from host-clang, and the
# target's <linux/videodev2.h> from the staging sysroot.
UAVSTREAM_DEPENDENCIES += host-clang
UAVSTREAM_CARGO_ENV += \
	LIBCLANG_PATH=$(HOST_DIR)/lib \
	BINDGEN_EXTRA_CLANG_ARGS="--sysroot=$(STAGING_DIR)"
endif

ifeq ($(BR2_PACKAGE_UAVSTREAM_LIBCAMERA),y)
UAVSTREAM_FEATURES += libcamera
# libcamera-sys finds libcamera with pkg-config (cross: the staging
# sysroot), compiles its C++ shim with the target compiler and runs
# bindgen on libcamera's headers.
UAVSTREAM_DEPENDENCIES += host-clang host-pkgconf libcamera
UAVSTREAM_CARGO_ENV += \
	LIBCLANG_PATH=$(HOST_DIR)/lib \
	PKG_CONFIG_ALLOW_CROSS=1 \
	BINDGEN_EXTRA_CLANG_ARGS="--sysroot=$(STAGING_DIR)"
endif

UAVSTREAM_CARGO_OPTS = \
	--no-default-features \
	--features "$(subst $(space),$(comma),$(strip $(UAVSTREAM_FEATURES)))"
UAVSTREAM_CARGO_BUILD_OPTS = $(UAVSTREAM_CARGO_OPTS)
UAVSTREAM_CARGO_INSTALL_OPTS = $(UAVSTREAM_CARGO_OPTS)

# Buildroot builds cargo packages offline and vendors their crates as part
# of the download, which a local package does not have. Vendor them here,
# the same way (cargo vendor --locked into VENDOR/, Buildroot's cargo home,
# its lock), before every build, so `make uavstream-rebuild` after a
# Cargo.lock change vendors the new crates too: every crate is checked
# against the checksum Cargo.lock records for it.
define UAVSTREAM_VENDOR_CRATES
	mkdir -p $(@D)/.cargo $(BR_CARGO_HOME)
	cd $(@D) && $(HOST_MAKE_ENV) $(PKG_COMMON_CARGO_ENV) \
		flock $(BR_CARGO_HOME)/.br-lock \
		cargo vendor --locked VENDOR > $(@D)/.cargo/config.toml
endef
UAVSTREAM_PRE_BUILD_HOOKS += UAVSTREAM_VENDOR_CRATES

define UAVSTREAM_INSTALL_DEFAULTS
	$(INSTALL) -D -m 0644 $(@D)/dist/default/uavstream \
		$(TARGET_DIR)/etc/default/uavstream
endef
UAVSTREAM_POST_INSTALL_TARGET_HOOKS += UAVSTREAM_INSTALL_DEFAULTS

define UAVSTREAM_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(UAVSTREAM_PKGDIR)/S99uavstream \
		$(TARGET_DIR)/etc/init.d/S99uavstream
endef

define UAVSTREAM_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(UAVSTREAM_PKGDIR)/uavstream.service \
		$(TARGET_DIR)/usr/lib/systemd/system/uavstream.service
	$(INSTALL) -D -m 0644 $(@D)/dist/uavstream.sysusers \
		$(TARGET_DIR)/usr/lib/sysusers.d/uavstream.conf
endef

# A fixed system user in group video: camera, encoder and dma-heap nodes
# belong to that group (same account as dist/uavstream.sysusers).
define UAVSTREAM_USERS
	uavstream -1 uavstream -1 * - - video uavstream camera daemon
endef

$(eval $(cargo-package))
