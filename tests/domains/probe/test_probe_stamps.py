"""Whose clock times a phase: the kernel's packet stamps, checked against the prober's own."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from exporter.domains.probe.sources.stamps import (
    Stamp,
    StampedSocket,
    handshake_seconds,
    hold_receive_stamping,
)

MS = 1_000_000  # ns


class TestWhoseInterval:
    def test_the_kernels_interval_when_both_ends_have_one(self) -> None:
        """Sent at user 0 (kernel 1000 ms), read at user 30 ms though it arrived 20 ms after."""
        sent = Stamp(user=0, floor=0, kernel=1000 * MS)
        answer = Stamp(user=30 * MS, floor=0, kernel=1020 * MS)
        assert sent.until(answer) == pytest.approx(0.020)

    def test_the_probers_interval_when_an_end_has_no_kernel_stamp(self) -> None:
        sent = Stamp(user=0, floor=0, kernel=None)
        answer = Stamp(user=30 * MS, floor=0, kernel=1020 * MS)
        assert sent.until(answer) == pytest.approx(0.030)

    def test_a_realtime_step_between_the_stamps_is_not_believed(self) -> None:
        """The kernel's clock jumped 1 s forward between send and answer: its interval is
        longer than the whole span the prober saw, so the prober's 30 ms stand."""
        sent = Stamp(user=0, floor=0, kernel=1000 * MS)
        answer = Stamp(user=30 * MS, floor=0, kernel=2020 * MS)
        assert sent.until(answer) == pytest.approx(0.030)
        backwards = Stamp(user=30 * MS, floor=0, kernel=990 * MS)
        assert sent.until(backwards) == pytest.approx(0.030)

    def test_two_receives_may_be_read_closer_together_than_they_arrived(self) -> None:
        """First byte read 5 ms late, last on time: the kernel's 100 ms are right."""
        first = Stamp(user=5 * MS, floor=0, kernel=1000 * MS)
        last = Stamp(user=100 * MS, floor=0, kernel=1100 * MS)
        assert first.until(last) == pytest.approx(0.100)


async def _exchange() -> tuple[Stamp, Stamp, float | None]:
    """One ping and pong over a fresh loopback connection, stamped on the client's side."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    client.setblocking(False)
    peer, _ = listener.accept()
    wire = StampedSocket(client)
    try:
        sent = await wire.send(b"ping")
        assert peer.recv(4) == b"ping"
        peer.sendall(b"pong")
        data, got = await wire.recv()
        assert data == b"pong"
        return sent, got, handshake_seconds(client)
    finally:
        wire.close()
        peer.close()
        listener.close()


@pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPING is Linux's")
class TestOnLinux:
    def test_while_receive_stamping_is_held_sends_and_receives_carry_the_kernels_stamps(
        self,
    ) -> None:
        """The kernel turns receive stamping on through deferred work after the first socket
        asks; once the prober's keeper has seen it on, every probe's answer is stamped."""
        keeper = hold_receive_stamping()
        assert keeper is not None
        try:
            sent, got, handshake = asyncio.run(self._once_stamping_is_on())
        finally:
            keeper.close()
        assert sent.kernel is not None and got.kernel is not None
        assert 0 <= sent.until(got) <= (got.user - sent.user) / 1e9
        assert handshake is not None and 0 < handshake < 0.1

    @staticmethod
    async def _once_stamping_is_on() -> tuple[Stamp, Stamp, float | None]:
        """The exchange after the first whose answer came stamped (the deferred work ran)."""
        for _ in range(200):
            if (await _exchange())[1].kernel is not None:
                return await _exchange()
            await asyncio.sleep(0.01)
        raise AssertionError("the kernel never stamped a receive within 2 s of being asked")

    def test_an_answer_without_a_kernel_stamp_is_timed_by_the_prober(self) -> None:
        """Whatever the kernel's state, an interval never comes out negative or longer than
        what the prober itself saw between sending and reading."""
        sent, got, _ = asyncio.run(_exchange())
        assert 0 <= sent.until(got) <= (got.user - sent.user) / 1e9
