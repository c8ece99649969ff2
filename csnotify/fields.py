"""Names of the normalised event's flat fields (everything but ``raw``), in output order.
One list for the event itself, ``--where`` filters and message templates.

The ``*_id`` fields keep the UUIDs the event bus carries (``account``, ``domain``,
``username`` and ``project`` hold names, resolved through the API when keys are set);
``subject`` is an alert's one-line subject."""

from typing import Any

EVENT_FIELDS = (
    "id", "type", "level", "state", "category", "created", "account", "domain", "username",
    "resource_type", "resource_id", "resource_name", "description", "source",
    "account_id", "domain_id", "user_id", "project", "project_id", "subject",
)  # fmt: skip

CATEGORIES = ("ActionEvent", "AlertEvent", "UsageEvent", "ResourceStateEvent", "AsyncJobEvent")

# The phase that carries an operation's outcome. CloudStack publishes Created, Scheduled,
# Started and Completed ActionEvents (ActionEventUtils.onCreatedActionEvent,
# onScheduledActionEvent, onStartedActionEvent, onCompletedActionEvent); a synchronous
# operation publishes only Completed (onActionEvent). An operation whose create phase
# fails publishes only its Created event, at ERROR ("Error while creating entity for
# ...", ActionEventInterceptor.interceptException): nothing is scheduled after it, so that
# failed Created event is its outcome.
OUTCOME_STATE = "Completed"
FAILED_CREATE_STATE = "Created"
# Categories that are outcomes whatever their state; "csnotify" is our own (digests,
# switched-off endpoints).
OUTCOME_CATEGORIES = ("AlertEvent", "csnotify")


def is_outcome(event: Any) -> bool:
    """What a subscription gets by default: each operation's outcome, and alerts."""
    if event.category in OUTCOME_CATEGORIES:
        return True
    if event.category != "ActionEvent":
        return False
    if event.state == FAILED_CREATE_STATE:
        return event.level == "ERROR"
    return event.state in (None, "", OUTCOME_STATE)
