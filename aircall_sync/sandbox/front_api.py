"""Emulated Front Core API, served by :class:`~.server.LoopbackServer`.

Written from ``shared/reference/front-api.md`` (cited as §N) and Front's
official OpenAPI document ``shared/reference/front/core-api.json`` (cited as
[spec]; exact paths, request bodies and response shapes), not from the tool's
client. It serves, at the root of the server (the tool's ``front.base_url``):

- Bearer-token auth on every request; a missing or wrong token is 401
  ``{"_error": {"status": 401, "title": "Unauthenticated", ...}}`` (§1, §6).
- ``GET /me``: the token's company ``{_links, id: "cmp_…", name}`` (§1, [spec IdentityResponse]).
- ``GET /inboxes``, ``GET /inboxes/{inbox_id}``, ``GET /conversations/{id}/inboxes``
  ([spec InboxResponse]); seeded with the phone inbox (default ``Aircall Phone``)
  and two e-mail inboxes (``Support``, ``Sales``).
- ``GET /teammates``, ``GET /teammates/{id}`` with ``alt:email:`` aliases
  ([spec TeammateResponse], §3d); seeded from the Aircall agents given, some
  of them deliberately without a teammate.
- ``POST /contacts`` (201, 409 on a taken handle), ``GET /contacts/{id}`` with
  ``alt:{source}:{handle}`` aliases (404 when unknown), ``GET
  /contacts/{id}/conversations`` (newest first, ``q[statuses][]``) (§2, §3e).
- ``GET``/``PATCH /conversations/{id}`` (204), ``PUT
  /conversations/{id}/assignee`` (204), ``GET /conversations/{id}/messages``,
  ``GET``/``POST /conversations/{id}/comments`` (201); a merged conversation
  answers 301 to the conversation it was merged into (§3d, §7).
- ``POST /inboxes/{inbox_id}/imported_messages``: 202 ``{status: "accepted",
  message_uid}``, processed at once or after a configurable delay (in order);
  threading by ``conversation_id``, else ``metadata.thread_ref``, else by
  sender; ``external_id`` dedupe; ``metadata.is_archived`` (default true)
  (§3a). ``GET /messages/alt:uid:{message_uid}`` resolves the uid (§3a).
- Lists: ``{_pagination: {next}, _links: {self}, _results}`` with ``limit``
  (max 100) and an opaque ``page_token`` in ``next`` (§4).
- Rate limits (§1): one per-company budget (``requests_per_minute`` per
  ``rate_window_seconds``), ``x-ratelimit-limit`` / ``-remaining`` / ``-reset``
  on every authenticated response, 429 with a float ``retry-after`` and an
  ``_error`` body; Tier-2 *burst* 429s (``x-front-tier: tier-2``) while
  ``x-ratelimit-remaining`` is still positive, either per resource per second
  or scripted.
- Every request body is checked against the operation's request schema in
  core-api.json; a violation is 400 ``_error`` with ``details`` (§6).
  :func:`validate_request` is the same check, reusable by contract tests.

Where the reference is silent or **UNCONFIRMED**, the emulator takes the
strict, documented-plausible reading and says so at the code;
:data:`AMBIGUITIES` lists every such decision in one place.

A test reads and mutates Front's side through :class:`FrontStore` (thread-safe):
``store.contacts``, ``store.conversations`` (inbox, status, assignee, subject,
messages, comments), ``store.find_contact(phone)``, ``store.count(kind)``,
``store.archive(...)``, ``store.move(...)``, ``store.merge(...)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from aircall_sync.sandbox.server import Fault, Faults, LoopbackServer, Request, Response

__all__ = [
    "AMBIGUITIES",
    "DEFAULT_API_TOKEN",
    "Comment",
    "Contact",
    "Conversation",
    "FrontApp",
    "FrontSandbox",
    "FrontStore",
    "HandleConflict",
    "Inbox",
    "Message",
    "ReceivedRequest",
    "SPEC_SUBSET",
    "Teammate",
    "normalize_phone",
    "match_operation",
    "start_front_sandbox",
    "validate_request",
]

DEFAULT_API_TOKEN = "sandbox-front-api-token"
COMPANY_ID = "cmp_5bx3"
# DESIGN.md §7: the sandbox never pretends to be the real service in any output.
COMPANY_NAME = "Sandbox Company (emulated Front API, not the real service)"

MAX_LIMIT = 100           # §4, [spec parameters.limit maximum]
DEFAULT_LIMIT = 25        # UNCONFIRMED default page size: the spec's example value
UNLIMITED = 1_000_000     # x-ratelimit-limit when no budget is configured
BURST_TIER = "tier-2"     # §1: Tier 2 = 5 req/s per resource
DOCUMENTED_BURST_PER_SECOND = 5  # §1; pass it as burst_limit_per_second to get Front's figure

AMBIGUITIES: tuple[str, ...] = (
    "401 is only attributed to a company once the token is known: an unauthenticated request is not counted "
    "against the budget and carries no x-ratelimit-* headers.",
    "x-ratelimit-reset is sent as a UNIX timestamp with milliseconds (e.g. 1761912345.250) so that a client "
    "parsing it as an integer fails here rather than in production; retry-after is a float in seconds (§1).",
    "Refused requests (429, global or burst) do not consume the per-company budget.",
    "Burst (Tier-2) routes are UNCONFIRMED: the emulator applies them, when enabled, per inbox to "
    "imported_messages and per conversation to comments, PATCH conversation and PUT assignee (§1's assumption).",
    "Reference lists (GET /inboxes, /teammates, /conversations/{id}/comments, /conversations/{id}/inboxes) "
    "carry no _pagination in the spec; they are unpaginated unless reference_page_size is set.",
    "Without `limit`, paginated lists use 25 items per page (UNCONFIRMED default; the spec's example); "
    "limit outside 1..100 is a 400 rather than silently clamped.",
    "Request bodies with a property the spec does not declare are refused (400), although the spec sets no "
    "additionalProperties: a typo in an optional field (is_archive) would otherwise silently take the default.",
    "assignee_id may be null in PATCH /conversations/{id} and PUT …/assignee: the schema is a plain string "
    "but its description says 'Set it to null to unassign'.",
    "Teammate aliases (alt:email:) are accepted where documented (GET /teammates/{id}, comment author_id); "
    "assignee_id and sender.author_id must be teammate IDs (400 otherwise).",
    "An unknown teammate in a body (author_id, assignee_id) is a 400; an unknown conversation_id in an "
    "import is a 404 'Unknown conversation ID …' answered synchronously.",
    "Imports are processed in arrival order, at once by default or after import_delay_seconds; "
    "GET /messages/alt:uid:… is 404 until processed (UNCONFIRMED).",
    "external_id dedupe is per inbox of the import request: the second request still gets 202 with a "
    "fresh message_uid that never resolves (404 for ever); nothing is imported (§3a 'won't import two').",
    "Threading: conversation_id first (thread_ref then ignored), else metadata.thread_ref among the "
    "conversations currently in the target inbox, else by sender handle in that inbox ([spec] 'threads by "
    "sender instead'); deleted and merged conversations are never threaded into; archived ones are.",
    "metadata.is_archived (default true) sets the conversation's status after every import: false reopens "
    "an archived conversation, omitted archives an open one (UNCONFIRMED, §3a).",
    "body_format is refused (400) unless type is email ([spec] 'can only be specified for email type').",
    "Phone handles without '+' are normalised to the USA (+1) as the spec says for sender handles; the same "
    "normalisation applies to contact handles and alias lookups; the '+' may be raw or %2B in the path.",
    "Contact conversations are those whose external handles (the sender of inbound messages, the recipients "
    "of outbound ones) belong to the contact; listed by last message time, newest first; by default "
    "every status but trashed.",
    "A merged conversation answers 301 with an empty body and a Location on every …/conversations/{id}… "
    "route, POST comments included (an HTTP client that follows a 301 turns a POST into a GET).",
    "Without author_id a comment is authored by the API token: a synthetic teammate of type 'api'.",
    "A POST/PATCH/PUT body must be application/json; a JSON syntax error answers an _error with only a "
    "message (§6); multipart attachments are not emulated.",
    "status_id is refused (ticketing is off in the sandbox); description/due_at are refused (task "
    "conversations only).",
    "Threading by sender looks at every imported message's sender, so outbound imports without thread_ref or "
    "conversation_id from one line all land in one conversation, whatever the customer: a client must thread "
    "explicitly.",
    "requests_per_minute=None still sends the x-ratelimit-* headers, with a limit of 1,000,000.",
    "Teammate e-mails compare case-insensitively (alias lookups included).",
    "Seeding: every fourth Aircall agent from the second has no teammate (agents_without_teammate overrides); "
    "one Front-only teammate is added.",
)

# --------------------------------------------------------------------------
# The request schemas of the emulated operations, verbatim from core-api.json
# (annotations -- description, example, summary, x-* -- removed). Embedded so
# the sandbox works from an installed package without the reference folder;
# tests/test_sandbox_front.py checks it against the reference file.
# --------------------------------------------------------------------------

SPEC_SUBSET: dict[str, Any] = json.loads(
    """
{
 "paths": {
  "/me": {
   "get": {
    "operationId": "api-token-details"
   }
  },
  "/inboxes": {
   "get": {
    "operationId": "list-inboxes"
   }
  },
  "/inboxes/{inbox_id}": {
   "get": {
    "operationId": "get-inbox"
   }
  },
  "/inboxes/{inbox_id}/imported_messages": {
   "post": {
    "operationId": "import-inbox-message",
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/ImportMessage"
       }
      }
     }
    }
   }
  },
  "/teammates": {
   "get": {
    "operationId": "list-teammates"
   }
  },
  "/teammates/{teammate_id}": {
   "get": {
    "operationId": "get-teammate"
   }
  },
  "/contacts": {
   "post": {
    "operationId": "create-contact",
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/CreateContact"
       }
      }
     }
    }
   }
  },
  "/contacts/{contact_id}": {
   "get": {
    "operationId": "get-contact"
   }
  },
  "/contacts/{contact_id}/conversations": {
   "get": {
    "operationId": "list-contact-conversations"
   }
  },
  "/conversations/{conversation_id}": {
   "get": {
    "operationId": "get-conversation-by-id"
   },
   "patch": {
    "operationId": "update-conversation",
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/UpdateConversation"
       }
      }
     }
    }
   }
  },
  "/conversations/{conversation_id}/assignee": {
   "put": {
    "operationId": "update-conversation-assignee",
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/UpdateConversationAssignee"
       }
      }
     }
    }
   }
  },
  "/conversations/{conversation_id}/messages": {
   "get": {
    "operationId": "list-conversation-messages"
   }
  },
  "/conversations/{conversation_id}/comments": {
   "get": {
    "operationId": "list-conversation-comments"
   },
   "post": {
    "operationId": "add-comment",
    "requestBody": {
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/CreateComment"
       }
      }
     }
    }
   }
  },
  "/conversations/{conversation_id}/inboxes": {
   "get": {
    "operationId": "list-conversation-inboxes"
   }
  },
  "/messages/{message_id}": {
   "get": {
    "operationId": "get-message"
   }
  }
 },
 "components": {
  "schemas": {
   "Contact": {
    "properties": {
     "name": {
      "type": "string"
     },
     "description": {
      "type": "string"
     },
     "avatar": {
      "type": "string",
      "format": "binary"
     },
     "links": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "group_names": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "list_names": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "custom_fields": {
      "$ref": "#/components/schemas/CustomFieldParameter"
     }
    }
   },
   "ContactHandle": {
    "type": "object",
    "required": [
     "handle",
     "source"
    ],
    "properties": {
     "handle": {
      "type": "string"
     },
     "source": {
      "type": "string",
      "enum": [
       "twitter",
       "email",
       "phone",
       "facebook",
       "intercom",
       "front_chat",
       "custom"
      ]
     }
    }
   },
   "CreateComment": {
    "required": [
     "body"
    ],
    "properties": {
     "author_id": {
      "type": "string"
     },
     "body": {
      "type": "string"
     },
     "is_pinned": {
      "type": "boolean"
     },
     "attachments": {
      "type": "array",
      "items": {
       "type": "string",
       "format": "binary"
      }
     }
    }
   },
   "CreateContact": {
    "required": [
     "handles"
    ],
    "allOf": [
     {
      "$ref": "#/components/schemas/Contact"
     },
     {
      "type": "object",
      "properties": {
       "handles": {
        "type": "array",
        "items": {
         "$ref": "#/components/schemas/ContactHandle"
        }
       }
      }
     }
    ]
   },
   "CustomFieldParameter": {
    "type": "object"
   },
   "ImportMessage": {
    "required": [
     "sender",
     "to",
     "body",
     "external_id",
     "created_at",
     "metadata"
    ],
    "properties": {
     "sender": {
      "type": "object",
      "required": [
       "handle"
      ],
      "properties": {
       "author_id": {
        "type": "string"
       },
       "name": {
        "type": "string"
       },
       "handle": {
        "type": "string"
       }
      }
     },
     "to": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "cc": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "bcc": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "subject": {
      "type": "string"
     },
     "body": {
      "type": "string"
     },
     "body_format": {
      "type": "string",
      "enum": [
       "html",
       "markdown"
      ],
      "default": "markdown"
     },
     "external_id": {
      "type": "string"
     },
     "created_at": {
      "type": "integer"
     },
     "type": {
      "type": "string",
      "enum": [
       "email",
       "sms",
       "intercom",
       "custom"
      ],
      "default": "email"
     },
     "assignee_id": {
      "type": "string"
     },
     "tags": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "conversation_id": {
      "type": "string"
     },
     "metadata": {
      "type": "object",
      "required": [
       "is_inbound"
      ],
      "properties": {
       "thread_ref": {
        "type": "string"
       },
       "is_inbound": {
        "type": "boolean"
       },
       "is_archived": {
        "type": "boolean",
        "default": true
       },
       "should_skip_rules": {
        "type": "boolean",
        "default": true
       }
      }
     },
     "attachments": {
      "type": "array",
      "items": {
       "type": "string",
       "format": "binary"
      }
     }
    }
   },
   "ResourceID": {
    "type": "string"
   },
   "UpdateConversation": {
    "properties": {
     "assignee_id": {
      "type": "string"
     },
     "inbox_id": {
      "type": "string"
     },
     "status": {
      "type": "string",
      "enum": [
       "archived",
       "open",
       "deleted",
       "spam"
      ]
     },
     "status_id": {
      "type": "string"
     },
     "tag_ids": {
      "type": "array",
      "items": {
       "$ref": "#/components/schemas/ResourceID"
      }
     },
     "description": {
      "type": "string",
      "nullable": true,
      "maxLength": 65535
     },
     "due_at": {
      "type": "number",
      "nullable": true
     },
     "custom_fields": {
      "$ref": "#/components/schemas/CustomFieldParameter"
     }
    }
   },
   "UpdateConversationAssignee": {
    "required": [
     "assignee_id"
    ],
    "properties": {
     "assignee_id": {
      "type": "string"
     }
    }
   }
  }
 }
}
"""
)


# --------------------------------------------------------------------------
# Request validation against the OpenAPI document
# --------------------------------------------------------------------------

# JSON pointers of string properties whose description documents null (see AMBIGUITIES).
_NULL_DOCUMENTED = frozenset({
    "#/components/schemas/UpdateConversation/properties/assignee_id",
    "#/components/schemas/UpdateConversationAssignee/properties/assignee_id",
})

_compiled_cache: dict[int, tuple[Mapping[str, Any], list[tuple[tuple[str | None, ...], str, str]]]] = {}
_compiled_lock = threading.Lock()


def _templates(spec: Mapping[str, Any]) -> list[tuple[tuple[str | None, ...], str, str]]:
    """``(segments, template, method)`` for every operation; ``None`` is a path parameter.

    Sorted so that literal segments win over parameters (``/contacts/merge``
    before ``/contacts/{contact_id}``), as any router does.
    """
    with _compiled_lock:
        hit = _compiled_cache.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[1]
    out: list[tuple[tuple[str | None, ...], str, str]] = []
    for template, ops in spec.get("paths", {}).items():
        segs = tuple(None if s.startswith("{") and s.endswith("}") else s
                     for s in template.strip("/").split("/") if s != "")
        for method in ops:
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((segs, template, method))
    out.sort(key=lambda t: tuple(1 if s is None else 0 for s in t[0]))
    with _compiled_lock:
        if len(_compiled_cache) >= 8:
            _compiled_cache.clear()
        # Keep a reference to the spec so its id() cannot be reused by another dict.
        _compiled_cache[id(spec)] = (spec, out)
    return out


def match_operation(method: str, path: str, spec: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]] | None:
    """The ``(template, operation object)`` serving ``METHOD path``, or ``None``.

    ``path`` may be a full URL or carry a query string; it is matched raw
    (percent-encoded segments such as ``alt:phone:%2B33…`` stay one segment).
    """
    spec = SPEC_SUBSET if spec is None else spec
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0]
    segs = tuple(s for s in path.strip("/").split("/") if s != "")
    m = method.lower()
    for tsegs, template, tmethod in _templates(spec):
        if tmethod != m or len(tsegs) != len(segs):
            continue
        if all(t is None or t == s for t, s in zip(tsegs, segs, strict=True)):
            return template, spec["paths"][template][tmethod]
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_ok(value: Any, expected: str) -> bool:
    actual = _json_type(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer":
        # 3.0 is an integer in JSON Schema; 3.5 is not.
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == expected


class _Validator:
    """A small JSON-Schema-ish validator for OpenAPI 3.0 schemas.

    Handles ``$ref`` (local), ``type``, ``nullable``, ``enum``, ``required``,
    ``properties``, ``items``, ``allOf`` / ``anyOf`` / ``oneOf``, string and
    number bounds, ``pattern``, ``additionalProperties`` (boolean or schema)
    and, unless ``allow_unknown``, refuses properties a schema does not
    declare (see AMBIGUITIES). ``format`` is not checked (the document only
    uses ``binary``, which JSON cannot carry).
    """

    def __init__(self, spec: Mapping[str, Any], *, allow_unknown: bool) -> None:
        self.spec = spec
        self.allow_unknown = allow_unknown

    def resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported: {ref}")
        node: Any = self.spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _declared(self, schema: Mapping[str, Any], seen: set[int] | None = None) -> tuple[set[str], bool]:
        """Property names declared by a schema and its allOf branches; ``False`` when none declares any."""
        seen = set() if seen is None else seen
        if id(schema) in seen:
            return set(), False
        seen.add(id(schema))
        if "$ref" in schema:
            return self._declared(self.resolve(schema["$ref"]), seen)
        names = set(schema.get("properties", {}))
        declares = "properties" in schema
        for branch in schema.get("allOf", ()):
            more, d = self._declared(branch, seen)
            names |= more
            declares = declares or d
        return names, declares

    def validate(self, value: Any, schema: Mapping[str, Any], where: str, ptr: str, errors: list[str],
                 *, check_unknown: bool = True) -> None:
        if "$ref" in schema:
            # OpenAPI 3.0 ignores $ref siblings, but ``nullable`` beside a $ref is
            # how the document marks nullable references (ConversationResponse.assignee).
            if value is None and (schema.get("nullable") or ptr in _NULL_DOCUMENTED):
                return
            ref = schema["$ref"]
            self.validate(value, self.resolve(ref), where, ref, errors, check_unknown=check_unknown)
            return
        if value is None:
            if schema.get("nullable") or ptr in _NULL_DOCUMENTED or not schema:
                return
            errors.append(f"{where}: null is not allowed")
            return
        expected = schema.get("type")
        if expected is None and ("properties" in schema or "required" in schema):
            # A schema that only lists properties describes an object: a JSON
            # array or string body cannot satisfy ``required``.
            expected = "object"
        if expected is not None and not _type_ok(value, expected):
            errors.append(f"{where}: expected {expected}, got {_json_type(value)}")
            return
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(v) for v in schema["enum"])
            errors.append(f"{where}: {json.dumps(value)} is not one of {allowed}")
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                errors.append(f"{where}: longer than {schema['maxLength']} characters")
            if "minLength" in schema and len(value) < schema["minLength"]:
                errors.append(f"{where}: shorter than {schema['minLength']} characters")
            if "pattern" in schema and re.search(schema["pattern"], value) is None:
                errors.append(f"{where}: does not match {schema['pattern']!r}")
        if _json_type(value) in ("integer", "number"):
            if "maximum" in schema and value > schema["maximum"]:
                errors.append(f"{where}: greater than {schema['maximum']}")
            if "minimum" in schema and value < schema["minimum"]:
                errors.append(f"{where}: less than {schema['minimum']}")
        if isinstance(value, list):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                errors.append(f"{where}: more than {schema['maxItems']} items")
            if "minItems" in schema and len(value) < schema["minItems"]:
                errors.append(f"{where}: fewer than {schema['minItems']} items")
            items = schema.get("items")
            if isinstance(items, Mapping):
                for i, item in enumerate(value):
                    self.validate(item, items, f"{where}[{i}]", f"{ptr}/items", errors)
        if isinstance(value, dict):
            for name in schema.get("required", ()):
                if name not in value:
                    errors.append(f"{where}.{name}: required property missing")
            props: Mapping[str, Any] = schema.get("properties", {})
            for name, sub in props.items():
                if name in value:
                    self.validate(value[name], sub, f"{where}.{name}", f"{ptr}/properties/{name}", errors)
            extra = schema.get("additionalProperties")
            if check_unknown:
                declared, declares = self._declared(schema)
                undeclared = [k for k in value if k not in declared]
                if extra is False or (extra is None and declares and not self.allow_unknown):
                    for k in undeclared:
                        errors.append(f"{where}.{k}: unknown property")
                elif isinstance(extra, Mapping):
                    for k in undeclared:
                        self.validate(value[k], extra, f"{where}.{k}", f"{ptr}/additionalProperties", errors)
        for i, branch in enumerate(schema.get("allOf", ())):
            # Unknown properties are judged once, on the union of the branches.
            self.validate(value, branch, where, f"{ptr}/allOf/{i}", errors, check_unknown=False)
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if not branches:
                continue
            ok = 0
            for i, branch in enumerate(branches):
                trial: list[str] = []
                self.validate(value, branch, where, f"{ptr}/{key}/{i}", trial)
                ok += not trial
            if (key == "anyOf" and ok == 0) or (key == "oneOf" and ok != 1):
                errors.append(f"{where}: matches {ok} of the {key} alternatives")


def validate_request(
    method: str,
    path: str,
    body: Any,
    *,
    spec: Mapping[str, Any] | None = None,
    allow_unknown: bool = False,
) -> list[str]:
    """Check one request against the Front Core API document; ``[]`` when it conforms.

    ``path`` is concrete (``/inboxes/inb_1/imported_messages``, a full URL or
    with a query string): it is matched to the document's templates
    (``/inboxes/{inbox_id}/imported_messages``). ``body`` is the parsed JSON
    (``None`` for no body), or the raw ``bytes``/``str``. ``spec`` defaults to
    :data:`SPEC_SUBSET` (the operations this emulator serves); pass the whole
    ``core-api.json`` to check any operation. ``allow_unknown=True`` accepts
    properties the schema does not declare (the spec itself sets no
    ``additionalProperties``; see :data:`AMBIGUITIES`).
    """
    the_spec = SPEC_SUBSET if spec is None else spec
    found = match_operation(method, path, the_spec)
    shown = path.split("?", 1)[0]
    if found is None:
        scope = "the emulated subset of the Front Core API" if spec is None else "the Front Core API document"
        return [f"{method.upper()} {shown}: no such operation in {scope}"]
    template, op = found
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        if not body.strip():
            body = None
        else:
            try:
                body = json.loads(body)
            except ValueError as exc:
                return [f"body: not valid JSON ({exc})"]
    return _validate_body(the_spec, method, template, op, body, allow_unknown=allow_unknown)


# --------------------------------------------------------------------------
# Handles
# --------------------------------------------------------------------------

_PHONEISH = re.compile(r"^\+?[\d\s().\-/]+$")


def normalize_phone(raw: str) -> str:
    """E.164 as Front stores it: ``+`` and digits.

    [spec ImportMessage.sender.handle]: "If you do not send a country code or
    include a plus sign, Front will normalize your phone number to the USA
    (+1)". An 11-digit number starting with 1 is taken as already carrying
    the US country code.
    """
    s = raw.strip()
    digits = re.sub(r"\D", "", s)
    if s.startswith("+"):
        return "+" + digits
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    return "+1" + digits


def _looks_like_phone(handle: str) -> bool:
    return bool(_PHONEISH.match(handle.strip())) and sum(c.isdigit() for c in handle) >= 5


def handle_key(handle: str, source: str | None = None) -> str:
    """The comparable form of a handle: phones in E.164, e-mails lower-cased."""
    h = handle.strip()
    if source == "phone" or (source is None and _looks_like_phone(h)):
        return normalize_phone(h)
    if source == "email" or (source is None and "@" in h):
        return h.lower()
    return h


def _b36(n: int) -> str:
    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = chars[r] + out
        if n == 0:
            return out


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass
class Inbox:
    id: str
    name: str
    #: "phone" for the Aircall inbox, "email" for the others (not part of Front's payload).
    kind: str = "email"
    is_private: bool = False


@dataclass
class Teammate:
    id: str
    email: str
    first_name: str
    last_name: str
    username: str
    is_admin: bool = False
    is_available: bool = True
    is_blocked: bool = False
    type: str = "user"

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass
class Contact:
    id: str
    handles: list[dict[str, str]]
    name: str | None = None
    description: str | None = None
    links: list[str] = field(default_factory=list)
    list_names: list[str] = field(default_factory=list)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def phones(self) -> list[str]:
        return [h["handle"] for h in self.handles if h["source"] == "phone"]

    def keys(self) -> set[str]:
        return {handle_key(h["handle"], h["source"]) for h in self.handles}


@dataclass
class Message:
    id: str
    uid: str
    conversation_id: str
    #: The inbox the message was imported into (the conversation may have moved since).
    inbox_id: str
    type: str
    is_inbound: bool
    created_at: int
    body: str
    subject: str | None = None
    body_format: str = "markdown"
    sender_handle: str = ""
    sender_name: str | None = None
    author_id: str | None = None
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    external_id: str | None = None
    thread_ref: str | None = None
    is_archived: bool = True
    should_skip_rules: bool = True
    imported_at: float = 0.0
    seq: int = 0

    @property
    def external_handles(self) -> list[str]:
        """The customer's side: who wrote an inbound message, who received an outbound one."""
        if self.is_inbound:
            return [self.sender_handle] if self.sender_handle else []
        return [*self.to, *self.cc, *self.bcc]


