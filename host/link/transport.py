"""Opening a serial link by URL: a device path (a real board or a pty), socket://host:port,
rfc2217://host:port, loop://, all through pyserial; and listing the boards plugged in."""
from __future__ import annotations

import socket
import time

import serial

from cqtf.errors import DeviceError

DEFAULT_BAUDRATE = 115200


RESETS = ("dtr", "rts")


def open_port(url: str, baudrate: int = DEFAULT_BAUDRATE, timeout: float = 0.05,
              reset: str | None = None) -> serial.SerialBase:
    """Open `url` for exclusive use; a clear DeviceError when it is missing or busy.

    reset "dtr" or "rts" pulses that line low then high once opened: on many boards (Arduino-style
    auto-reset, ESP32, some ST-LINK adapters wired for it) this restarts the firmware, so a run
    begins from a known state. The board then needs a moment to boot before the first request."""
    is_url = "://" in url
    try:
        if is_url:
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
            _no_delay(port)
        else:
            port = serial.Serial(url, baudrate=baudrate, timeout=timeout, exclusive=True)
        if reset:
            _pulse(port, reset)
        return port
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


def _no_delay(port: serial.SerialBase) -> None:
    """pyserial's socket:// leaves Nagle's algorithm on: a request written while the previous one
    is unacknowledged then waits for the peer's delayed ACK (about 40 ms), which stalls pipelining.
    (rfc2217:// sets TCP_NODELAY itself.)"""
    sock = getattr(port, "_socket", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _pulse(port: serial.SerialBase, line: str, seconds: float = 0.1) -> None:
    if line not in RESETS:
        raise DeviceError(f"unknown reset line {line!r}", f"use one of: {', '.join(RESETS)}")
    setattr(port, line, True)  # asserted: the reset pin is held low
    time.sleep(seconds)
    setattr(port, line, False)
    time.sleep(0.5)  # the board boots
    port.reset_input_buffer()


def list_ports() -> list[dict]:
    """The serial ports of this machine that look like boards (USB ones first)."""
    from serial.tools import list_ports as lp

    ports = []
    for p in sorted(lp.comports(), key=lambda p: (p.vid is None, p.device)):
        ports.append({"device": p.device, "description": p.description or "",
                      "usb": f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None else "",
                      "serial_number": p.serial_number or "", "manufacturer": p.manufacturer or ""})
    return ports
