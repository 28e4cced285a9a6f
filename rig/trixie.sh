# shellcheck shell=bash
# Sourced by rig/libcamera and rig/libcamera-vimc: the Debian trixie chroot with libcamera 0.4.0
# (Debian 12's 0.0.3 is too old for the libcamera crate) and the way to build in it.
#
#   trixie_chroot              makes (or finds) the cached chroot; sets CHROOT
#   trixie_enter FUNCTION      runs FUNCTION in a private mount namespace where the chroot sees
#                              /proc, /sys, /dev, the host's Rust toolchain and $ROOT (and
#                              $LCTARGET) at their own paths; the mounts vanish with it
#   in_chroot CMD...           (inside FUNCTION, in a subshell) runs CMD in the chroot, in $ROOT,
#                              with the host's toolchain and CARGO_TARGET_DIR=$LCTARGET
#
# Needs ROOT, CACHE, SUDO, stage() from the caller. LCTARGET defaults to target/libcamera (the
# chroot's glibc is newer than the host's, so its builds never share the host's target dir).
# The chroot is made by mmdebstrap and cached in $CACHE/trixie-libcamera-<hash of the options>.

LCTARGET="${LCTARGET:-$ROOT/target/libcamera}"

trixie_chroot() {
	# libcamera 0.4 with its virtual and vimc handlers and IPA modules, and what libcamera-sys
	# needs to build its C++ shim and bindings (pkg-config, g++, libclang); udev for the vimc
	# guest (rig/libcamera-vimc), where libcamera learns of a removed camera from udevd.
	local pkgs="libcamera-dev,libcamera-ipa,pkg-config,clang,libclang-dev,g++,make,ca-certificates,udev"
	local opts="--variant=apt --include=$pkgs --dpkgopt=path-exclude=/usr/share/doc/* \
--dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/locale/* trixie"
	local key
	key=$(printf '%s\n' "$opts" | sha256sum | cut -c1-12)
	CHROOT="$CACHE/trixie-libcamera-$key"
	if [ ! -f "$CHROOT/.done" ]; then
		stage "building the trixie chroot with mmdebstrap ($pkgs)"
		$SUDO rm -rf "$CACHE"/trixie-libcamera-*
		# shellcheck disable=SC2086  # $opts is a list of options
		$SUDO mmdebstrap -q $opts "$CHROOT"
		$SUDO touch "$CHROOT/.done"
	fi
	mkdir -p "$LCTARGET"
	stage "fetching crates on the host (the chroot builds offline)"
	(cd "$ROOT" && cargo fetch --locked -q)
}

# Runs "$@" in the chroot, in $ROOT, with the host's toolchain, replacing the calling shell (so a
# signal to it reaches the command). LIBCAMERA_PIPELINES_MATCH_LIST defaults to `virtual`.
in_chroot() {
	exec chroot "$CHROOT" env -i HOME="$HOME" PATH="$HOME/.cargo/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
		CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
		CARGO_TARGET_DIR="$LCTARGET" CARGO_TERM_COLOR=never \
		CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt \
		LIBCAMERA_PIPELINES_MATCH_LIST="${LIBCAMERA_PIPELINES_MATCH_LIST:-virtual}" LIBCAMERA_LOG_LEVELS="*:WARN" \
		bash -c 'cd "$0" && exec "$@"' "$ROOT" "$@"
}

# The namespace's mounts, then "$1" (an exported function).
trixie_mounts() {
	set -euo pipefail
	mount --make-rprivate /
	local d
	for d in /proc /sys /dev "${CARGO_HOME:-$HOME/.cargo}" "${RUSTUP_HOME:-$HOME/.rustup}" "$ROOT" "$LCTARGET"; do
		[ -d "$d" ] || continue
		mkdir -p "$CHROOT$d"
		mount --rbind "$d" "$CHROOT$d"
	done
	"$1"
}

trixie_enter() {
	# shellcheck disable=SC2163  # exports the function named by $1
	export -f "$1" trixie_mounts stage in_chroot
	export CHROOT ROOT T0 HOME LCTARGET CACHE
	$SUDO unshare -m bash -c 'trixie_mounts "$0"' "$1"
}
