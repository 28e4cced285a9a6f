# shellcheck shell=bash
# Sourced by rig/run and rig/libcamera-vimc: Debian 12's own kernel for the QEMU guests, and
# media drivers Debian does not build, built out of tree from its source.
#
#   kernel_version             KVER, PKGVER (the kernel linux-image-amd64 points at), HEADERS
#   kernel_fetch               after linux-headers-$KVER is installed: checks it matches, downloads
#                              the image and source packages (never installed into the host's
#                              /boot) into $CACHE and unpacks the image; sets VMLINUZ, MODDIR
#   oot_modules DIR KBUILD PREPARE PATH...
#                              builds the modules KBUILD (a Kbuild file's text) names in DIR
#                              from the sources under PATHs of linux-source-6.1 (a directory's
#                              *.c/*.h, or one file), after running the shell command PREPARE
#                              there ("" for none), unless DIR/.done exists; name DIR after
#                              PREPARE's effect, it is the cache key
#
# Needs CACHE and stage() from the caller.

kernel_version() {
	local abi
	abi=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\([0-9.]*-[0-9]*\)-amd64$/\1/p' | head -1)
	PKGVER=$(apt-cache policy "linux-image-$abi-amd64" | sed -n 's/ *Candidate: //p')
	[ -n "$abi" ] && [ -n "$PKGVER" ] || { echo "rig: cannot find the Debian kernel version" >&2; exit 1; }
	KVER="$abi-amd64"
	HEADERS="/usr/src/linux-headers-$KVER"
}

kernel_fetch() {
	local hdrver img src kdir
	hdrver=$(dpkg-query -W -f='${Version}' "linux-headers-$KVER")
	[ "$hdrver" = "$PKGVER" ] || { echo "rig: linux-headers $hdrver does not match linux-image $PKGVER" >&2; exit 1; }
	img="linux-image-${KVER}_${PKGVER}_amd64.deb"
	src="linux-source-6.1_${PKGVER}_all.deb"
	[ -f "$CACHE/$img" ] || { stage "downloading $img"; (cd "$CACHE" && apt-get download -q "linux-image-$KVER=$PKGVER"); }
	[ -f "$CACHE/$src" ] || { stage "downloading $src"; (cd "$CACHE" && apt-get download -q "linux-source-6.1=$PKGVER"); }
	SRC_DEB="$CACHE/$src"
	kdir="$CACHE/kernel-$PKGVER"
	if [ ! -f "$kdir/.done" ]; then
		stage "unpacking the kernel image package"
		rm -rf "$kdir" && mkdir -p "$kdir"
		dpkg-deb -x "$CACHE/$img" "$kdir"
		touch "$kdir/.done"
	fi
	# shellcheck disable=SC2034  # for the sourcing script
	VMLINUZ="$kdir/boot/vmlinuz-$KVER"
	# shellcheck disable=SC2034
	MODDIR="$kdir/lib/modules/$KVER/kernel"
}

oot_modules() {
	local dir="$1" kbuild="$2" prepare="$3" p
	shift 3
	[ -f "$dir/.done" ] && return 0
	stage "building $(basename "$dir") out of tree"
	rm -rf "$dir" && mkdir -p "$dir/src"
	dpkg-deb --fsys-tarfile "$SRC_DEB" | tar -x -C "$dir/src" ./usr/src/linux-source-6.1.tar.xz
	tar -xJf "$dir/src/usr/src/linux-source-6.1.tar.xz" -C "$dir/src" "${@/#/linux-source-6.1/}"
	for p in "$@"; do
		if [ -d "$dir/src/linux-source-6.1/$p" ]; then
			cp "$dir/src/linux-source-6.1/$p"/*.[ch] "$dir/"
		else
			cp "$dir/src/linux-source-6.1/$p" "$dir/"
		fi
	done
	rm -rf "$dir/src"
	printf '%s\n' "$kbuild" >"$dir/Kbuild"
	[ -z "$prepare" ] || (cd "$dir" && eval "$prepare")
	nice make -s -C "$HEADERS" M="$dir" modules >"$dir/build.log" 2>&1 || { cat "$dir/build.log"; exit 1; }
	touch "$dir/.done"
}
