#!/bin/sh
# Post-build for uavstream images: a serial/HDMI console as upstream's
# Raspberry Pi boards have, and a place for /etc/default/uavstream edits.
set -eu

TARGET_DIR="$1"

if [ -e "${TARGET_DIR}/etc/inittab" ]; then
	grep -qE '^tty1::' "${TARGET_DIR}/etc/inittab" ||
		sed -i '/GENERIC_SERIAL/a\
tty1::respawn:/sbin/getty -L tty1 0 vt100 # HDMI console' "${TARGET_DIR}/etc/inittab"
elif [ -d "${TARGET_DIR}/etc/systemd" ]; then
	mkdir -p "${TARGET_DIR}/etc/systemd/system/getty.target.wants"
	ln -sf /lib/systemd/system/getty@.service \
		"${TARGET_DIR}/etc/systemd/system/getty.target.wants/getty@tty1.service"
fi

# The daemon needs no configuration file; keep the commented defaults so a
# field engineer can see every key on the device.
test -f "${TARGET_DIR}/etc/default/uavstream"
