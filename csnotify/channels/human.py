"""Title and body for people (email, SMS, chat), from the subscription's templates."""

from __future__ import annotations

from csnotify.channels.base import Message
from csnotify.pacing import DIGEST_TYPE, digest_text
from csnotify.templates import default_body, default_title, render, tidy

SMS_LIMIT = 160
# Apprise services that end up as a text message: short body, no separate title.
SMS_SCHEMES = frozenset(
    {
        "smseagle", "smseagles", "signal", "signals", "twilio", "sns", "clickatell", "d7sms",
        "kavenegar", "msg91", "plivo", "sinch", "smsmgr", "bulksms", "bulkvs", "burstsms",
        "httpsms", "seven", "vonage", "nexmo", "messagebird", "africastalking", "freemobile",
        "threema", "voipms", "smsc",
    }
)  # fmt: skip


def is_sms(uri: str) -> bool:
    return uri.split("://", 1)[0].lower() in SMS_SCHEMES


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text[: SMS_LIMIT - 1] + "…" if len(text) > SMS_LIMIT else text


def render_message(message: Message) -> tuple[str, str]:
    if message.event.type == DIGEST_TYPE and message.event.category == "csnotify":
        title, body = digest_text(message.event)
        return (
            ("", _short(message.event.description or "")) if is_sms(message.uri) else (title, body)
        )
    values = message.event.fields()
    values["subscription"] = message.subscription.name
    sub = message.subscription
    if is_sms(message.uri):
        if sub.body:
            return "", _short(render(sub.body, values, "--body"))
        text = default_title(values)
        if values.get("level") != "ERROR" and values.get("description"):  # a failure's is in it
            text = f"{text} - {values['description']}"
        return "", _short(text)
    title = tidy(render(sub.title, values, "--title")) if sub.title else default_title(values)
    body = render(sub.body, values, "--body") if sub.body else default_body(values)
    return title, body
