# config.txt: describe the fitted camera instead of auto-detecting it, so the
# sensor probes the same way on every boot and on either CSI connector.
# The upstream overlays (imx477, imx708, imx219) are deployed by
# meta-raspberrypi; UAVSTREAM_CAMERA_OVERLAY (default in conf/layer.conf)
# picks one, with parameters, e.g. "imx708,cam0" or "imx477,rotation=0".
RPI_EXTRA_CONFIG:append:raspberrypi-cm5-io-board = " \n# uavstream camera\ncamera_auto_detect=0\ndtoverlay=${UAVSTREAM_CAMERA_OVERLAY}\n"
RPI_EXTRA_CONFIG:append:raspberrypi4-64 = " \n# uavstream camera\ncamera_auto_detect=0\ndtoverlay=${UAVSTREAM_CAMERA_OVERLAY}\n"
