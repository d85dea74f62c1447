"""A probe's connected socket, its sends and receives stamped by the kernel.

With many checks due at once, the event loop runs each probe's callbacks in
turn: an answer that arrived while the prober parsed 15 others is seen up to
~10 ms late, and stamping it then adds the other checks' work to the target's
latency. Linux stamps each packet in software as the socket sends it
(``SOF_TIMESTAMPING_TX_SOFTWARE``, read from the socket's error queue) and as it
receives it (``SOF_TIMESTAMPING_RX_SOFTWARE``, ancillary data of ``recvmsg``),
whatever the loop was doing; a phase between two such events is the kernel's
difference of the two (see the Linux kernel's
``Documentation/networking/timestamping.rst``).

The kernel's stamps are ``CLOCK_REALTIME``, and libfaketime (which the suite runs
under) cannot fake them, so only differences of two kernel stamps are used,
never a kernel stamp against ``time.time()`` or ``perf_counter``. Every
:class:`Stamp` also holds the prober's own ``perf_counter_ns`` reading of the
same event (just before the send; when the loop reported the socket readable),
and both events surely happened between the earlier one's floor (the send's own
reading; a receive's: when the connection was made) and the later one's reading.
An interval is the prober's own when either end lacks a kernel stamp (no
``SO_TIMESTAMPING``: not Linux) or when the kernel's does not fit in that span
(the realtime clock was stepped between the two events).
"""

from __future__ import annotations

import asyncio
import platform
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass

# <linux/net_tstamp.h> and <asm/socket.h>; Python's socket module does not name them.
# SO_TIMESTAMPING is 37 on every Linux architecture but parisc and sparc.
_SO_TIMESTAMPING = 37
_TX_SOFTWARE, _RX_SOFTWARE, _SOFTWARE = 1 << 1, 1 << 3, 1 << 4
_OPT_ID, _OPT_TSONLY = 1 << 7, 1 << 11
_FLAGS = _TX_SOFTWARE | _RX_SOFTWARE | _SOFTWARE | _OPT_ID | _OPT_TSONLY
# struct scm_timestamping: three struct timespec (native longs); [0] is the software stamp.
_TIMESPEC = struct.Struct("@ll")
# struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data.
_EXTENDED_ERR = struct.Struct("@IBBBBII")
_ORIGIN_TIMESTAMPING = 4
_RECVERR = {(socket.IPPROTO_IP, 11), (socket.IPPROTO_IPV6, 25)}  # IP_RECVERR, IPV6_RECVERR
_ANCILLARY = 256
_READ = 64 * 1024
# How far a kernel interval may exceed the prober's own that brackets it (clock rates differ).
_SLACK_NS = 1_000_000
# struct tcp_info (<linux/tcp.h>): 8 one-byte fields, then 32-bit ones; tcpi_state is the
# first, tcpi_rtt (microseconds) the 16th of the 32-bit ones, tcpi_total_retrans the 24th.
_TCP_INFO = struct.Struct("@8B24I")
_ESTABLISHED, _RTT, _TOTAL_RETRANS = 1, 8 + 15, 8 + 23

KERNEL_STAMPS = sys.platform == "linux" and not platform.machine().startswith(("parisc", "sparc"))


@dataclass(slots=True)
class Stamp:
    """One event's moment: the prober's ``perf_counter_ns`` reading of it, one that
    surely came no later (``floor``), and the kernel's own stamp (ns) if it has one."""

    user: int
    floor: int
    kernel: int | None = None

    def until(self, later: Stamp) -> float:
        """Seconds from this event to ``later``, a receive (see the module docstring)."""
        user = later.user - self.user
        if self.kernel is not None and later.kernel is not None:
            kernel = later.kernel - self.kernel
            # Both kernel events lie between this one's floor and when the later was read.
            if 0 <= kernel <= later.user - self.floor + _SLACK_NS:
                return kernel / 1e9
        return user / 1e9


def _tcp_info(sock: socket.socket) -> tuple[int, ...] | None:
    """The socket's ``struct tcp_info`` up to ``tcpi_total_retrans`` (Linux), else None."""
    if not hasattr(socket, "TCP_INFO"):
        return None
    try:
        return _TCP_INFO.unpack_from(
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
        )
    except (OSError, struct.error):
        return None


def established(sock: socket.socket) -> bool:
    """Whether a non-blocking connect has already completed (on loopback the handshake is
    done within ``connect()`` itself), read at once instead of a loop round later."""
    info = _tcp_info(sock)
    return info is not None and info[0] == _ESTABLISHED