@dataclass
class Comment:
    id: str
    conversation_id: str
    body: str
    #: ``None``: posted as the API token (no ``author_id`` sent).
    author_id: str | None
    is_pinned: bool = False
    posted_at: float = 0.0
    seq: int = 0


@dataclass
class Conversation:
    id: str
    inbox_id: str
    subject: str
    #: "open", "archived", "deleted" or "spam" (the PATCH vocabulary); see :attr:`api_status`.
    status: str = "open"
    assignee_id: str | None = None
    created_at: float = 0.0
    messages: list[Message] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    tag_ids: list[str] = field(default_factory=list)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    merged_into: str | None = None
    thread_refs: set[str] = field(default_factory=set)
    sender_keys: set[str] = field(default_factory=set)
    type: str = "conversation"
    seq: int = 0

    @property
    def is_open(self) -> bool:
        return self.status == "open" and self.merged_into is None

    @property
    def is_archived(self) -> bool:
        return self.status == "archived"

    @property
    def api_status(self) -> str:
        """[spec ConversationResponse.status]: archived | unassigned | deleted | assigned."""
        if self.status == "archived":
            return "archived"
        if self.status in ("deleted", "spam"):
            return "deleted"
        return "assigned" if self.assignee_id else "unassigned"

    @property
    def last_activity(self) -> float:
        return max((m.created_at for m in self.messages), default=self.created_at)

    def handle_keys(self) -> set[str]:
        return {handle_key(h) for m in self.messages for h in m.external_handles}

    def external_ids(self) -> list[str]:
        return [m.external_id for m in self.messages if m.external_id is not None]


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request the emulator received, body included, for contract tests."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    #: Parsed JSON, the raw text when it is not JSON, ``None`` without a body.
    body: Any
    operation: str | None
    status: int
    at: float


