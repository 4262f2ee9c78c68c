"""An email backend that sends mail in the background, from a Spinach job.

Set ``EMAIL_BACKEND = "spinach.contrib.spinachd.mail.BackgroundEmailBackend"``:
``send_messages()`` then schedules the job ``spinachd:send_emails``, which
delivers the messages through ``SPINACH_ACTUAL_EMAIL_BACKEND``.

Job arguments are JSON, so each message travels as a dict of its fields:
subject, body, sender and recipients, headers, content subtypes, HTML (or
other) alternatives and attachments given as ``(filename, content, mimetype)``.
Messages are rebuilt as ``EmailMessage`` or ``EmailMultiAlternatives``: the
behaviour of a subclass of those is not carried over.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend

from .engine import get_engine

__all__ = ["SEND_EMAILS_TASK", "BackgroundEmailBackend", "message_from_json", "message_to_json"]

#: Name of the task that delivers the messages.
SEND_EMAILS_TASK = "spinachd:send_emails"


class BackgroundEmailBackend(BaseEmailBackend):
    """Schedules a job that sends the messages with ``SPINACH_ACTUAL_EMAIL_BACKEND``."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Schedule one job for all ``email_messages``; return how many were scheduled.

        With ``fail_silently``, a failure to schedule returns 0 instead of raising.
        """
        if not email_messages:
            return 0
        try:
            payload = [message_to_json(m) for m in email_messages]
            get_engine().schedule(SEND_EMAILS_TASK, payload)
        except Exception:
            if self.fail_silently:
                return 0
            raise
        return len(email_messages)


def message_to_json(message: EmailMessage) -> dict[str, Any]:
    """The fields of ``message`` as JSON types, for :func:`message_from_json`.

    Raises:
        TypeError: an attachment is a MIME object, which cannot travel as JSON.
    """
    data: dict[str, Any] = {
        "subject": _text(message.subject),
        "body": _text(message.body),
        "from_email": _text(message.from_email),
        "to": [_text(a) for a in message.to],
        "cc": [_text(a) for a in message.cc],
        "bcc": [_text(a) for a in message.bcc],
        "reply_to": [_text(a) for a in message.reply_to],
        "headers": {_text(k): _text(v) for k, v in message.extra_headers.items()},
        "content_subtype": _text(message.content_subtype),
        "mixed_subtype": _text(message.mixed_subtype),  # type: ignore[attr-defined]  # Django class attribute missing from django-stubs
        "encoding": None if message.encoding is None else _text(message.encoding),
        "attachments": [_attachment_to_json(a) for a in message.attachments],
    }
    if isinstance(message, EmailMultiAlternatives):
        data["alternatives"] = [[_text(c), _text(m)] for c, m in message.alternatives]
        data["alternative_subtype"] = _text(message.alternative_subtype)  # type: ignore[attr-defined]  # Django class attribute missing from django-stubs
    return data


def message_from_json(data: dict[str, Any]) -> EmailMessage:
    """Rebuild a message from the output of :func:`message_to_json`."""
    fields = {
        "subject": data["subject"],
        "body": data["body"],
        "from_email": data["from_email"],
        "to": data["to"],
        "cc": data["cc"],
        "bcc": data["bcc"],
        "reply_to": data["reply_to"],
        "headers": data["headers"],
    }
    message: EmailMessage
    if "alternatives" in data:
        message = EmailMultiAlternatives(**fields)
        for content, mimetype in data["alternatives"]:
            message.attach_alternative(content, mimetype)
        message.alternative_subtype = data["alternative_subtype"]  # type: ignore[attr-defined]  # Django class attribute missing from django-stubs
    else:
        message = EmailMessage(**fields)
    message.content_subtype = data["content_subtype"]
    message.mixed_subtype = data["mixed_subtype"]  # type: ignore[attr-defined]  # Django class attribute missing from django-stubs
    message.encoding = data["encoding"]
    for filename, content, mimetype in data["attachments"]:
        if isinstance(content, dict):
            content = base64.b64decode(content["base64"])
        message.attach(filename, content, mimetype)
    return message


def _text(value: Any) -> str:
    # A plain str: lazy translations are not strings at all, and str
    # subclasses such as SafeString would come back plain anyway.
    return str.__str__(str(value))


def _attachment_to_json(attachment: Any) -> list[Any]:
    if not isinstance(attachment, tuple):
        raise TypeError(
            f"Cannot send the attachment {attachment!r:.100} in the background: only "
            "(filename, content, mimetype) attachments can be stored as JSON; attach it "
            "with message.attach(filename, content, mimetype) instead of a MIME object"
        )
    filename, content, mimetype = attachment
    if isinstance(content, bytes):
        content = {"base64": base64.b64encode(content).decode("ascii")}
    else:
        content = _text(content)
    return [
        None if filename is None else _text(filename),
        content,
        None if mimetype is None else _text(mimetype),
    ]
