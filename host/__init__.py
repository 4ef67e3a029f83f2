"""cqtf: train quantized networks with the device's exact integer arithmetic, deploy, validate."""

__version__ = "0.1.0"
