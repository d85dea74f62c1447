"""The garbage collector's setting for a long-running daemon: what lives as long as the
process is set aside once, so that collections stop walking it.

A full collection walks every container object the interpreter tracks: the daemon's
modules, classes, functions, config models and store, hundreds of thousands of objects
that live until the process ends. A large render allocates enough to set off one or two
full collections, each 60 to 90 ms on that heap at 2,000 services, walking those same
objects every time. ``gc.freeze()`` moves every tracked object into a permanent
generation the collector ignores (the standard library documents it for pre-forking
servers; here it is for the walks, not for copy-on-write); what the process allocates
afterwards is collected as before.
"""

from __future__ import annotations

import gc


def set_aside_long_lived() -> int:
    """Collect what is garbage now, then freeze every remaining tracked object; return
    how many are frozen. Called once, after start-up: an object frozen here and
    dropped later is never collected if it is in a reference cycle, so the garbage
    is collected first."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
