"""cqtf-cortexm: a local PlatformIO development platform (no registry packages).

The only package it uses is `toolchain-gccarmnoneeabi`, which host/pio_offline.py provisions in
PLATFORMIO_CORE_DIR/packages as symlinks to the system's /usr/bin/arm-none-eabi-* (Debian package
gcc-arm-none-eabi). The upload target runs QEMU from $PATH (Debian package qemu-system-arm); no
uploader package is declared, so PlatformIO never tries to fetch one.
"""

from platformio.public import PlatformBase


class CqtfcortexmPlatform(PlatformBase):  # name derived by PlatformIO from "cqtf-cortexm"
    def is_embedded(self):
        return True
