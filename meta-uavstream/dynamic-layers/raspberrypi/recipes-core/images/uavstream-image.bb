SUMMARY = "Raspberry Pi CM5/CM4 image that boots into the uavstream RTSP camera daemon"
DESCRIPTION = "core-image-base plus uavstream: the daemon starts at boot \
               (systemd unit or init script, whichever init the distro has) \
               and serves rtsp://<board>:8554/live with the settings of \
               the uavstream.* keys in cmdline.txt."
LICENSE = "MIT"

inherit core-image

IMAGE_INSTALL:append = " uavstream"

# What docs/flash-cm5.md writes to a CM5/CM4 eMMC or an SD card: the whole
# disk (boot partition with config.txt and cmdline.txt, root file system),
# compressed, and its block map for bmaptool. The partition layout is
# meta-raspberrypi's sdimage-raspberrypi.wks.
IMAGE_FSTYPES = "wic.bz2 wic.bmap"
