"""Push events from GitHub and GitLab: deployments and runs as they happen.

A delivery is verified (:mod:`.verify`), parsed into the records the pollers make of
the same objects (:mod:`.github`, :mod:`.gitlab`, scoped by :mod:`.scope`), and stored
idempotently (:mod:`.store`). The poll keeps running, less often, and reconciles
whatever a webhook missed; a lost, late or repeated delivery never changes a count.
"""
