"""The exporter's own health with several replicas: labelled by replica, leases shown, and a
source a peer polls neither up nor down here."""

from __future__ import annotations

from exporter.core.health import SourceHealth


class TestLeasedHealth:
    def test_losing_a_lease_clears_up_and_last_success(self) -> None:
        """The old holder's last verdict would read as stale (or down) beside the new
        holder's: it is dropped, and comes back only with this replica's next poll."""
        h = SourceHealth("github", "github", 60.0, replica="kpi-0", leased=True)
        h.poll_succeeded(1000.0, 0.5)
        h.set_leased(False, 2)
        copy = h.copy()
        assert (copy.up, copy.last_success, copy.leased, copy.leases_held) == (None, None, False, 2)
        h.set_leased(True, 3)
        h.poll_succeeded(1060.0, 0.5)
        assert (h.up, h.last_success) == (True, 1060.0)
