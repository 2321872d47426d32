"""A deadline one thread re-arms and another sleeps on without waking: Linux's timerfd.

The loop watchdog's thread must not wake while the loop is healthy: every wake-up of a Python
thread takes the GIL from the busy loop thread (a forced switch that costs it a scheduling
round on a loaded machine). The loop's heartbeat pushes the deadline back at each beat; the
watchdog sleeps in ``select`` (GIL released) until a beat is late. Where timerfd is missing
(not Linux), :meth:`Alarm.create` returns None and the watchdog polls as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import sys

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = 0o2000000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.PyDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # PyDLL: the GIL is kept across the call (re-arming must not invite a thread switch).
        libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


class Alarm:
    """A one-shot timer: :meth:`arm` (any thread, cheap) sets it to fire in ``seconds``,
    replacing the previous deadline; :meth:`wait` (one thread) sleeps until it fires, until
    :meth:`wake`, or until ``timeout``."""

    def __init__(self, libc: ctypes.PyDLL, fd: int) -> None:
        self._libc = libc
        self._fd = fd
        self._spec = _Itimerspec()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)

    @classmethod
    def create(cls) -> Alarm | None:
        """An alarm, or None where timerfd is not available."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            return None
        return cls(libc, fd)

    def arm(self, seconds: float) -> None:
        """Fire ``seconds`` from now (unless armed again before)."""
        spec = self._spec
        whole = int(seconds)
        spec.it_value.tv_sec = whole
        spec.it_value.tv_nsec = max(1, int((seconds - whole) * 1e9))
        self._libc.timerfd_settime(self._fd, 0, ctypes.byref(spec), None)

    def wait(self, timeout: float | None) -> bool:
        """Sleep until the alarm fires (True), :meth:`wake` is called or ``timeout`` passes
        (False)."""
        ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
        fired = self._fd in ready
        for fd in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 64)
        return fired

    def wake(self) -> None:
        """End a :meth:`wait` now (from another thread)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
