"""Live mode (DESIGN §10): ``serve`` receives Aircall's webhooks and logs calls as they happen.

``app`` (the routes), ``inbox`` (the durable queue in the state store),
``worker`` (events through the same runner as a backfill), ``reconcile`` (the
``sync`` path on a timer, and the webhook's upkeep), ``metrics`` and ``serve``
(the process that holds them together).
"""
