"""Delivery: from an accepted event to its outcome, one stage a module.

intake (event -> targets) -> policy (mutes, pacing) -> outbox (pending deliveries in the
store) -> workers (per endpoint, ordered per resource, retries) -> outcomes (counters,
switch-off). ``pipeline.Pipeline`` wires them; ``settings`` holds what they are told.
"""
