# cmdline.txt: the stream's defaults as uavstream.* keys, where they can be
# changed on the boot partition without rebuilding the image (see
# docs/boot-config.md). Environment and flags still override them.
# UAVSTREAM_CMDLINE has its default in conf/layer.conf.
CMDLINE:append:raspberrypi-cm5-io-board = " ${UAVSTREAM_CMDLINE}"
CMDLINE:append:raspberrypi4-64 = " ${UAVSTREAM_CMDLINE}"
