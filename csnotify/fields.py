"""Names of the normalised event's flat fields (everything but ``raw``), in output order.
One list for the event itself, ``--where`` filters and message templates."""

EVENT_FIELDS = (
    "id", "type", "level", "state", "category", "created", "account", "domain", "username",
    "resource_type", "resource_id", "resource_name", "description", "source",
)  # fmt: skip