def handshake_seconds(sock: socket.socket) -> float | None:
    """The TCP handshake's round trip as the kernel timed it (SYN sent to SYN-ACK
    received: ``tcpi_rtt``'s first and only sample), or None when a SYN was retransmitted
    (the sample then leaves out the wait) or the system does not tell."""
    info = _tcp_info(sock)
    if info is None or info[0] != _ESTABLISHED or info[_TOTAL_RETRANS] or not info[_RTT]:
        return None
    return float(info[_RTT]) / 1e6


def hold_receive_stamping() -> socket.socket | None:
    """A socket that keeps the kernel's receive stamping on while it stays open.

    Linux turns receive stamping on for the whole system when the first socket asks
    for it, but through deferred work (``net_enable_timestamp`` in ``net/core/dev.c``),
    and off again when the last such socket closes. A probe that opens its connection
    while no other socket holds it would race that work, and its answer would arrive
    unstamped. The prober holds this one from its start, so every probe's own socket
    finds stamping already on. None where the kernel does not stamp.
    """
    if not KERNEL_STAMPS:
        return None
    keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        keeper.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _RX_SOFTWARE | _SOFTWARE)
    except OSError:
        keeper.close()
        return None
    return keeper


class StampedSocket:
    """A connected non-blocking TCP socket: ``send`` and ``recv`` with their :class:`Stamp`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.kernel = KERNEL_STAMPS and self._enable()
        # Sends whose kernel stamp has not been read yet: (offset of their last byte, stamp).
        self._unstamped: deque[tuple[int, Stamp]] = deque()
        self._sent_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._woke = 0
        self._reading = False
        self._last_rx: Stamp | None = None
        self._opened = time.perf_counter_ns()  # no answer arrives before the connection

    def _enable(self) -> bool:
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _FLAGS)
        except OSError:
            return False
        return True

    async def send(self, data: bytes) -> Stamp:
        """Send all of ``data``; the stamp is of its last byte leaving."""
        now = time.perf_counter_ns()
        stamp = Stamp(now, now)
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                await self._writable()
                continue
            view = view[sent:]
        self._sent_bytes += len(data)
        if self.kernel:
            self._unstamped.append((self._sent_bytes - 1, stamp))
            self._drain_errors()  # on loopback the stamp is queued within send() itself
        return stamp

    async def recv(self) -> tuple[bytes, Stamp]:
        """The next bytes received (b"" at the end of the stream), stamped as they arrived."""
        waited = False
        while True:
            if self._unstamped:
                self._drain_errors()
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(_READ, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                await self._readable()
                waited = True
                continue
            user = self._woke if waited else time.perf_counter_ns()
            stamp = Stamp(user, self._opened, self._rx_kernel(ancillary))
            if stamp.kernel is None and not data and self._last_rx is not None:
                stamp = self._last_rx  # a bare end of stream may carry no stamp: its last data's
            self._last_rx = stamp
            return data, stamp

    def _rx_kernel(self, ancillary: list[tuple[int, int, bytes]]) -> int | None:
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPING:
                seconds, nanos = _TIMESPEC.unpack_from(payload)
                if seconds or nanos:
                    return int(seconds) * 1_000_000_000 + int(nanos)
        return None

    def _drain_errors(self) -> None:
        """Read the send stamps queued so far (an unread one keeps the socket polling ready)."""
        while True:
            try:
                _data, ancillary, _flags, _addr = self.sock.recvmsg(
                    0, _ANCILLARY, socket.MSG_ERRQUEUE
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # nothing this prober asked for
            kernel, key = self._rx_kernel(ancillary), None
            for level, kind, payload in ancillary:
                if (level, kind) in _RECVERR and len(payload) >= _EXTENDED_ERR.size:
                    fields = _EXTENDED_ERR.unpack_from(payload)
                    if fields[1] == _ORIGIN_TIMESTAMPING:
                        key = fields[6]
            if kernel is None or key is None:
                continue
            while self._unstamped and self._unstamped[0][0] <= key:
                self._unstamped.popleft()[1].kernel = kernel

    def _wake(self) -> None:
        self._woke = time.perf_counter_ns()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.kernel:
            self._drain_errors()  # a late send stamp, with nobody reading yet

    async def _readable(self) -> None:
        if not self._reading:
            self.loop.add_reader(self.fd, self._wake)
            self._reading = True
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _writable(self) -> None:
        done: asyncio.Future[None] = self.loop.create_future()

        def writable() -> None:
            if not done.done():
                done.set_result(None)

        self.loop.add_writer(self.fd, writable)
        try:
            await done
        finally:
            self.loop.remove_writer(self.fd)

    def close(self) -> None:
        """Drop the connection at once: a probe never waits for a polite close."""
        if self._reading:
            self.loop.remove_reader(self.fd)
            self._reading = False
        self.sock.close()