@dataclass(frozen=True, slots=True)
class _PendingImport:
    uid: str
    inbox_id: str
    payload: dict[str, Any]
    due: float


class HandleConflict(Exception):
    """A handle already belongs to a contact (Front answers 409)."""

    def __init__(self, contact_ids: Sequence[str]) -> None:
        super().__init__(", ".join(contact_ids))
        self.contact_ids = list(contact_ids)


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------


class FrontStore:
    """Front's side of the sandbox: inboxes, teammates, contacts, conversations.

    Thread-safe: every read and write holds :attr:`lock` (an ``RLock``; a
    test may hold it to read several things consistently). The collection
    properties return shallow snapshots (``dict`` id → record); the records
    themselves are live.

    Seeding (deterministic): the phone inbox ``inbox_name`` plus ``Support``
    and ``Sales`` (e-mail); one teammate per Aircall agent except
    ``agents_without_teammate`` (default: every fourth agent from the second,
    so a list of two or more always has one), plus a Front-only teammate;
    ``contacts`` (phones, or :meth:`add_contact` keyword dicts) that already
    exist in Front.
    """

    def __init__(
        self,
        *,
        agents: Iterable[Mapping[str, Any]] = (),
        inbox_name: str = "Aircall Phone",
        agents_without_teammate: Iterable[str] | None = None,
        contacts: Iterable[str | Mapping[str, Any]] = (),
        clock: Callable[[], float] = time.time,
        keep_requests: int | None = 50_000,
    ) -> None:
        self.lock = threading.RLock()
        self._idle = threading.Condition(self.lock)
        self._clock = clock
        self._seq = 0
        self._id_counters: Counter[str] = Counter()
        self._inboxes: dict[str, Inbox] = {}
        self._teammates: dict[str, Teammate] = {}
        self._contacts: dict[str, Contact] = {}
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, Message] = {}
        self._uids: dict[str, str] = {}               # message_uid -> message id
        self._handle_index: dict[tuple[str, str], str] = {}  # (source, key) -> contact id
        self._key_index: dict[str, str] = {}                  # key -> contact id, any source
        # Conversation indexes, so a 100k-call backfill stays linear.
        self._by_handle: dict[str, set[str]] = {}      # external handle key -> conversation ids
        self._by_thread_ref: dict[str, set[str]] = {}
        self._by_sender: dict[str, set[str]] = {}
        self._external_ids: dict[tuple[str, str], str] = {}  # (inbox id, external_id) -> message id
        self._counts: Counter[str] = Counter()
        self._received: deque[ReceivedRequest] = deque(maxlen=keep_requests)
        self._queue: deque[_PendingImport] = deque()
        self._worker: threading.Thread | None = None
        self.duplicate_imports: list[dict[str, Any]] = []
        self.failed_imports: list[dict[str, Any]] = []

        self.phone_inbox = self.add_inbox(inbox_name, kind="phone")
        for extra in ("Support", "Sales"):
            if extra != inbox_name:
                self.add_inbox(extra, kind="email")

        agent_list = [dict(a) for a in agents]
        if agents_without_teammate is None:
            missing = {str(a.get("email", "")).lower() for i, a in enumerate(agent_list) if i % 4 == 1}
        else:
            missing = {e.lower() for e in agents_without_teammate}
        #: Aircall agents' e-mails that deliberately have no Front teammate.
        self.agents_without_teammate: list[str] = []
        for a in agent_list:
            email = str(a.get("email") or "")
            if not email:
                continue
            if email.lower() in missing:
                self.agents_without_teammate.append(email)
                continue
            self.add_teammate(email, str(a.get("name") or email.split("@")[0]))
        self.add_teammate("morgan.frontonly@example.com", "Morgan Frontonly", is_admin=True)
        for c in contacts:
            # Contacts that exist in Front before the tool runs: a phone, or add_contact's keywords.
            if isinstance(c, str):
                self.add_contact(c)
            else:
                self.add_contact(**dict(c))

    # -- ids and time -------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def _new_id(self, prefix: str) -> str:
        # Front ids are a prefix and a short base-36 string (cnv_yo1kg5q, §7);
        # a stride keeps consecutive ids from looking sequential, and a
        # per-prefix offset keeps a contact and a conversation from sharing a suffix.
        with self.lock:
            self._id_counters[prefix] += 1
            n = self._id_counters[prefix]
        offset = int(hashlib.md5(prefix.encode()).hexdigest()[:6], 16) % 1_000_000
        return f"{prefix}_{_b36(1_679_616 + offset + n * 7_919)}"

    def _next_seq(self) -> int:
        with self.lock:
            self._seq += 1
            return self._seq

    def _new_uid(self) -> str:
        return hashlib.md5(f"front-sandbox-uid-{self._next_seq()}".encode()).hexdigest()

    # -- counters and the request log ----------------------------------------------

    def _count(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self._counts[kind] += n

    def count(self, kind: str) -> int:
        """Requests (by operationId, e.g. ``import-inbox-message``) or events
        (``import-processed``, ``import-duplicate``, ``rate-limited``,
        ``burst-limited``, ``unauthenticated``, ``invalid-body``)."""
        with self.lock:
            return self._counts[kind]

    @property
    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self.lock:
            self._counts.clear()

    def _record(self, entry: ReceivedRequest) -> None:
        with self.lock:
            self._received.append(entry)

    @property
    def received(self) -> list[ReceivedRequest]:
        """Every request received (bounded by ``keep_requests``), oldest first, bodies parsed."""
        with self.lock:
            return list(self._received)

    # -- snapshots ------------------------------------------------------------------

    @property
    def inboxes(self) -> dict[str, Inbox]:
        with self.lock:
            return dict(self._inboxes)

    @property
    def teammates(self) -> dict[str, Teammate]:
        with self.lock:
            return dict(self._teammates)

    @property
    def contacts(self) -> dict[str, Contact]:
        with self.lock:
            return dict(self._contacts)

    @property
    def conversations(self) -> dict[str, Conversation]:
        """Every conversation, merged ones included (``merged_into`` set)."""
        with self.lock:
            return dict(self._conversations)

    @property
    def messages(self) -> dict[str, Message]:
        with self.lock:
            return dict(self._messages)

    # -- inboxes and teammates -----------------------------------------------------

    def add_inbox(self, name: str, *, kind: str = "email", is_private: bool = False) -> Inbox:
        with self.lock:
            inbox = Inbox(self._new_id("inb"), name, kind, is_private)
            self._inboxes[inbox.id] = inbox
            return inbox

    def inbox(self, name_or_id: str) -> Inbox:
        """An inbox by id or by name (``KeyError`` when there is none)."""
        with self.lock:
            if name_or_id in self._inboxes:
                return self._inboxes[name_or_id]
            for inbox in self._inboxes.values():
                if inbox.name == name_or_id:
                    return inbox
        raise KeyError(name_or_id)

    def add_teammate(self, email: str, name: str, *, is_admin: bool = False) -> Teammate:
        first, _, last = name.strip().partition(" ")
        with self.lock:
            mate = Teammate(self._new_id("tea"), email, first, last, email.split("@")[0], is_admin=is_admin)
            self._teammates[mate.id] = mate
            return mate

    def teammate_by_email(self, email: str) -> Teammate | None:
        # E-mail addresses compare case-insensitively (UNCONFIRMED for Front; true of mail).
        wanted = email.strip().lower()
        with self.lock:
            for mate in self._teammates.values():
                if mate.email.lower() == wanted:
                    return mate
        return None

    def resolve_teammate(self, ref: str, *, aliases: bool = True) -> Teammate | None:
        """A teammate by id, or by ``alt:email:…`` when ``aliases``."""
        with self.lock:
            if ref in self._teammates:
                return self._teammates[ref]
        if aliases and ref.startswith("alt:email:"):
            return self.teammate_by_email(ref[len("alt:email:"):])
        return None

    # -- contacts ---------------------------------------------------------------------

    def add_contact(
        self,
        phone: str | None = None,
        *,
        handles: Sequence[Mapping[str, str]] = (),
        name: str | None = None,
        description: str | None = None,
        links: Sequence[str] = (),
        list_names: Sequence[str] = (),
        custom_fields: Mapping[str, Any] | None = None,
    ) -> Contact:
        """Create a contact; :class:`HandleConflict` when a handle is taken (Front's 409)."""
        all_handles = [dict(h) for h in handles]
        if phone is not None:
            all_handles.insert(0, {"handle": phone, "source": "phone"})
        stored: list[dict[str, str]] = []
        for h in all_handles:
            source = h["source"]
            value = normalize_phone(h["handle"]) if source == "phone" else h["handle"].strip()
            stored.append({"handle": value, "source": source})
        with self.lock:
            taken = sorted({cid for h in stored
                            if (cid := self._handle_index.get((h["source"], handle_key(h["handle"], h["source"]))))})
            if taken:
                raise HandleConflict(taken)
            contact = Contact(self._new_id("crd"), stored, name, description, list(links), list(list_names),
                              dict(custom_fields or {}), self.now())
            self._contacts[contact.id] = contact
            for h in stored:
                key = handle_key(h["handle"], h["source"])
                self._handle_index[(h["source"], key)] = contact.id
                self._key_index.setdefault(key, contact.id)
            return contact

    def resolve_contact(self, ref: str) -> Contact | None:
        """A contact by id or by ``alt:{source}:{handle}`` (§2)."""
        with self.lock:
            if ref in self._contacts:
                return self._contacts[ref]
            if ref.startswith("alt:"):
                _, _, rest = ref.partition(":")
                source, sep, handle = rest.partition(":")
                if not sep or not handle:
                    return None
                cid = self._handle_index.get((source, handle_key(handle, source)))
                return self._contacts.get(cid) if cid else None
        return None

    def find_contact(self, phone: str) -> Contact | None:
        """The contact owning this phone handle (any format; normalised as Front does)."""
        with self.lock:
            cid = self._handle_index.get(("phone", normalize_phone(phone)))
            return self._contacts.get(cid) if cid else None

    def contact_for_handle(self, handle: str) -> Contact | None:
        """The contact owning a handle of any source (how imports link to contacts)."""
        with self.lock:
            cid = self._key_index.get(handle_key(handle))
            return self._contacts.get(cid) if cid else None

    # -- conversations -------------------------------------------------------------------

    def conversation(self, conversation_id: str) -> Conversation:
        """The record as stored (``KeyError`` when unknown); see :meth:`current`."""
        with self.lock:
            return self._conversations[conversation_id]

    def current(self, conversation_id: str) -> Conversation | None:
        """Follow merges to the conversation that now holds this one's messages."""
        with self.lock:
            conv = self._conversations.get(conversation_id)
            hops = 0
            while conv is not None and conv.merged_into is not None and hops < 100:
                conv = self._conversations.get(conv.merged_into)
                hops += 1
            return conv

    def conversations_of(
        self, contact_or_phone: Contact | str, *, statuses: Iterable[str] | None = None,
    ) -> list[Conversation]:
        """The contact's conversations (merged ones excluded), newest activity first.

        ``statuses`` filters on :attr:`Conversation.api_status` plus
        ``"open"`` (not archived/deleted) and ``"trashed"`` (deleted).
        """
        with self.lock:
            contact = contact_or_phone if isinstance(contact_or_phone, Contact) else self.find_contact(contact_or_phone)
            if contact is None:
                return []
            ids: set[str] = set()
            for key in contact.keys():
                ids |= self._by_handle.get(key, set())
            found = [c for cid in ids if (c := self._conversations[cid]).merged_into is None]
        if statuses is not None:
            wanted = set(statuses)
            found = [c for c in found if _status_matches(c, wanted)]
        found.sort(key=lambda c: (c.last_activity, c.seq), reverse=True)
        return found

    def open_conversations(self, phone: str, inbox: str | None = None) -> list[Conversation]:
        """Open conversations of the contact with this phone, optionally in one inbox (id or name)."""
        inbox_id = self.inbox(inbox).id if inbox is not None else None
        return [c for c in self.conversations_of(phone)
                if c.is_open and (inbox_id is None or c.inbox_id == inbox_id)]

    def conversations_in(self, inbox: str) -> list[Conversation]:
        inbox_id = self.inbox(inbox).id
        with self.lock:
            return [c for c in self._conversations.values() if c.inbox_id == inbox_id and c.merged_into is None]

    def _new_conversation(self, inbox_id: str, subject: str, *, created_at: float | None = None) -> Conversation:
        conv = Conversation(self._new_id("cnv"), inbox_id, subject, created_at=self.now() if created_at is None
                            else float(created_at), seq=self._next_seq())
        self._conversations[conv.id] = conv
        return conv

    def seed_conversation(
        self,
        inbox: str,
        handle: str,
        *,
        subject: str = "",
        body: str = "Hello",
        status: str = "open",
        is_inbound: bool = True,
        type: str = "email",
        created_at: int | None = None,
        assignee: str | None = None,
        thread_ref: str | None = None,
        external_id: str | None = None,
    ) -> Conversation:
        """A conversation that exists before the tool runs (an e-mail thread, an old call log).

        ``handle`` is the customer's; the message is inbound from it, or outbound to it.
        """
        with self.lock:
            inbox_obj = self.inbox(inbox)
            conv = self._new_conversation(inbox_obj.id, subject, created_at=created_at)
            msg = Message(
                id=self._new_id("msg"), uid=self._new_uid(), conversation_id=conv.id, inbox_id=inbox_obj.id,
                type=type, is_inbound=is_inbound, created_at=int(created_at if created_at is not None else self.now()),
                body=body, subject=subject,
                sender_handle=handle if is_inbound else f"team@{inbox_obj.name.lower().replace(' ', '-')}.example.com",
                to=[] if is_inbound else [handle], external_id=external_id, thread_ref=thread_ref,
                is_archived=status == "archived", imported_at=self.now(), seq=self._next_seq(),
            )
            self._attach(conv, msg)
            conv.status = status
            if assignee is not None:
                mate = self.resolve_teammate(assignee) or self.teammate_by_email(assignee)
                if mate is None:
                    raise KeyError(assignee)
                conv.assignee_id = mate.id
            return conv

    def _attach(self, conv: Conversation, msg: Message) -> None:
        conv.messages.append(msg)
        self._messages[msg.id] = msg
        self._uids[msg.uid] = msg.id
        if msg.external_id is not None:
            self._external_ids[(msg.inbox_id, msg.external_id)] = msg.id
        if msg.thread_ref is not None:
            conv.thread_refs.add(msg.thread_ref)
            self._by_thread_ref.setdefault(msg.thread_ref, set()).add(conv.id)
        if msg.sender_handle:
            key = handle_key(msg.sender_handle)
            conv.sender_keys.add(key)
            self._by_sender.setdefault(key, set()).add(conv.id)
        for h in msg.external_handles:
            self._by_handle.setdefault(handle_key(h), set()).add(conv.id)

    # -- what an agent does in Front's UI ---------------------------------------------------

    def _live(self, conversation_id: str) -> Conversation:
        conv = self.current(conversation_id)
        if conv is None:
            raise KeyError(conversation_id)
        return conv

    def archive(self, conversation_id: str) -> Conversation:
        with self.lock:
            conv = self._live(conversation_id)
            conv.status = "archived"
            return conv

    def reopen(self, conversation_id: str) -> Conversation:
        with self.lock:
            conv = self._live(conversation_id)
            conv.status = "open"
            return conv

    def delete(self, conversation_id: str) -> Conversation:
        with self.lock:
            conv = self._live(conversation_id)
            conv.status = "deleted"
            return conv

    def move(self, conversation_id: str, inbox: str) -> Conversation:
        """Move a conversation to another inbox (id or name), as an agent does."""
        with self.lock:
            conv = self._live(conversation_id)
            conv.inbox_id = self.inbox(inbox).id
            return conv

    def assign(self, conversation_id: str, teammate: str | None) -> Conversation:
        """Assign to a teammate (id, e-mail or alias) or unassign with ``None``."""
        with self.lock:
            conv = self._live(conversation_id)
            if teammate is None:
                conv.assignee_id = None
            else:
                mate = self.resolve_teammate(teammate) or self.teammate_by_email(teammate)
                if mate is None:
                    raise KeyError(teammate)
                conv.assignee_id = mate.id
            return conv

    def merge(self, source_id: str, target_id: str) -> Conversation:
        """Merge ``source`` into ``target``: its messages, comments and threading refs move.

        Afterwards every route on ``source`` answers 301 to ``target`` (§7).
        """
        with self.lock:
            source = self._live(source_id)
            target = self._live(target_id)
            if source is target:
                raise ValueError("a conversation cannot be merged into itself")
            moves = ((self._by_thread_ref, source.thread_refs), (self._by_sender, source.sender_keys),
                     (self._by_handle, source.handle_keys()))
            for index, keys in moves:
                for key in keys:
                    ids = index.get(key)
                    if ids is not None and source.id in ids:
                        ids.discard(source.id)
                        ids.add(target.id)
            for msg in source.messages:
                msg.conversation_id = target.id
            for com in source.comments:
                com.conversation_id = target.id
            target.messages.extend(source.messages)
            target.messages.sort(key=lambda m: (m.created_at, m.seq))
            target.comments.extend(source.comments)
            target.comments.sort(key=lambda c: (c.posted_at, c.seq))
            target.thread_refs |= source.thread_refs
            target.sender_keys |= source.sender_keys
            source.messages = []
            source.comments = []
            source.thread_refs = set()
            source.sender_keys = set()
            source.merged_into = target.id
            return target

    # -- messages and imports ---------------------------------------------------------------

    def message_by_uid(self, uid: str) -> Message | None:
        with self.lock:
            mid = self._uids.get(uid)
            return self._messages.get(mid) if mid else None

    def messages_with_external_id(self, external_id: str) -> list[Message]:
        with self.lock:
            return [m for m in self._messages.values() if m.external_id == external_id]

    def pending_imports(self) -> int:
        with self.lock:
            return len(self._queue)

    def wait_for_imports(self, timeout: float = 5.0) -> bool:
        """Block until every accepted import is processed; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def _enqueue_import(self, inbox_id: str, payload: dict[str, Any], delay: float) -> str:
        uid = self._new_uid()
        if delay <= 0:
            with self.lock:
                self._process_import(uid, inbox_id, payload)
            return uid
        with self._idle:
            self._queue.append(_PendingImport(uid, inbox_id, payload, time.monotonic() + delay))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="front-sandbox-imports", daemon=True)
                self._worker.start()
            self._idle.notify_all()
        return uid

    def _work(self) -> None:
        # One worker, first in first out: two imports that thread together are
        # processed in the order Front accepted them.
        with self._idle:
            while self._queue:
                head = self._queue[0]
                left = head.due - time.monotonic()
                if left > 0:
                    self._idle.wait(left)
                    continue
                self._queue.popleft()
                self._process_import(head.uid, head.inbox_id, head.payload)
                self._idle.notify_all()
            self._worker = None

    def _process_import(self, uid: str, inbox_id: str, p: dict[str, Any]) -> None:
        """Thread one accepted import (§3a). Runs under the lock."""
        external_id = p["external_id"]
        existing = self._external_ids.get((inbox_id, external_id))
        if existing is not None:
            # "Front won't import two messages with the same external ID."
            self.duplicate_imports.append({"inbox_id": inbox_id, "external_id": external_id, "message_uid": uid,
                                           "original_message_id": existing})
            self._counts["import-duplicate"] += 1
            return
        meta = p["metadata"]
        sender = p["sender"]
        is_inbound = bool(meta["is_inbound"])
        conv: Conversation | None = None
        thread_ref: str | None = None
        if p.get("conversation_id") is not None:
            # "including this parameter nullifies the thread_ref parameter completely"
            conv = self.current(p["conversation_id"])
            if conv is None:
                self.failed_imports.append({"message_uid": uid, "reason": "unknown conversation",
                                            "conversation_id": p["conversation_id"]})
                return
        else:
            thread_ref = meta.get("thread_ref")
            if thread_ref is not None:
                ids = self._by_thread_ref.get(thread_ref, set())
            else:
                # "If omitted, Front threads by sender instead."
                ids = self._by_sender.get(handle_key(sender["handle"]), set())
            matches = [c for cid in ids if (c := self._conversations[cid]).inbox_id == inbox_id
                       and c.merged_into is None and c.status not in ("deleted", "spam")]
            if matches:
                conv = max(matches, key=lambda c: (c.last_activity, c.seq))
        if conv is None:
            conv = self._new_conversation(inbox_id, p.get("subject") or "", created_at=p["created_at"])
        msg = Message(
            id=self._new_id("msg"), uid=uid, conversation_id=conv.id, inbox_id=inbox_id,
            type=p.get("type", "email"), is_inbound=is_inbound, created_at=int(p["created_at"]), body=p["body"],
            subject=p.get("subject"), body_format=p.get("body_format", "markdown"),
            sender_handle=sender["handle"], sender_name=sender.get("name"),
            # "author_id … Ignored if the message is inbound."
            author_id=None if is_inbound else sender.get("author_id"),
            to=list(p["to"]), cc=list(p.get("cc", [])), bcc=list(p.get("bcc", [])),
            external_id=external_id, thread_ref=thread_ref,
            is_archived=meta.get("is_archived", True), should_skip_rules=meta.get("should_skip_rules", True),
            imported_at=self.now(), seq=self._next_seq(),
        )
        self._attach(conv, msg)
        if conv.status not in ("deleted", "spam"):
            conv.status = "archived" if msg.is_archived else "open"
        if p.get("assignee_id") is not None:
            conv.assignee_id = p["assignee_id"]
        for tag in p.get("tags", []):
            if tag not in conv.tags:
                conv.tags.append(tag)
        self._counts["import-processed"] += 1


def _status_matches(conv: Conversation, wanted: set[str]) -> bool:
    api = conv.api_status
    if api in wanted:
        return True
    if "trashed" in wanted and api == "deleted":
        return True
    return "open" in wanted and conv.is_open


# --------------------------------------------------------------------------
# Rate limits (§1)
# --------------------------------------------------------------------------


class CompanyBudget:
    """The global limit: one bucket per company, shared by every token (§1).

    A fixed window of ``window_s`` seconds that starts with its first
    request; ``x-ratelimit-reset`` is its end. ``limit=None`` counts without
    refusing (the headers then show :data:`UNLIMITED`).
    """

    def __init__(self, limit: int | None, window_s: float = 60.0, *, clock: Callable[[], float] = time.time) -> None:
        if limit is not None and limit < 1:
            raise ValueError("requests_per_minute must be at least 1")
        if window_s <= 0:
            raise ValueError("rate_window_seconds must be positive")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._start: float | None = None
        self._used = 0
        self._lock = threading.Lock()

    def _roll(self, now: float) -> None:
        if self._start is None or now >= self._start + self.window_s:
            self._start = now
            self._used = 0

    def take(self) -> bool:
        with self._lock:
            self._roll(self._clock())
            if self.limit is not None and self._used >= self.limit:
                return False
            self._used += 1
            return True

    def refund(self) -> None:
        """Give back a request that was refused later (a burst 429 costs nothing)."""
        with self._lock:
            self._used = max(0, self._used - 1)

    def state(self) -> tuple[int, int, float, float]:
        """``(limit shown, remaining, reset epoch, seconds to reset)``."""
        with self._lock:
            now = self._clock()
            if self._start is not None and now >= self._start + self.window_s:
                self._start, self._used = None, 0
            reset = (self._start if self._start is not None else now) + self.window_s
            shown = self.limit if self.limit is not None else UNLIMITED
            return shown, max(0, shown - self._used), reset, max(reset - now, 0.0)


class BurstLimiter:
    """Tier-2 burst limit: at most ``per_second`` requests per resource in any second (§1)."""

    def __init__(self, per_second: int, *, clock: Callable[[], float] = time.time) -> None:
        if per_second < 1:
            raise ValueError("burst_limit_per_second must be at least 1")
        self.per_second = per_second
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """``None`` when allowed, else the seconds until this resource has room again."""
        with self._lock:
            now = self._clock()
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - 1.0:
                hits.popleft()
            if len(hits) >= self.per_second:
                return max(hits[0] + 1.0 - now, 0.001)
            hits.append(now)
            if len(self._hits) > 10_000:
                # Resources touched once and long ago would pile up over a large backfill.
                for k in [k for k, d in self._hits.items() if not d or d[-1] <= now - 1.0]:
                    del self._hits[k]
            return None


@dataclass(slots=True)
class _BurstScript:
    left: int
    operation: str | None
    path_prefix: str | None
    retry_after_s: float


# --------------------------------------------------------------------------
# Errors (§6)
# --------------------------------------------------------------------------

_TITLES = {
    400: "Bad request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 429: "Too many requests",
    500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable", 504: "Gateway timeout",
}


def _error(status: int, message: str | None = None, *, details: Sequence[str] | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    """``{"_error": {status, title, message?, details?}}`` (§6)."""
    err: dict[str, Any] = {"status": status, "title": _TITLES.get(status, "Error")}
    if message is not None:
        err["message"] = message
    if details:
        err["details"] = list(details)
    return Response.json({"_error": err}, status=status, headers=headers)


def _not_found_alias() -> Response:
    # The observed body of an unknown alias has no message (§2, lithictech/suma fixture).
    return _error(404)


def _json_syntax_error(exc: json.JSONDecodeError) -> Response:
    # §6: a JSON syntax error answers an _error with only a message, in the
    # wording of Front's (JavaScript) parser.
    if exc.pos >= len(exc.doc):
        message = "Unexpected end of JSON input"
    else:
        message = f"Unexpected token {exc.doc[exc.pos]} in JSON at position {exc.pos}"
    return Response.json({"_error": {"message": message}}, status=400)


class _Reply(Exception):
    """Raised by a handler to answer at once with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


_API_AUTHOR = Teammate("tea_sandboxapi", "api-token@sandbox.invalid", "API", "token", "api", type="api")
_VALID_STATUSES = ("assigned", "unassigned", "archived", "trashed")  # [spec parameters.conversationQuery]
_Q_KEY = re.compile(r"^q\[([A-Za-z_]+)\](?:\[\d*\])?$")
_TAG_RE = re.compile(r"<[^>]+>")


def _stored_handle(handle: str) -> str:
    # Front stores phone handles in E.164 (normalising missing country codes to +1).
    return normalize_phone(handle) if _looks_like_phone(handle) else handle.strip()


# --------------------------------------------------------------------------
# The HTTP app
# --------------------------------------------------------------------------


class FrontApp:
    """Front's Core API over a :class:`FrontStore`.

    ``requests_per_minute=None`` disables the global limit (the headers then
    show :data:`UNLIMITED`); tests use a small ``rate_window_seconds``.
    ``burst_limit_per_second`` turns on the Tier-2 burst limit (Front's is
    5, §1); :meth:`script_burst` scripts burst 429s. ``import_delay_seconds``
    processes imports that long after the 202 (0: before answering).
    ``reference_page_size`` paginates the lists the spec leaves unpaginated.
    """

    def __init__(
        self,
        store: FrontStore,
        *,
        api_token: str = DEFAULT_API_TOKEN,
        requests_per_minute: int | None = None,
        rate_window_seconds: float = 60.0,
        burst_limit_per_second: int | None = None,
        import_delay_seconds: float = 0.0,
        default_page_size: int = DEFAULT_LIMIT,
        reference_page_size: int | None = None,
        allow_unknown_properties: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.api_token = api_token
        self.budget = CompanyBudget(requests_per_minute, rate_window_seconds, clock=clock)
        self.burst = BurstLimiter(burst_limit_per_second, clock=clock) if burst_limit_per_second else None
        self.import_delay_seconds = import_delay_seconds
        self.default_page_size = default_page_size
        self.reference_page_size = reference_page_size
        self.allow_unknown_properties = allow_unknown_properties
        self._clock = clock
        self._scripts: list[_BurstScript] = []
        self._script_lock = threading.Lock()

    # -- test controls ----------------------------------------------------------------

    def script_burst(self, count: int = 1, *, operation: str | None = None, path_prefix: str | None = None,
                     retry_after_s: float = 0.341) -> None:
        """The next ``count`` matching requests get a Tier-2 burst 429 (remaining stays positive).

        ``operation`` is a spec operationId (``import-inbox-message``,
        ``add-comment``, ``update-conversation``…); ``path_prefix`` matches
        the request path. Neither: any authenticated request.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._script_lock:
            self._scripts.append(_BurstScript(count, operation, path_prefix, retry_after_s))

    def pending_bursts(self) -> int:
        with self._script_lock:
            return sum(s.left for s in self._scripts)

    # -- server hooks ------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        response, operation = self._serve(request)
        self._record(request, operation, response.status)
        return response

    def fault_response(self, fault: Fault, request: Request) -> Response:
        """Injected faults in Front's shape: an ``_error`` body, and the rate-limit headers."""
        assert fault.status is not None
        self.store._count("injected-fault")
        if fault.status == 429:
            # Shaped as a global-limit 429 (remaining 0), the kind a client must wait out.
            limit, _, _, _ = self.budget.state()
            reset = self._clock() + fault.retry_after_s
            response = _error(429, f"Rate limit exceeded. Please retry in {round(fault.retry_after_s * 1000)} "
                                   "milliseconds.", headers={
                                       "x-ratelimit-limit": str(limit), "x-ratelimit-remaining": "0",
                                       "x-ratelimit-reset": f"{reset:.3f}",
                                       "retry-after": f"{fault.retry_after_s:.3f}"})
        else:
            response = _error(fault.status, "Injected fault (sandbox).", headers=self._rate_headers())
        found = match_operation(request.method, request.path)
        self._record(request, found[1]["operationId"] if found else None, response.status)
        return response

    # -- pipeline -----------------------------------------------------------------------------

    def _record(self, request: Request, operation: str | None, status: int) -> None:
        body: Any = None
        if request.body:
            text = request.body.decode("utf-8", errors="replace")
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        self.store._record(ReceivedRequest(request.method, request.path, request.query_items, body, operation,
                                           status, self._clock()))

    def _authorized(self, request: Request) -> bool:
        header = request.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return hmac.compare_digest(token.strip().encode(), self.api_token.encode())

    def _serve(self, request: Request) -> tuple[Response, str | None]:
        if not self._authorized(request):
            self.store._count("unauthenticated")
            # §1: the observed 401 body (support-exercise file).
            return _error(401, "JSON Web Token error"), None
        if not self.budget.take():
            self.store._count("rate-limited")
            return self._too_many_global(), None

        found = match_operation(request.method, request.path)
        if found is None:
            return self._with_rate_headers(self._no_route(request)), None
        template, op = found
        operation = op["operationId"]
        self.store._count(operation)
        params = self._params(template, request.path)

        wait = self._burst_wait(operation, request.path, params)
        if wait is not None:
            self.budget.refund()
            self.store._count("burst-limited")
            return self._too_many_burst(wait), operation

        try:
            body = self._body(request, template, op)
            handler = getattr(self, "_op_" + operation.replace("-", "_"))
            with self.store.lock:
                response = handler(request, params, body)
        except _Reply as reply:
            response = reply.response
        return self._with_rate_headers(response), operation

    def _no_route(self, request: Request) -> Response:
        allowed = [m.upper() for m in ("get", "post", "put", "patch", "delete")
                   if m != request.method.lower() and match_operation(m, request.path) is not None]
        if allowed:
            return _error(405, f"{request.method} is not allowed on {request.path}",
                          headers={"Allow": ", ".join(allowed)})
        return _error(404, f"Unknown route {request.method} {request.path}")

    @staticmethod
    def _params(template: str, path: str) -> dict[str, str]:
        tsegs = [s for s in template.strip("/").split("/") if s]
        segs = [s for s in path.strip("/").split("/") if s]
        # Path parameters are percent-decoded (alt:phone:%2B33… is alt:phone:+33…),
        # but not '+'-decoded: in a path '+' is a literal plus (§2 "test both").
        return {t[1:-1]: unquote(s) for t, s in zip(tsegs, segs, strict=True) if t.startswith("{")}

    def _burst_wait(self, operation: str, path: str, params: Mapping[str, str]) -> float | None:
        with self._script_lock:
            for script in self._scripts:
                if ((script.operation is None or script.operation == operation)
                        and (script.path_prefix is None or path.startswith(script.path_prefix))):
                    script.left -= 1
                    wait = script.retry_after_s
                    self._scripts = [s for s in self._scripts if s.left > 0]
                    return wait
        if self.burst is None:
            return None
        # UNCONFIRMED Tier-2 routes (§1): imports per inbox, conversation writes per conversation.
        if operation == "import-inbox-message":
            key = f"inbox:{params['inbox_id']}"
        elif operation in ("add-comment", "update-conversation", "update-conversation-assignee"):
            key = f"conversation:{params['conversation_id']}"
        else:
            return None
        return self.burst.take(key)

    def _rate_headers(self, *, remaining: int | None = None) -> dict[str, str]:
        limit, left, reset, _ = self.budget.state()
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(left if remaining is None else remaining),
            # A timestamp with milliseconds: see AMBIGUITIES.
            "x-ratelimit-reset": f"{reset:.3f}",
        }

    def _with_rate_headers(self, response: Response) -> Response:
        response.headers.update(self._rate_headers())
        return response

    def _too_many_global(self) -> Response:
        _, _, _, wait = self.budget.state()
        wait = max(wait, 0.001)
        headers = self._rate_headers(remaining=0)
        headers["retry-after"] = f"{wait:.3f}"  # seconds, as a float (§1)
        return _error(429, f"Rate limit exceeded. Please retry in {max(1, round(wait * 1000))} milliseconds.",
                      headers=headers)

    def _too_many_burst(self, wait: float) -> Response:
        headers = self._rate_headers()  # remaining stays positive: the limits are independent (§1)
        headers["retry-after"] = f"{wait:.3f}"
        headers["x-front-tier"] = BURST_TIER
        return _error(429, f"Rate limit exceeded for {BURST_TIER} route. Please retry in "
                           f"{max(1, round(wait * 1000))} milliseconds.", headers=headers)

    def _body(self, request: Request, template: str, op: Mapping[str, Any]) -> dict[str, Any] | None:
        if "requestBody" not in op:
            return None
        raw = request.body
        body: Any = None
        if raw.strip():
            ctype = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
            if ctype != "application/json" and not ctype.endswith("+json"):
                self.store._count("invalid-body")
                raise _Reply(_error(400, "Body did not satisfy requirements", details=[
                    f"Content-Type must be application/json, got {ctype or 'none'} "
                    "(multipart attachments are not emulated by the sandbox)"]))
            try:
                body = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise _Reply(Response.json({"_error": {"message": "Invalid UTF-8 in the request body"}},
                                           status=400)) from None
            except json.JSONDecodeError as exc:
                self.store._count("invalid-body")
                raise _Reply(_json_syntax_error(exc)) from None
        errors = _validate_body(SPEC_SUBSET, request.method, template, op, body,
                                allow_unknown=self.allow_unknown_properties)
        if errors:
            self.store._count("invalid-body")
            raise _Reply(_error(400, "Body did not satisfy requirements", details=errors))
        return body if body is not None else {}

    @staticmethod
    def _bad(message: str, *details: str) -> _Reply:
        return _Reply(_error(400, message, details=list(details) or None))

    # -- lists (§4) ----------------------------------------------------------------------

    def _self_url(self, request: Request) -> str:
        query = urlencode(list(request.query_items))
        return request.base_url + request.path + (f"?{query}" if query else "")

    def _page_bounds(self, request: Request, default: int) -> tuple[int, int]:
        raw = request.query.get("limit")
        limit = default
        if raw is not None:
            try:
                limit = int(raw)
            except ValueError:
                raise self._bad("limit must be an integer") from None
            if not 1 <= limit <= MAX_LIMIT:
                raise self._bad(f"limit must be between 1 and {MAX_LIMIT}")
        offset = 0
        token = request.query.get("page_token")
        if token is not None:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                offset = int(decoded["o"])
                if decoded["p"] != request.path or offset < 0:
                    raise ValueError
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise self._bad("Invalid page_token") from None
        return limit, offset

    def _paginated(self, request: Request, items: Sequence[Any], render: Callable[[Any], dict[str, Any]], *,
                   default: int | None = None) -> Response:
        limit, offset = self._page_bounds(request, default or self.default_page_size)
        page = items[offset:offset + limit]
        next_url = None
        if offset + limit < len(items):
            token = base64.urlsafe_b64encode(
                json.dumps({"o": offset + limit, "p": request.path}, separators=(",", ":")).encode()
            ).decode().rstrip("=")
            kept = [(k, v) for k, v in request.query_items if k != "page_token"]
            next_url = f"{request.base_url}{request.path}?{urlencode([*kept, ('page_token', token)])}"
        return Response.json({
            "_pagination": {"next": next_url},
            "_links": {"self": self._self_url(request)},
            "_results": [render(x) for x in page],
        })

    def _reference_list(
        self, request: Request, items: Sequence[Any], render: Callable[[Any], dict[str, Any]],
    ) -> Response:
        # [spec listOfInboxes/listOfTeammates/listOfComments]: no _pagination (see AMBIGUITIES).
        if self.reference_page_size is None:
            return Response.json({"_links": {"self": self._self_url(request)}, "_results": [render(x) for x in items]})
        return self._paginated(request, items, render, default=self.reference_page_size)

    # -- renderers ([spec] *Response schemas) -------------------------------------------------

    def _teammate(self, b: str, mate: Teammate) -> dict[str, Any]:
        return {
            "_links": {"self": f"{b}/teammates/{mate.id}",
                       "related": {"inboxes": f"{b}/teammates/{mate.id}/inboxes",
                                   "conversations": f"{b}/teammates/{mate.id}/conversations"}},
            "id": mate.id, "email": mate.email, "username": mate.username,
            "first_name": mate.first_name, "last_name": mate.last_name,
            "is_admin": mate.is_admin, "is_available": mate.is_available, "is_blocked": mate.is_blocked,
            "type": mate.type, "custom_fields": {},
        }

    def _inbox(self, b: str, inbox: Inbox) -> dict[str, Any]:
        return {
            "_links": {"self": f"{b}/inboxes/{inbox.id}",
                       "related": {"teammates": f"{b}/inboxes/{inbox.id}/teammates",
                                   "conversations": f"{b}/inboxes/{inbox.id}/conversations",
                                   "channels": f"{b}/inboxes/{inbox.id}/channels"}},
            "id": inbox.id, "name": inbox.name, "is_private": inbox.is_private,
            "is_public": not inbox.is_private, "custom_fields": {},
        }

    def _contact(self, b: str, c: Contact) -> dict[str, Any]:
        return {
            "_links": {"self": f"{b}/contacts/{c.id}",
                       "related": {"notes": f"{b}/contacts/{c.id}/notes",
                                   "conversations": f"{b}/contacts/{c.id}/conversations", "owner": None}},
            "id": c.id, "name": c.name, "avatar_url": None, "links": list(c.links), "groups": [],
            "lists": [{"_links": {}, "id": "grp_" + hashlib.md5(n.encode()).hexdigest()[:6], "name": n,
                       "is_private": False} for n in c.list_names],
            "handles": [dict(h) for h in c.handles], "custom_fields": dict(c.custom_fields), "is_private": False,
        }

    def _recipient(self, b: str, handle: str, role: str, name: str | None = None) -> dict[str, Any]:
        contact = self.store.contact_for_handle(handle)
        return {"_links": {"related": {"contact": f"{b}/contacts/{contact.id}" if contact else None}},
                "name": name, "handle": handle, "role": role}

    def _tag(self, b: str, name: str, tag_id: str | None = None) -> dict[str, Any]:
        tid = tag_id or "tag_" + hashlib.md5(name.encode()).hexdigest()[:6]
        return {"_links": {"self": f"{b}/tags/{tid}",
                           "related": {"conversations": f"{b}/tags/{tid}/conversations", "owner": None,
                                       "parent_tag": None, "children": None}},
                "id": tid, "name": name, "description": None, "highlight": None, "is_private": False,
                "is_visible_in_conversation_lists": True}

    def _conversation(self, b: str, conv: Conversation) -> dict[str, Any]:
        recipient = None
        inbound = [m for m in conv.messages if m.is_inbound]
        if inbound:
            last = max(inbound, key=lambda m: (m.created_at, m.seq))
            recipient = self._recipient(b, last.sender_handle, "from", last.sender_name)
        elif conv.messages:
            last = max(conv.messages, key=lambda m: (m.created_at, m.seq))
            if last.external_handles:
                recipient = self._recipient(b, last.external_handles[0], "to")
        last_msg = max(conv.messages, key=lambda m: (m.created_at, m.seq), default=None)
        related = {"events": f"{b}/conversations/{conv.id}/events",
                   "followers": f"{b}/conversations/{conv.id}/followers",
                   "messages": f"{b}/conversations/{conv.id}/messages",
                   "comments": f"{b}/conversations/{conv.id}/comments",
                   "inboxes": f"{b}/conversations/{conv.id}/inboxes"}
        if last_msg is not None:
            related["last_message"] = f"{b}/messages/{last_msg.id}?referer=conversation"
        assignee = self.store._teammates.get(conv.assignee_id) if conv.assignee_id else None
        return {
            "_links": {"self": f"{b}/conversations/{conv.id}", "related": related},
            "id": conv.id, "type": conv.type, "subject": conv.subject, "status": conv.api_status,
            "ticket_ids": [],
            "assignee": self._teammate(b, assignee) if assignee else None,
            "recipient": recipient,
            "tags": [self._tag(b, t) for t in conv.tags] + [self._tag(b, t, t) for t in conv.tag_ids],
            "links": [], "custom_fields": dict(conv.custom_fields),
            "created_at": float(conv.created_at), "updated_at": float(conv.last_activity),
            "is_private": False, "scheduled_reminders": [], "metadata": {},
        }

    def _message(self, b: str, m: Message) -> dict[str, Any]:
        text = _TAG_RE.sub("", m.body) if m.body_format == "html" else m.body
        recipients = [self._recipient(b, m.sender_handle, "from", m.sender_name)] if m.sender_handle else []
        recipients += [self._recipient(b, h, "to") for h in m.to]
        recipients += [self._recipient(b, h, "cc") for h in m.cc]
        recipients += [self._recipient(b, h, "bcc") for h in m.bcc]
        author = self.store._teammates.get(m.author_id) if m.author_id else None
        metadata: dict[str, Any] = {}
        if m.external_id is not None:
            metadata["external_id"] = m.external_id
        if m.thread_ref is not None:
            metadata["thread_ref"] = m.thread_ref
        return {
            "_links": {"self": f"{b}/messages/{m.id}",
                       "related": {"conversation": f"{b}/conversations/{m.conversation_id}",
                                   "message_seen": f"{b}/messages/{m.id}/seen"}},
            "id": m.id, "message_uid": m.uid, "type": m.type, "is_inbound": m.is_inbound,
            "draft_mode": None, "error_type": None, "version": hashlib.md5(m.id.encode()).hexdigest(),
            "created_at": float(m.created_at), "subject": m.subject or "",
            "blurb": " ".join(text.split())[:100],
            "author": self._teammate(b, author) if author else None,
            "recipients": recipients, "body": m.body, "text": text, "attachments": [], "metadata": metadata,
        }

    def _comment(self, b: str, c: Comment) -> dict[str, Any]:
        author = (self.store._teammates.get(c.author_id) if c.author_id else None) or _API_AUTHOR
        return {
            "_links": {"self": f"{b}/comments/{c.id}",
                       "related": {"conversation": f"{b}/conversations/{c.conversation_id}",
                                   "mentions": f"{b}/comments/{c.id}/mentions", "comment_replied_to": None}},
            "id": c.id, "author": self._teammate(b, author), "body": c.body, "posted_at": c.posted_at,
            "attachments": [], "is_pinned": c.is_pinned,
        }

    # -- lookups shared by handlers ----------------------------------------------------------------

    def _conversation_or_redirect(self, request: Request, conversation_id: str) -> Conversation:
        conv = self.store._conversations.get(conversation_id)
        if conv is None:
            # §6: "Unknown conversation ID cn_123".
            raise _Reply(_error(404, f"Unknown conversation ID {conversation_id}"))
        if conv.merged_into is not None:
            target = self.store.current(conversation_id)
            assert target is not None
            segs = request.path.split("/")
            # /conversations/{id}/… : the id is the third piece of the split path.
            segs[2] = target.id
            query = urlencode(list(request.query_items))
            location = request.base_url + "/".join(segs) + (f"?{query}" if query else "")
            raise _Reply(Response(status=301, headers={"location": location}))
        return conv

    def _teammate_id(self, ref: str, what: str, *, aliases: bool) -> str:
        mate = self.store.resolve_teammate(ref, aliases=aliases)
        if mate is None:
            hint = "" if aliases or not ref.startswith("alt:") else " (a teammate ID is required here, not an alias)"
            raise self._bad(f"Unknown teammate {ref} in {what}{hint}")
        return mate.id

    # -- operations (named after the spec's operationId) ---------------------------------------------

    def _op_api_token_details(self, request: Request, params: dict[str, str], body: Any) -> Response:
        return Response.json({"_links": {"self": f"{request.base_url}/me"}, "id": COMPANY_ID, "name": COMPANY_NAME})

    def _op_list_inboxes(self, request: Request, params: dict[str, str], body: Any) -> Response:
        inboxes = list(self.store._inboxes.values())
        return self._reference_list(request, inboxes, lambda i: self._inbox(request.base_url, i))

    def _op_get_inbox(self, request: Request, params: dict[str, str], body: Any) -> Response:
        inbox = self.store._inboxes.get(params["inbox_id"])
        if inbox is None:
            return _error(404, f"Unknown inbox ID {params['inbox_id']}")
        return Response.json(self._inbox(request.base_url, inbox))

    def _op_list_teammates(self, request: Request, params: dict[str, str], body: Any) -> Response:
        mates = list(self.store._teammates.values())
        return self._reference_list(request, mates, lambda t: self._teammate(request.base_url, t))

    def _op_get_teammate(self, request: Request, params: dict[str, str], body: Any) -> Response:
        # [spec get-teammate]: "Alternatively, you can supply an email as a resource alias."
        mate = self.store.resolve_teammate(params["teammate_id"], aliases=True)
        if mate is None:
            return _not_found_alias()
        return Response.json(self._teammate(request.base_url, mate))

    def _op_create_contact(self, request: Request, params: dict[str, str], body: dict[str, Any]) -> Response:
        handles = body["handles"]
        if not handles:
            raise self._bad("Body did not satisfy requirements", "body.handles: a contact needs at least one handle")
        for i, h in enumerate(handles):
            if h["source"] == "phone" and not _looks_like_phone(h["handle"]):
                raise self._bad("Body did not satisfy requirements", f"body.handles[{i}].handle: not a phone number")
            if h["source"] == "email" and "@" not in h["handle"]:
                raise self._bad("Body did not satisfy requirements", f"body.handles[{i}].handle: not an e-mail address")
        list_names = list(body.get("list_names", [])) + [n for n in body.get("group_names", [])
                                                          if n not in body.get("list_names", [])]
        try:
            contact = self.store.add_contact(handles=handles, name=body.get("name"),
                                             description=body.get("description"), links=body.get("links", []),
                                             list_names=list_names, custom_fields=body.get("custom_fields"))
        except HandleConflict as exc:
            # §2: the observed 409 body.
            return _error(409, "Your request contains a conflict with the contact(s): " + ", ".join(exc.contact_ids))
        return Response.json(self._contact(request.base_url, contact), status=201)

    def _op_get_contact(self, request: Request, params: dict[str, str], body: Any) -> Response:
        contact = self.store.resolve_contact(params["contact_id"])
        if contact is None:
            return _not_found_alias()
        return Response.json(self._contact(request.base_url, contact))

    def _op_list_contact_conversations(self, request: Request, params: dict[str, str], body: Any) -> Response:
        contact = self.store.resolve_contact(params["contact_id"])
        if contact is None:
            return _not_found_alias()
        statuses: list[str] = []
        for key, value in request.query_items:
            if key == "q":
                raise self._bad("q is a query object: send q[statuses][]=assigned&q[statuses][]=unassigned")
            if not key.startswith("q["):
                continue
            m = _Q_KEY.match(key)
            if m is None:
                raise self._bad(f"Invalid query parameter {key}")
            name = m.group(1)
            if name in ("status_categories", "status_ids"):
                raise self._bad(f"q[{name}] needs ticketing, which is not enabled for this company")
            if name != "statuses":
                raise self._bad(f"Unknown query filter q[{name}]")
            if value not in _VALID_STATUSES:
                raise self._bad(f"Invalid status {value!r}: use one of {', '.join(_VALID_STATUSES)}")
            statuses.append(value)
        # UNCONFIRMED default: everything but trashed conversations.
        wanted = statuses or ["assigned", "unassigned", "archived"]
        convs = self.store.conversations_of(contact, statuses=wanted)
        return self._paginated(request, convs, lambda c: self._conversation(request.base_url, c))

    def _op_get_conversation_by_id(self, request: Request, params: dict[str, str], body: Any) -> Response:
        conv = self._conversation_or_redirect(request, params["conversation_id"])
        return Response.json(self._conversation(request.base_url, conv))

    def _op_update_conversation(self, request: Request, params: dict[str, str], body: dict[str, Any]) -> Response:
        conv = self._conversation_or_redirect(request, params["conversation_id"])
        if "status" in body and "status_id" in body:
            raise self._bad("Only one of status and status_id should be provided")
        if "status_id" in body:
            raise self._bad("status_id needs ticketing, which is not enabled for this company")
        for task_only in ("description", "due_at"):
            if task_only in body:
                raise self._bad(f"{task_only} is only allowed on task conversations")
        changes: dict[str, Any] = {}
        if "assignee_id" in body:
            ref = body["assignee_id"]
            changes["assignee_id"] = None if ref is None else self._teammate_id(ref, "assignee_id", aliases=False)
        if "inbox_id" in body:
            if body["inbox_id"] not in self.store._inboxes:
                raise self._bad(f"Unknown inbox ID {body['inbox_id']}")
            changes["inbox_id"] = body["inbox_id"]
        if "status" in body:
            changes["status"] = body["status"]
        if "tag_ids" in body:
            changes["tag_ids"] = list(body["tag_ids"])  # "replacing the old conversation tags"
        if "custom_fields" in body:
            changes["custom_fields"] = dict(body["custom_fields"])  # replaces all of them
        for name, value in changes.items():
            setattr(conv, name, value)
        return Response(status=204)

    def _op_update_conversation_assignee(
        self, request: Request, params: dict[str, str], body: dict[str, Any],
    ) -> Response:
        conv = self._conversation_or_redirect(request, params["conversation_id"])
        ref = body["assignee_id"]
        conv.assignee_id = None if ref is None else self._teammate_id(ref, "assignee_id", aliases=False)
        return Response(status=204)

    def _op_list_conversation_messages(self, request: Request, params: dict[str, str], body: Any) -> Response:
        conv = self._conversation_or_redirect(request, params["conversation_id"])
        sort_by = request.query.get("sort_by", "created_at")
        if sort_by != "created_at":
            raise self._bad("sort_by only supports created_at")
        order = request.query.get("sort_order", "desc")
        if order not in ("asc", "desc"):
            raise self._bad("sort_order must be asc or desc")
        # [spec list-conversation-messages]: newest first unless asked otherwise.
        msgs = sorted(conv.messages, key=lambda m: (m.created_at, m.seq), reverse=order == "desc")
        return self._paginated(request, msgs, lambda m: self._message(request.base_url, m))

    def _op_list_conversation_comments(self, request: Request, params: dict[str, str], body: Any) -> Response:
        conv = self._conversation_or_redirect(request, params["conversation_id"])
        coms = sorted(conv.comments, key=lambda c: (c.posted_at, c.seq), reverse=True)  # newest first [spec]
        return self._reference_list(request, coms, lambda c: self._comment(request.base_url, c))

    def _op_add_comment(self, request: Request, params: dict[str, str], body: dict[str, Any]) -> Response:
        conv = self._conversation_or_redirect(request, params["conversation_id"])
        author = body.get("author_id")
        # [spec CreateComment.author_id]: a teammate ID or a resource alias; omitted: the API token.
        author_id = None if author is None else self._teammate_id(author, "author_id", aliases=True)
        store = self.store
        com = Comment(store._new_id("com"), conv.id, body["body"], author_id, bool(body.get("is_pinned", False)),
                      round(store.now(), 3), store._next_seq())
        conv.comments.append(com)
        return Response.json(self._comment(request.base_url, com), status=201)

    def _op_list_conversation_inboxes(self, request: Request, params: dict[str, str], body: Any) -> Response:
        conv = self._conversation_or_redirect(request, params["conversation_id"])
        inbox = self.store._inboxes[conv.inbox_id]
        return self._reference_list(request, [inbox], lambda i: self._inbox(request.base_url, i))

    def _op_get_message(self, request: Request, params: dict[str, str], body: Any) -> Response:
        ref = params["message_id"]
        if ref.startswith("alt:uid:"):
            # §3a: the message_uid of a 202 resolves once the import is processed.
            msg = self.store.message_by_uid(ref[len("alt:uid:"):])
        else:
            msg = self.store._messages.get(ref)
        if msg is None:
            return _not_found_alias()
        return Response.json(self._message(request.base_url, msg))

    def _op_import_inbox_message(self, request: Request, params: dict[str, str], body: dict[str, Any]) -> Response:
        inbox_id = params["inbox_id"]
        if inbox_id not in self.store._inboxes:
            return _error(404, f"Unknown inbox ID {inbox_id}")
        if "body_format" in body and body.get("type", "email") != "email":
            raise self._bad("Body did not satisfy requirements",
                            "body.body_format: can only be specified for email type")
        if body.get("conversation_id") is not None and self.store.current(body["conversation_id"]) is None:
            raise _Reply(_error(404, f"Unknown conversation ID {body['conversation_id']}"))
        if body.get("assignee_id") is not None:
            self._teammate_id(body["assignee_id"], "assignee_id", aliases=False)
        if not body["metadata"]["is_inbound"] and body["sender"].get("author_id") is not None:
            self._teammate_id(body["sender"]["author_id"], "sender.author_id", aliases=False)
        payload = dict(body)
        payload["sender"] = {**body["sender"], "handle": _stored_handle(body["sender"]["handle"])}
        for key in ("to", "cc", "bcc"):
            if key in body:
                payload[key] = [_stored_handle(h) for h in body[key]]
        uid = self.store._enqueue_import(inbox_id, payload, self.import_delay_seconds)
        # [spec acceptedMessage]
        return Response.json({"status": "accepted", "message_uid": uid}, status=202)


def _validate_body(spec: Mapping[str, Any], method: str, template: str, op: Mapping[str, Any], body: Any, *,
                   allow_unknown: bool) -> list[str]:
    request_body = op.get("requestBody")
    if request_body is None:
        return [] if body is None else [f"{method.upper()} {template} takes no request body"]
    schema = request_body.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return [f"{method.upper()} {template} does not take a JSON body"]
    validator = _Validator(spec, allow_unknown=allow_unknown)
    if body is None:
        target = validator.resolve(schema["$ref"]) if "$ref" in schema else schema
        if request_body.get("required") or target.get("required"):
            return ["body: a JSON object is required"]
        return []
    errors: list[str] = []
    validator.validate(body, schema, "body", "#", errors)
    return errors


# --------------------------------------------------------------------------
# Convenience
# --------------------------------------------------------------------------


class FrontSandbox(tuple):  # type: ignore[type-arg]
    """``(server, store)``, plus ``app`` and ``url`` (the tool's ``front.base_url``)."""

    app: FrontApp

    def __new__(cls, server: LoopbackServer, store: FrontStore, app: FrontApp) -> FrontSandbox:
        self = super().__new__(cls, (server, store))
        self.app = app
        return self

    @property
    def server(self) -> LoopbackServer:
        return self[0]

    @property
    def store(self) -> FrontStore:
        return self[1]

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


def start_front_sandbox(
    port: int = 0,
    *,
    agents: Iterable[Mapping[str, Any]] = (),
    inbox_name: str = "Aircall Phone",
    api_token: str = DEFAULT_API_TOKEN,
    requests_per_minute: int | None = None,
    rate_window_seconds: float = 60.0,
    faults: Faults | None = None,
    host: str = "127.0.0.1",
    burst_limit_per_second: int | None = None,
    import_delay_seconds: float = 0.0,
    agents_without_teammate: Iterable[str] | None = None,
    contacts: Iterable[str | Mapping[str, Any]] = (),
    reference_page_size: int | None = None,
    store: FrontStore | None = None,
) -> FrontSandbox:
    """Seed a store (or reuse one), mount the API at the server root and start it.

    Returns ``(server, store)`` (a tuple that also carries ``.app`` and
    ``.url``). The tool's ``front.base_url`` is ``server.url``; its token is
    ``api_token``. Stop with ``server.stop()``.
    """
    if store is None:
        store = FrontStore(agents=agents, inbox_name=inbox_name, agents_without_teammate=agents_without_teammate,
                           contacts=contacts)
    app = FrontApp(store, api_token=api_token, requests_per_minute=requests_per_minute,
                   rate_window_seconds=rate_window_seconds, burst_limit_per_second=burst_limit_per_second,
                   import_delay_seconds=import_delay_seconds, reference_page_size=reference_page_size)
    server = LoopbackServer(host=host, port=port, faults=faults)
    server.mount(app, api="front", prefix="")
    server.start()
    return FrontSandbox(server, store, app)
