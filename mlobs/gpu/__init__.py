"""GPU telemetry through NVML: device selection, one sample's readings, the background sampler,
energy per epoch, and the standalone ``mlobs gpu-exporter``."""
