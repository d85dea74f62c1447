"""Run by a child Python the suite starts under libfaketime, before its own code:
repairs its ``time.sleep`` (see :mod:`tests.support.faketime`)."""

from tests.support.faketime import repair_sleep

repair_sleep()
