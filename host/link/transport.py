"""Opening a serial link by URL: a device path, socket://host:port, rfc2217://..., loop://."""
from __future__ import annotations

import serial

from cqtf.errors import DeviceError

DEFAULT_BAUDRATE = 115200


def open_port(url: str, baudrate: int = DEFAULT_BAUDRATE, timeout: float = 0.05) -> serial.SerialBase:
    """Open `url` for exclusive use; a clear DeviceError when it is missing or busy."""
    is_url = "://" in url
    try:
        if is_url:
            return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        return serial.Serial(url, baudrate=baudrate, timeout=timeout, exclusive=True)
    except serial.SerialException as e:
        text = str(e)
        if "Resource temporarily unavailable" in text or "busy" in text.lower():
            raise DeviceError(f"serial port {url} is in use by another program",
                              "close the other program (a serial monitor?) and retry") from None
        if "No such file" in text or "could not open port" in text:
            raise DeviceError(f"cannot open serial port {url}: {text}",
                              "check the port name (`python -m serial.tools.list_ports`) or the socket URL") from None
        raise DeviceError(f"cannot open {url}: {text}", "check the URL and that the device is running") from None
    except (ValueError, OSError) as e:
        raise DeviceError(f"cannot open {url}: {e}", "check the URL and that the device is running") from None
