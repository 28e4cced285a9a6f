# With meta-multimedia (which has the libcamera recipe) in the build, the
# Raspberry Pi machines get source=libcamera: their CSI cameras (IMX477,
# IMX708, IMX219) deliver raw Bayer and need libcamera's ISP pipeline and
# control loops. meta-raspberrypi's libcamera append enables the Pi
# pipelines (PiSP on a CM5, VC4 on a CM4). The CM4 also keeps v4l2: its
# bcm2835-codec M2M encoder takes libcamera's buffers by DMABUF.
PACKAGECONFIG:append:raspberrypi-cm5-io-board = " libcamera"
PACKAGECONFIG:append:raspberrypi4-64 = " libcamera"
