include $(sort $(wildcard $(BR2_EXTERNAL_UAVSTREAM_PATH)/package/*/*.mk))
