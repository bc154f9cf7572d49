"""The Salesforce Task of a message (modes ``task`` and ``voice``): RULES.md R-MSG-4 and R-MSG-6, pure.

A message, its assessment (RULES §7) and what was resolved in the org (the
matched record, an open Case/Opportunity, the Salesforce users, the Task
describe) go in; the Task fields a create sends come out, with the warnings and
the owner change R-SF-OWNER asks for, exactly as ``salesforce_task.build_task``
does for a call. Only the fields R-MSG-4 lists are set: ``Subject``,
``TaskSubtype``, ``Type`` (when configured), ``Status``, ``ActivityDate``,
``Description``, ``CallObject`` (``message:{id}``, the reconciliation key),
``WhoId``, ``WhatId`` and ``OwnerId``.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC
from typing import Any

from aircall_sync.aircall.messages import Message
from aircall_sync.message_rules import MessageAssessment
from aircall_sync.settings import MessageSubjects, Settings
from aircall_sync.targets.salesforce_task import (
    DESCRIPTION_MAX,
    SUBJECT_MAX,
    Match,
    Owner,
    TaskContext,
    TaskDraft,
    _missing_field_warning,
    _org_names,
    agent_user,
    owner_of,
    reassignment,
    record_name,
    sf_length,
    truncate,
    who_what,
)

__all__ = ["FAILED_PREFIX", "KEY_PREFIX", "build_message_task", "call_object", "channel_word", "message_description",
           "message_fingerprint", "message_owner", "message_subject"]

KEY_PREFIX = "message:"
#: R-MSG-6.
FAILED_PREFIX = "Failed: "
# "from {user_name} " with its word before: left out when the user is unknown (R-MSG-4).
_USER_WORDS = re.compile(r"[^\s{}]+\s+\{user_name\}\s*")


def call_object(message_id: str) -> str:
    """R-MSG-4: the Task's ``CallObject`` (reconciliation key) of a message; a call's stays its bare id."""
    return KEY_PREFIX + message_id


def channel_word(message: Message) -> str:
    """``SMS`` (SMS and MMS), or ``WhatsApp`` for ``channel = "whatsapp"`` (R-MSG-4)."""
    return "WhatsApp" if message.whatsapp else "SMS"


def _user_name(message: Message) -> str:
    return (message.user.name or "").strip() if message.user else ""


def message_subject(a: MessageAssessment, match: Match | None, subjects: MessageSubjects) -> str:
    """R-MSG-4 subject of the direction's template; R-MSG-6 ``Failed: `` first for a failed delivery; ≤ 255."""
    message = a.message
    template = subjects.template(message.direction)
    user_name = _user_name(message)
    if not user_name:
        template = _USER_WORDS.sub("", template)
    text = template.format_map({
        "record_name": record_name(a, match),
        "number_name": a.number_name,
        "user_name": user_name,
        "channel": channel_word(message),
        "direction": message.direction,
    })
    text = " ".join(text.split())
    if a.failed:
        text = FAILED_PREFIX + text
    return truncate(text, SUBJECT_MAX)


def message_description(message: Message) -> tuple[str | None, str | None]:
    """R-MSG-4 ``Description``: the body, a blank line, one ``Attachment: {url}`` line per attachment.

    ``None`` when there is neither body nor attachment; over 32,000 characters ⇒ cut with ``…`` and a warning.
    """
    parts = []
    if message.body.strip():
        parts.append(message.body)
    if message.attachments:
        parts.append("\n".join(f"Attachment: {url}" for url in message.attachments))
    if not parts:
        return None, None
    text = "\n\n".join(parts)
    size = sf_length(text)
    if size <= DESCRIPTION_MAX:
        return text, None
    return truncate(text, DESCRIPTION_MAX), (f"Description of message {message.id} cut to {DESCRIPTION_MAX:,} "
                                             f"characters (was {size:,})")


def message_owner(message: Message, match: Match | None, users_by_email, integration_user_id: str,
                  fallback_owner_id: str = "") -> Owner:
    """R-SF-OWNER for a message: step 1 with the message's user (when the event names one) at ``created_at``."""
    return owner_of(agent_user(message.user, message.created_at, users_by_email), match, integration_user_id,
                    fallback_owner_id)


def build_message_task(a: MessageAssessment, ctx: TaskContext, settings: Settings) -> TaskDraft:
    """R-MSG-4: the Task a create sends for one message (the same matching, links and owner as a call's)."""
    sf = settings.salesforce
    message = a.message
    warnings: list[str] = []
    fields: dict[str, Any] = {"Subject": message_subject(a, ctx.match, sf.messages.subjects)}
    if sf.messages.task_type:
        fields["Type"] = sf.messages.task_type
    fields["TaskSubtype"] = "Task"
    fields["Status"] = sf.task.status_completed
    fields["ActivityDate"] = message.created_at.astimezone(UTC).date().isoformat()
    text, warning = message_description(message)
    if text is not None:
        fields["Description"] = text
    if warning:
        warnings.append(warning)
    fields["CallObject"] = call_object(message.id)
    who, what = who_what(ctx.match, ctx.what_id)
    if who:
        fields["WhoId"] = who
    if what:
        fields["WhatId"] = what
    chosen = message_owner(message, ctx.match, ctx.users_by_email, ctx.integration_user_id,
                           sf.matching.fallback_owner_id)
    fields["OwnerId"] = chosen.id
    if ctx.task_fields is not None:
        org_names = _org_names(ctx.task_fields)
        kept: dict[str, Any] = {}
        for name, value in fields.items():
            org_name = org_names.get(name.lower())
            if org_name is None:
                if name == "Type":
                    warnings.append("Task field Type is not visible to the integration user: message Tasks are "
                                    "written without it (salesforce.messages.task_type); give that user's profile "
                                    "access to Task.Type")
                else:
                    warnings.append(_missing_field_warning(name, None))
            else:
                kept[org_name] = value
        fields = kept
    return TaskDraft(
        fields=fields,
        warnings=tuple(warnings),
        reassign=reassignment(ctx.match, chosen, ctx.integration_user_id, sf.matching.reassign_integration_owned),
    )


def message_fingerprint(a: MessageAssessment, settings) -> str:
    """What a message's Task depends on, hashed: a status change other than a failure changes nothing (R-MSG-6)."""
    m = a.message
    payload = {
        "message": [m.id, m.direction, int(m.created_at.timestamp()), m.body, list(m.attachments), m.channel,
                    m.failed, m.customer_digits],
        "number": [a.number_name, m.number.country if m.number else None, m.number.time_zone if m.number else None],
        "user": [m.user.id, m.user.name, (m.user.email or "").lower()] if m.user else None,
        "contact": [m.contact.first_name, m.contact.last_name, m.contact.company_name] if m.contact else None,
        "settings": settings.derived(_shaping_settings),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _shaping_settings(settings) -> str:
    sf = settings.salesforce
    return repr((sf.mode, sf.matching, sf.task.status_completed, sf.messages, settings.sync.log_messages,
                 settings.sync.business_hours, settings.sync.timezone))
