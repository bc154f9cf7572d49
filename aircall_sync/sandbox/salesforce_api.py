"""Salesforce REST emulator for the sandbox: an org (schema + store) and the HTTP app.

Written from ``shared/reference/salesforce-api.md`` and the field tables in
``shared/reference/salesforce/*.json`` (not from the tool's client), plus the
data the rules need (``shared/RULES.md`` §3–5) and the sandbox contract
(``shared/DESIGN.md`` §5, §7). What it serves, under ``/services/data/vXX.X/``
(any version ≥ 40.0; older ones get 404 ``NOT_FOUND``):

- OAuth token endpoint ``POST /services/oauth2/token`` (§7): JWT bearer
  (RS256 checked against the configured certificate/public key), client
  credentials (HTTP Basic or form), username-password (password + security
  token), and a fixed pre-issued token (the tool's ``token`` mode).
  Failures are ``{"error", "error_description"}`` bodies with HTTP 400.
- Bearer auth on every data request; 401 ``INVALID_SESSION_ID`` for unknown or
  expired sessions (§4 "Errors and limits", §8 "Session refresh").
- ``sobjects`` global describe and ``sobjects/{Obj}/describe`` (§1, §2, §3,
  §5 "Person Accounts", §6) with the fields of ``task_call_fields.json``,
  ``voicecall_fields.json``, the ``aircall__`` Task fields of
  ``aircall_sf_fields.json`` / R-SF-FIELDS and the Aircall Voice object of
  R-SFV-3 with the AI insight fields of R-AI-4.
- Records: ``sobjects/{Obj}`` (create), ``sobjects/{Obj}/{id}`` (get, update,
  delete), ``sobjects/{Obj}/{field}/{value}`` (get by id-lookup field, upsert by
  external id); sObject Collections (§4: create ≤ 200 mixed types with
  ``allOrNone`` default false, update, retrieve, delete, upsert); Composite
  (§4: ≤ 25 subrequests, ≤ 5 of them collections or queries, ``@{ref.…}``
  references, ``allOrNone``); per-record validation with the real error codes.
- ``query`` / ``queryAll`` with ``nextRecordsUrl`` paging at 2,000 rows (§9) and
  ``search`` (SOSL, §5) through :mod:`aircall_sync.sandbox.soql`.
- Bulk API 2.0 ingest ``jobs/ingest`` (§4 "Bulk API 2.0 ingest").
- ``limits`` and ``Sforce-Limit-Info: api-usage=N/M`` on every data response
  (§4; the default M is the Developer Edition's 15,000).
- The URI + headers ceiling of 16,384 bytes (§9): 414 when the URI alone is too
  long, else 431.

Salesforce-specific faults (:class:`SalesforceFaults`): per-record
``UNABLE_TO_LOCK_ROW`` (§4), ``REQUEST_LIMIT_EXCEEDED`` 403, session expiry
after N requests or on demand. HTTP-level faults come from the server's
generic :class:`~aircall_sync.sandbox.server.Faults`; :meth:`SalesforceApp.fault_response`
gives them Salesforce's error-array shape.

Where the reference is silent or **UNCONFIRMED**, the emulator takes the
strict, documented-plausible reading and says so in a comment at the code;
:data:`AMBIGUITIES` lists every such decision in one place.
"""

from __future__ import annotations

import base64
import copy
import functools
import csv
import hashlib
import hmac
import io
import json
import random
import re
import threading
import time
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aircall_sync.sandbox import soql
from aircall_sync.sandbox.server import Fault, Request, Response

__all__ = [
    "AMBIGUITIES",
    "AuthConfig",
    "FieldDef",
    "ObjectDef",
    "OrgOptions",
    "SaveError",
    "SalesforceSandbox",
    "SalesforceApp",
    "SalesforceFaults",
    "SalesforceStore",
    "format_datetime",
    "start_salesforce_sandbox",
]

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

MIN_API_VERSION = 40.0
COLLECTION_MAX = 200  # §4 sObject Collections
COLLECTION_MAX_CHUNKS = 10  # §4 "mixed types are processed in chunks (max 10 chunks)"
COMPOSITE_MAX = 25  # §4 Composite
COMPOSITE_MAX_QUERY_OR_COLLECTION = 5
QUERY_BATCH = 2_000  # §9 "maximum result size per query response is 2,000 records"
URI_AND_HEADERS_MAX = 16_384  # §9

ORG_ID = soql.id15_to_18("00D8d0000001AbC")

# Key prefixes (the brief's list; the rest are the well-known standard ones).
KEY_PREFIXES: dict[str, str] = {
    "Account": "001",
    "Contact": "003",
    "User": "005",
    "Opportunity": "006",
    "RecordType": "012",
    "Task": "00T",
    "Lead": "00Q",
    "OpportunityContactRole": "00K",
    "Group": "00G",
    "Case": "500",
    "Campaign": "701",
    "Contract": "800",
    "Asset": "02i",
    "CallCenter": "04v",
    "TaskStatus": "01J",
    "VoiceCall": "0LQ",
    "VoiceCallRecording": "0Lr",
    "CollectionPlan": "0Kr",
    "ContactRequest": "0SR",
    "Organization": "00D",
}
CUSTOM_PREFIX = "a01"
JOB_PREFIX = "750"
QUERY_LOCATOR_PREFIX = "01g"

# Every strict decision taken where the reference is silent or UNCONFIRMED.
AMBIGUITIES: tuple[str, ...] = (
    "SOSL phone matching: digits-only equality between a term and a field value (a trailing * is a digit "
    "prefix); '+16176105413' does not match '(617) 610-5413'. Unquoted words are separate terms (implicit AND).",
    "SOSL 'SearchQuery' length (10,000 / 4,000 char rules) is measured on the text between the braces.",
    "SOSL: reserved characters outside quoted phrases must be backslash-escaped, else MALFORMED_SEARCH.",
    "SOQL: mixing AND/OR without parentheses is MALFORMED_QUERY; != and NOT IN are true for nulls.",
    "Collections: an unknown field or a JSON value of the wrong type fails that record "
    "(INVALID_FIELD / JSON_PARSER_ERROR) rather than the whole request.",
    "A reference to a well-formed id of the right type that does not exist: INVALID_CROSS_REFERENCE_KEY; "
    "malformed id: MALFORMED_ID; id of a type the field does not accept: FIELD_INTEGRITY_EXCEPTION.",
    "VoiceCall create needs API >= 63.0 (the v63 docs are the first to list create); below: "
    "INVALID_TYPE_FOR_OPERATION. Without the permission (org option): INSUFFICIENT_ACCESS_OR_READONLY.",
    "VoiceCall VendorType values: ContactCenter, Dialer. CallType: the SCV values (or the Dialer ones, option).",
    "aircall__Timezone__c is text (RULES writes an IANA name; aircall_sf_fields.json guesses a number): "
    "override with OrgOptions.field_types.",
    "aircall__Hour_of_the_day__c is text; text fields accept JSON numbers and store them as strings.",
    "Aircall Voice aircall__Call_Id__c is a plain text field (not external id / idLookup) unless "
    "OrgOptions.voice_call_id_external is set.",
    "A Task whose WhoId is a converted Lead: CANNOT_UPDATE_CONVERTED_LEAD; Lead WhoId with a WhatId: "
    "FIELD_INTEGRITY_EXCEPTION on WhoId/WhatId.",
    "Person contacts are real Contact rows (IsPersonAccount = true) returned by SOQL and SOSL on Contact; "
    "they are written through their Account only (a Contact update is refused).",
    "Bulk 2.0: records are split on the job's lineEnding only; a CRLF job whose body uses bare LF has a header "
    "line that swallows the data, so the job fails (state Failed, every row unprocessed) with "
    "'InvalidBatch : Field name not found'. An LF job with CRLF data fails the same way on the '\\r'.",
    "414/431 body: a Salesforce-style error array (errorCode URI_TOO_LONG / REQUEST_HEADER_FIELDS_TOO_LARGE).",
    "User and RecordType are not createable through the sandbox (the integration user lacks Manage Users).",
    "Composite: a subrequest to a resource other than sobjects, query/queryAll or composite/sobjects fails the "
    "whole request with 400 INVALID_API_INPUT. Under an outer allOrNone, a collections subrequest whose records "
    "were rolled back counts as a failure: everything is rolled back and the rest is PROCESSING_HALTED.",
    "Query cursors: at most 10 open nextRecordsUrl locators per user (the oldest is dropped: "
    "INVALID_QUERY_LOCATOR), as Salesforce documents for open cursors.",
    "SOQL filter value of the wrong type (quoted boolean, unquoted string, date for a dateTime): INVALID_FIELD "
    "'value of filter criterion for field … must be of type …'.",
    "Task.Status is an open (not restricted) picklist, as the reference lists no Restricted property; IsClosed "
    "comes from OrgOptions.task_statuses.",
    "Deleting a record clears lookups that point at it (lookup, not master-detail, semantics); nothing cascades "
    "except a person account's contact.",
    "Bulk 2.0: numberRecordsProcessed includes failed rows; an empty cell leaves a field unset, '#N/A' clears it; "
    "CSV type errors are INVALID_TYPE_ON_FIELD_IN_RECORD.",
    "Aircall Voice AI fields (RULES R-AI-4 names, ours: the reference knows only aircall__Aircall_AI__c's "
    "aircall__Call_summary__c / aircall__AI_Key_Topics__c / aircall__Customer_Mood__c, types unknown): "
    "aircall__AI_Summary__c, aircall__AI_Action_Items__c long text areas of 32,768; aircall__AI_Topics__c a "
    "long text area of 1,000 (a few keywords); aircall__AI_Sentiment__c a text area of 255 (one word); "
    "aircall__AI_Transcription__c a long text area of 131,072, Salesforce's maximum. All createable and "
    "updateable (an insight arrives after the record exists). OrgOptions.voice_ai_fields=False leaves all five "
    "out (an org whose package predates them); missing_fields removes them one by one.",
)


def format_datetime(dt: datetime) -> str:
    """Salesforce's JSON date-time spelling: ``2024-01-31T09:05:00.000+0000``."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaveError:
    """One entry of a SaveResult's ``errors`` (``statusCode`` there, ``errorCode`` at top level, §4)."""

    status_code: str
    message: str
    fields: tuple[str, ...] = ()

    def as_save(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": list(self.fields)}

    def as_rest(self) -> dict[str, Any]:
        return {"message": self.message, "errorCode": self.status_code, "fields": list(self.fields)}


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)

    def body(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            item["fields"] = self.fields
        return [item]


def _not_found() -> _HttpError:
    return _HttpError(404, "NOT_FOUND", "The requested resource does not exist")


# --------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------

_SOAP_TYPES = {
    "id": "tns:ID", "reference": "tns:ID", "string": "xsd:string", "textarea": "xsd:string",
    "phone": "xsd:string", "email": "xsd:string", "url": "xsd:string", "picklist": "xsd:string",
    "multipicklist": "xsd:string", "combobox": "xsd:string", "boolean": "xsd:boolean",
    "int": "xsd:int", "double": "xsd:double", "currency": "xsd:double", "percent": "xsd:double",
    "date": "xsd:date", "datetime": "xsd:dateTime",
}
_TEXT_TYPES = {"string", "textarea", "phone", "email", "url", "picklist", "multipicklist", "combobox"}


@dataclass(frozen=True, slots=True)
class PicklistValue:
    value: str
    active: bool = True
    default: bool = False


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field as describe reports it (and as validation enforces it)."""

    name: str
    type: str
    label: str = ""
    length: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    defaulted_on_create: bool = False
    restricted_picklist: bool = False
    picklist: tuple[PicklistValue, ...] = ()
    external_id: bool = False
    id_lookup: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    filterable: bool = True
    sortable: bool = True
    groupable: bool = True
    custom: bool = False
    auto_number: bool = False
    calculated: bool = False
    name_field: bool = False
    unique: bool = False
    precision: int = 0
    scale: int = 0
    digits: int = 0
    required: bool = False  # createable, not nillable, not defaulted: must be given on create

    @property
    def display_label(self) -> str:
        return self.label or _label_for(self.name)

    def describe(self) -> dict[str, Any]:
        default_value = next((p.value for p in self.picklist if p.default), None)
        length = self.length
        return {
            "aggregatable": self.type not in ("textarea", "boolean") and self.filterable,
            "aiPredictionField": False,
            "autoNumber": self.auto_number,
            "byteLength": length * 3 if self.type in _TEXT_TYPES or self.type in ("id", "reference") else 0,
            "calculated": self.calculated,
            "calculatedFormula": None,
            "cascadeDelete": False,
            "caseSensitive": False,
            "compoundFieldName": None,
            "controllerName": None,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": default_value if self.type != "boolean" else (False if self.defaulted_on_create else None),
            "defaultValueFormula": None,
            "defaultedOnCreate": self.defaulted_on_create,
            "dependentPicklist": False,
            "deprecatedAndHidden": False,
            "digits": self.digits,
            "displayLocationInDecimal": False,
            "encrypted": False,
            "externalId": self.external_id,
            "extraTypeInfo": None,
            "filterable": self.filterable,
            "filteredLookupInfo": None,
            "formulaTreatNullNumberAsZero": False,
            "groupable": self.groupable,
            "highScaleNumber": False,
            "htmlFormatted": False,
            "idLookup": self.id_lookup,
            "inlineHelpText": None,
            "label": self.display_label,
            "length": length,
            "mask": None,
            "maskType": None,
            "name": self.name,
            "nameField": self.name_field,
            "namePointing": len(self.reference_to) > 1,
            "nillable": self.nillable,
            "permissionable": self.custom or (self.nillable and self.createable and not self.name_field),
            "picklistValues": [
                {"active": p.active, "defaultValue": p.default, "label": p.value, "validFor": None, "value": p.value}
                for p in self.picklist
            ],
            "polymorphicForeignKey": len(self.reference_to) > 1,
            "precision": self.precision,
            "queryByDistance": False,
            "referenceTargetField": None,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "relationshipOrder": None,
            "restrictedDelete": False,
            "restrictedPicklist": self.restricted_picklist,
            "scale": self.scale,
            "searchPrefilterable": False,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "sortable": self.sortable,
            "type": self.type,
            "unique": self.unique,
            "updateable": self.updateable,
            "writeRequiresMasterRead": False,
        }


def _label_for(api_name: str) -> str:
    base = api_name
    if base.endswith("__c"):
        base = base[:-3]
        if "__" in base:
            base = base.split("__", 1)[1]
        return base.replace("_", " ")
    if base.endswith("Id") and len(base) > 2:
        base = base[:-2] + " ID"
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base)


def _pl(*values: str, default: str | None = None) -> tuple[PicklistValue, ...]:
    return tuple(PicklistValue(v, True, v == default) for v in values)


def _f(name: str, type_: str, **kw: Any) -> FieldDef:
    """A field with sensible describe defaults for its type."""
    if type_ in ("string", "phone", "email", "url", "combobox", "picklist") and "length" not in kw:
        kw["length"] = {"phone": 40, "email": 80, "picklist": 255}.get(type_, 255)
    if type_ == "textarea" and kw.get("length", 255) > 255:
        # Long text areas can be neither filtered nor sorted (Task Description: §1 "Create, Nillable, Update").
        kw.setdefault("filterable", False)
        kw.setdefault("sortable", False)
        kw.setdefault("groupable", False)
    if type_ in ("double", "currency", "percent"):
        kw.setdefault("precision", 18)
        kw.setdefault("scale", 2)
        kw.setdefault("groupable", False)
    if type_ == "boolean":
        kw.setdefault("nillable", False)
        kw.setdefault("defaulted_on_create", True)
    if type_ in ("reference",) and "relationship_name" not in kw:
        if name.endswith("__c"):
            kw["relationship_name"] = name[:-3] + "__r"
        elif name.endswith("Id"):
            kw["relationship_name"] = name[:-2]
    f = FieldDef(name, type_, **kw)
    required = f.createable and not f.nillable and not f.defaulted_on_create and f.type != "boolean"
    return replace(f, required=required)


def _ro(name: str, type_: str, **kw: Any) -> FieldDef:
    kw.setdefault("createable", False)
    kw.setdefault("updateable", False)
    return _f(name, type_, **kw)


@dataclass(slots=True)
class ObjectDef:
    name: str
    label: str
    key_prefix: str
    fields: dict[str, FieldDef]
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    queryable: bool = True
    searchable: bool = True
    custom: bool = False
    label_plural: str = ""
    name_format: str | None = None  # autonumber format for the Name field
    record_types: tuple[tuple[str, str, bool], ...] = ()  # (id, name, is default)
    create_refusal: SaveError | None = None  # why create is refused (permission / version)
    _lower: dict[str, FieldDef] = field(default_factory=dict)
    _rel: dict[str, FieldDef] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lower = {k.lower(): v for k, v in self.fields.items()}
        self._rel = {f.relationship_name.lower(): f for f in self.fields.values() if f.relationship_name}

    def field(self, name: str) -> FieldDef | None:
        return self._lower.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        return self._rel.get(name.lower())

    def urls(self, prefix: str) -> dict[str, str]:
        base = f"{prefix}/sobjects/{self.name}"
        return {
            "compactLayouts": f"{base}/describe/compactLayouts",
            "rowTemplate": f"{base}/{{ID}}",
            "approvalLayouts": f"{base}/describe/approvalLayouts",
            "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
            "listviews": f"{base}/listviews",
            "describe": f"{base}/describe",
            "quickActions": f"{base}/quickActions",
            "layouts": f"{base}/describe/layouts",
            "sobject": base,
        }

    def summary(self, prefix: str, *, createable: bool) -> dict[str, Any]:
        return {
            "activateable": False,
            "associateEntityType": None,
            "associateParentEntity": None,
            "createable": createable,
            "custom": self.custom,
            "customSetting": False,
            "deepCloneable": False,
            "deletable": self.deletable,
            "deprecatedAndHidden": False,
            "feedEnabled": False,
            "hasSubtypes": self.name == "Account" and bool(self.record_types),
            "isInterface": False,
            "isSubtype": False,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label_plural or self.label + "s",
            "layoutable": True,
            "mergeable": self.name in ("Account", "Contact", "Lead", "Case"),
            "mruEnabled": True,
            "name": self.name,
            "queryable": self.queryable,
            "replicateable": True,
            "retrieveable": True,
            "searchable": self.searchable,
            "triggerable": True,
            "undeletable": self.deletable,
            "updateable": self.updateable,
            "urls": self.urls(prefix),
        }


@dataclass(slots=True)
class OrgOptions:
    """What kind of org the emulator is (each option is a case the tool must handle).

    - ``person_accounts``: Account gains ``IsPersonAccount``, ``PersonContactId``,
      ``FirstName``/``LastName`` and the ``Person*`` phone fields, Contact gains
      ``IsPersonAccount`` and RecordType rows exist (§5 "Person Accounts");
    - ``task_type_visible``: ``False`` hides Task.Type (field-level security):
      absent from describe, ``INVALID_FIELD`` when written or queried (§3,
      R-SF-TASK-6);
    - ``missing_fields``: ``"Object.Field"`` names the org lacks (e.g.
      ``"Task.aircall__Country__c"``) — the R-SF-FIELDS "missing field" case;
    - ``field_types``: ``"Object.Field" -> type`` overrides for custom fields;
    - ``extra_required_task_field``: a custom Task text field that must be set on
      create (``REQUIRED_FIELD_MISSING`` otherwise): a validation failure the
      tool cannot avoid;
    - ``voicecall_createable``: ``False`` = the API user lacks the Contact Center /
      Dialer permission set (§2 "Access"); ``voicecall_create_min_version``:
      below it VoiceCall is read-only (§2: v57/v59 docs list no create);
    - ``voicecall_call_types``: ``"scv"`` or ``"dialer"`` picklist values (§2);
    - ``voice_object``: API name of the Aircall Voice custom object (R-SFV-1),
      ``None`` = the package is not installed; ``voice_call_link_field``: the
      VoiceCall lookup to it;
    - ``voice_call_id_external``: flag ``aircall__Call_Id__c`` as external id;
    - ``voice_ai_fields``: ``False`` leaves the five AI insight fields of R-AI-4
      out of the Aircall Voice object;
    - ``activity_record_types``: Task gets ``RecordTypeId`` (§1: only when
      Activity record types exist);
    - ``task_statuses``: (value, is_closed, is_default) of the org's TaskStatus;
    - ``daily_api_limit``: the ``Max`` of ``DailyApiRequests`` (§4);
    - ``query_batch_size``: rows per query page (§9: 2,000).
    """

    person_accounts: bool = True
    task_type_visible: bool = True
    missing_fields: frozenset[str] = frozenset()
    field_types: Mapping[str, str] = field(default_factory=dict)
    extra_required_task_field: str | None = None
    voicecall_createable: bool = True
    voicecall_create_min_version: float = 63.0
    voicecall_call_types: str = "scv"
    voice_object: str | None = "aircall__Aircall_Voice__c"
    voice_call_link_field: str = "aircall__Aircall_Voice__c"
    voice_call_id_external: bool = False
    voice_ai_fields: bool = True
    activity_record_types: bool = False
    task_statuses: tuple[tuple[str, bool, bool], ...] = (
        ("Not Started", False, True),
        ("In Progress", False, False),
        ("Completed", True, False),
        ("Waiting on someone else", False, False),
        ("Deferred", False, False),
    )
    daily_api_limit: int = 15_000
    query_batch_size: int = QUERY_BATCH


# Aircall Task fields: aircall_sf_fields.json "task_custom_fields" (types per its notes).
_AIRCALL_TASK_FIELDS: tuple[tuple[str, str], ...] = (
    ("aircall__Answered_by__c", "string"),
    ("aircall__Call_Recording__c", "url"),
    ("aircall__Connection_status__c", "string"),
    ("aircall__Country__c", "string"),
    ("aircall__Detailed_type__c", "string"),
    ("aircall__Has_connected__c", "boolean"),
    ("aircall__Hour_of_the_day__c", "string"),
    ("aircall__Is_Missed_call__c", "boolean"),
    ("aircall__Is_Voicemail__c", "boolean"),
    ("aircall__Missed_Call_Ratio__c", "double"),
    ("aircall__Phone_number__c", "string"),
    # The json guesses "number (offset?)", RULES R-SF-FIELDS writes an IANA zone name: text
    # here so the documented rule can land; OrgOptions.field_types flips it to double.
    ("aircall__Timezone__c", "string"),
    ("aircall__Transferred_to__c", "string"),
    ("aircall__Waiting_Time__c", "double"),
    ("aircall__Number_Name__c", "string"),
    ("aircall__SMS_Direction__c", "string"),
)


def _custom(name: str, type_: str, **kw: Any) -> FieldDef:
    kw.setdefault("custom", True)
    if type_ == "textarea":
        kw.setdefault("length", 32768)
    return _f(name, type_, **kw)


def _system_fields(owner: bool = True) -> list[FieldDef]:
    out = [
        _ro("Id", "id", length=18, nillable=False, defaulted_on_create=True, id_lookup=True, label="Record ID"),
        _ro("IsDeleted", "boolean", label="Deleted"),
        _ro("CreatedDate", "datetime", nillable=False, defaulted_on_create=True),
        _ro("CreatedById", "reference", length=18, nillable=False, defaulted_on_create=True,
            reference_to=("User",), relationship_name="CreatedBy"),
        _ro("LastModifiedDate", "datetime", nillable=False, defaulted_on_create=True),
        _ro("LastModifiedById", "reference", length=18, nillable=False, defaulted_on_create=True,
            reference_to=("User",), relationship_name="LastModifiedBy"),
        _ro("SystemModstamp", "datetime", nillable=False, defaulted_on_create=True),
    ]
    if owner:
        out.append(_f("OwnerId", "reference", length=18, nillable=False, defaulted_on_create=True,
                      reference_to=("Group", "User"), relationship_name="Owner", label="Owner ID"))
    return out


_WHAT_TARGETS = ("Account", "Asset", "Campaign", "Case", "Contract", "Opportunity")
_NAME_FIELD = {"Task": "Subject"}


def build_schema(options: OrgOptions) -> dict[str, ObjectDef]:
    """Every object of the emulated org, shaped by ``options``."""
    pa = options.person_accounts
    objs: list[ObjectDef] = []

    def obj(name: str, fields: list[FieldDef], **kw: Any) -> None:
        kept: dict[str, FieldDef] = {}
        for f in fields:
            key = f"{name}.{f.name}"
            if key in options.missing_fields:
                continue
            if f.custom and key in options.field_types:
                f = _custom(f.name, options.field_types[key], label=f.label)
            kept[f.name] = f
        objs.append(ObjectDef(name, kw.pop("label", name), kw.pop("key_prefix", KEY_PREFIXES.get(name, CUSTOM_PREFIX)),
                              kept, **kw))

    what_targets = _WHAT_TARGETS + ((options.voice_object,) if options.voice_object else ())

    # --- Task (§1, task_call_fields.json, aircall_sf_fields.json) ---
    statuses = tuple(PicklistValue(v, True, d) for v, _c, d in options.task_statuses)
    task = [
        *_system_fields(owner=False),
        _f("Subject", "combobox", length=255, name_field=True,
           picklist=_pl("Call", "Send Letter", "Send Quote", "Other")),
    ]
    if options.task_type_visible:
        task.append(_f("Type", "picklist", length=40, picklist=_pl("Call", "Email", "Meeting", "Other")))
    task += [
        _f("TaskSubtype", "picklist", length=40, updateable=False, restricted_picklist=True,
           picklist=_pl("Task", "Email", "List Email", "Cadence", "Call", "LinkedIn")),
        _f("Status", "picklist", length=40, nillable=False, defaulted_on_create=True, picklist=statuses),
        _f("Priority", "picklist", length=40, nillable=False, defaulted_on_create=True,
           picklist=_pl("High", "Normal", "Low", default="Normal")),
        _f("ActivityDate", "date", label="Due Date Only"),
        _f("WhoId", "reference", length=18, reference_to=("Contact", "Lead"), relationship_name="Who",
           label="Name ID"),
        _f("WhatId", "reference", length=18, reference_to=what_targets, relationship_name="What",
           label="Related To ID"),
        _f("OwnerId", "reference", length=18, nillable=False, defaulted_on_create=True,
           reference_to=("Group", "User"), relationship_name="Owner", label="Assigned To ID"),
        _f("Description", "textarea", length=32000, label="Comments"),
        _f("CallType", "picklist", length=40, restricted_picklist=True, picklist=_pl("Inbound", "Internal", "Outbound")),
        _f("CallDisposition", "string", length=255, label="Call Result"),
        _f("CallDurationInSeconds", "int", digits=8, label="Call Duration"),
        _f("CallObject", "string", length=255, label="Call Object Identifier"),
        _ro("CompletedDateTime", "datetime"),
        _ro("IsClosed", "boolean", label="Closed"),
        _ro("AccountId", "reference", length=18, reference_to=("Account",), relationship_name="Account"),
    ]
    if options.activity_record_types:
        task.append(_f("RecordTypeId", "reference", length=18, reference_to=("RecordType",)))
    task += [_custom(n, t) for n, t in _AIRCALL_TASK_FIELDS]
    if options.extra_required_task_field:
        task.append(_custom(options.extra_required_task_field, "string", nillable=False))
    obj("Task", task, label_plural="Tasks")

    # --- Contact (§6) ---
    contact = [
        *_system_fields(),
        _f("Salutation", "picklist", length=40, picklist=_pl("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")),
        _f("FirstName", "string", length=40),
        _f("LastName", "string", length=80, nillable=False),
        _ro("Name", "string", length=121, name_field=True, label="Full Name"),
        _f("AccountId", "reference", length=18, reference_to=("Account",)),
        _f("Email", "email"),
        _f("Title", "string", length=128),
        _f("Department", "string", length=80),
        _f("Phone", "phone", label="Business Phone"),
        _f("MobilePhone", "phone", label="Mobile Phone"),
        _f("HomePhone", "phone", label="Home Phone"),
        _f("OtherPhone", "phone", label="Other Phone"),
        _f("AssistantName", "string", length=40, label="Assistant's Name"),
        _f("AssistantPhone", "phone", label="Asst. Phone"),
        _f("MailingCity", "string", length=40),
        _f("LeadSource", "picklist", length=40, picklist=_pl("Web", "Phone Inquiry", "Partner Referral", "Other")),
        _f("Description", "textarea", length=32000, label="Contact Description"),
    ]
    if pa:
        contact.append(_ro("IsPersonAccount", "boolean", label="Is Person Account"))
    obj("Contact", contact)

    # --- Lead (§6) ---
    lead = [
        *_system_fields(),
        _f("Salutation", "picklist", length=40, picklist=_pl("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")),
        _f("FirstName", "string", length=40),
        _f("LastName", "string", length=80, nillable=False),
        _ro("Name", "string", length=121, name_field=True, label="Full Name"),
        _f("Company", "string", length=255, nillable=False),
        _f("Title", "string", length=128),
        _f("Email", "email"),
        _f("Phone", "phone"),
        _f("MobilePhone", "phone", label="Mobile Phone"),
        _f("Status", "picklist", length=40, nillable=False, defaulted_on_create=True,
           picklist=_pl("Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                        "Closed - Not Converted", default="Open - Not Contacted")),
        _f("LeadSource", "picklist", length=40, picklist=_pl("Web", "Phone Inquiry", "Partner Referral", "Other")),
        _f("IsConverted", "boolean", updateable=False, label="Converted"),
        _ro("ConvertedDate", "date"),
        _ro("ConvertedAccountId", "reference", length=18, reference_to=("Account",)),
        _ro("ConvertedContactId", "reference", length=18, reference_to=("Contact",)),
        _ro("ConvertedOpportunityId", "reference", length=18, reference_to=("Opportunity",)),
        _f("Description", "textarea", length=32000),
    ]
    obj("Lead", lead)

    # --- Account (§5 "Person Accounts") ---
    account = [
        *_system_fields(),
        _f("Name", "string", length=255, nillable=False, name_field=True, label="Account Name"),
        _f("Type", "picklist", length=255, picklist=_pl("Prospect", "Customer - Direct", "Partner", "Other")),
        _f("ParentId", "reference", length=18, reference_to=("Account",), relationship_name="Parent"),
        _f("Phone", "phone", label="Account Phone"),
        _f("Fax", "phone", label="Account Fax"),
        _f("Website", "url"),
        _f("Industry", "picklist", length=255, picklist=_pl("Technology", "Retail", "Finance", "Healthcare", "Other")),
        _f("AccountNumber", "string", length=40),
        _f("BillingCity", "string", length=40),
        _f("Description", "textarea", length=32000, label="Account Description"),
    ]
    if pa:
        # Name is computed for person accounts; it stays createable for business accounts.
        account += [
            _f("RecordTypeId", "reference", length=18, reference_to=("RecordType",), defaulted_on_create=True),
            _f("Salutation", "picklist", length=40, picklist=_pl("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")),
            _f("FirstName", "string", length=40),
            _f("LastName", "string", length=80),
            _ro("IsPersonAccount", "boolean", label="Is Person Account"),
            _ro("PersonContactId", "reference", length=18, reference_to=("Contact",)),
            _f("PersonEmail", "email", label="Email"),
            _f("PersonMobilePhone", "phone", label="Mobile"),
            _f("PersonHomePhone", "phone", label="Home Phone"),
            _f("PersonOtherPhone", "phone", label="Other Phone"),
            _f("PersonAssistantPhone", "phone", label="Asst. Phone"),
        ]
    obj("Account", account)

    # --- Case (§6) ---
    case = [
        *_system_fields(),
        _ro("CaseNumber", "string", length=30, name_field=True, auto_number=True, id_lookup=True,
            defaulted_on_create=True),
        _f("ContactId", "reference", length=18, reference_to=("Contact",)),
        _f("AccountId", "reference", length=18, reference_to=("Account",)),
        _f("Subject", "string", length=255),
        _f("Description", "textarea", length=32000),
        _f("Origin", "picklist", length=40, picklist=_pl("Phone", "Email", "Web"), label="Case Origin"),
        _f("Status", "picklist", length=40, defaulted_on_create=True,
           picklist=_pl("New", "Working", "Escalated", "Closed", default="New")),
        _f("Priority", "picklist", length=40, defaulted_on_create=True,
           picklist=_pl("High", "Medium", "Low", default="Medium")),
        _f("Type", "picklist", length=40, picklist=_pl("Question", "Problem", "Feature Request")),
        _f("Reason", "picklist", length=40, picklist=_pl("Installation", "Performance", "Breakdown", "Other")),
        _ro("IsClosed", "boolean", label="Closed"),
        _ro("ClosedDate", "datetime"),
    ]
    obj("Case", case)

    # --- Opportunity and OpportunityContactRole (§6) ---
    opp = [
        *_system_fields(),
        _f("Name", "string", length=120, nillable=False, name_field=True),
        _f("AccountId", "reference", length=18, reference_to=("Account",)),
        _f("StageName", "picklist", length=255, nillable=False,
           picklist=_pl("Prospecting", "Qualification", "Needs Analysis", "Value Proposition",
                        "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost"), label="Stage"),
        _f("CloseDate", "date", nillable=False),
        _f("Amount", "currency"),
        _f("Description", "textarea", length=32000),
        _ro("IsClosed", "boolean", label="Closed"),
        _ro("IsWon", "boolean", label="Won"),
    ]
    obj("Opportunity", opp)
    ocr = [
        *_system_fields(owner=False),
        _f("OpportunityId", "reference", length=18, updateable=False, nillable=False, reference_to=("Opportunity",)),
        _f("ContactId", "reference", length=18, nillable=False, reference_to=("Contact",)),
        _f("Role", "picklist", length=40,
           picklist=_pl("Business User", "Decision Maker", "Economic Buyer", "Technical Buyer", "Other")),
        _f("IsPrimary", "boolean", label="Primary"),
    ]
    obj("OpportunityContactRole", ocr, label="Opportunity Contact Role")

    # --- User, RecordType, CallCenter, TaskStatus (read-only here) ---
    user = [
        *_system_fields(owner=False),
        _ro("Username", "string", length=80, unique=True, id_lookup=True),
        _ro("FirstName", "string", length=40),
        _ro("LastName", "string", length=80),
        _ro("Name", "string", length=121, name_field=True, label="Full Name"),
        _ro("Email", "email", length=128),
        _ro("Alias", "string", length=8),
        _ro("IsActive", "boolean", label="Active"),
        _ro("UserType", "picklist", length=40, picklist=_pl("Standard", "AutomatedProcess")),
        _ro("TimeZoneSidKey", "picklist", length=40, picklist=_pl("America/New_York", "Europe/Paris", "GMT")),
    ]
    obj("User", user, createable=False, deletable=False)
    rt = [
        *_system_fields(owner=False),
        _ro("Name", "string", length=80, name_field=True),
        _ro("DeveloperName", "string", length=80),
        _ro("SobjectType", "picklist", length=40, picklist=_pl("Account", "Task")),
        _ro("IsActive", "boolean"),
    ]
    if pa:
        rt.append(_ro("IsPersonType", "boolean"))
    obj("RecordType", rt, createable=False, updateable=False, deletable=False, label="Record Type")
    cc = [
        *_system_fields(owner=False),
        _ro("Name", "string", length=80, name_field=True),
        _ro("InternalName", "string", length=80),
    ]
    obj("CallCenter", cc, createable=False, updateable=False, deletable=False, label="Call Center")
    ts = [
        *_system_fields(owner=False),
        _ro("MasterLabel", "string", length=255, name_field=True),
        _ro("ApiName", "string", length=255),
        _ro("IsClosed", "boolean"),
        _ro("IsDefault", "boolean"),
        _ro("SortOrder", "int", digits=9),
    ]
    obj("TaskStatus", ts, createable=False, updateable=False, deletable=False, label="Task Status",
        label_plural="Task Status")

    # --- VoiceCall (§2, voicecall_fields.json) ---
    call_types = (_pl("Callback", "Consult", "Inbound", "InternalCall", "Outbound", "Transfer")
                  if options.voicecall_call_types == "scv"
                  else _pl("Bridge", "Coach", "Inbound", "Internal", "Outbound"))

    def vc(name: str, type_: str, **kw: Any) -> FieldDef:
        # §2: most VoiceCall fields are Create-only.
        kw.setdefault("updateable", False)
        return _f(name, type_, **kw)

    voice = [
        *_system_fields(owner=False),
        _ro("Name", "string", length=80, name_field=True, auto_number=True, id_lookup=True, defaulted_on_create=True),
        vc("CallType", "picklist", length=40, nillable=False, restricted_picklist=True, picklist=call_types),
        vc("VendorType", "picklist", length=40, restricted_picklist=True, picklist=_pl("ContactCenter", "Dialer")),
        vc("CallStartDateTime", "datetime", nillable=False),
        vc("CallEndDateTime", "datetime", nillable=False),
        vc("CallDurationInSeconds", "int", digits=9),
        vc("FromPhoneNumber", "phone", nillable=False),
        vc("ToPhoneNumber", "phone", nillable=False),
        vc("CallCenterId", "reference", length=18, reference_to=("CallCenter",)),
        vc("VendorCallKey", "string", length=255, id_lookup=True),
        vc("VendorParentCallKey", "string", length=255),
        _f("RelatedRecordId", "reference", length=18,
           reference_to=("Account", "Case", "CollectionPlan", "Contact", "ContactRequest", "Lead", "Opportunity")),
        _f("ActivityId", "reference", length=18, reference_to=("Task",)),
        vc("CallDisposition", "string", length=255),
        vc("CallRecordingId", "reference", length=18, reference_to=("VoiceCallRecording",)),
        _f("CallResolution", "picklist", length=40, defaulted_on_create=True,
           picklist=_pl("Resolved", "Unresolved", default="Resolved")),
        vc("CallAcceptDateTime", "datetime"),
        vc("CallQueuedDateTime", "datetime"),
        vc("CallOrigin", "picklist", length=40, picklist=_pl("Preview", "Progressive", "Voicemail")),
        vc("CallSubtype", "picklist", length=40, picklist=_pl("PSTN", "WebRTC")),
        _f("Description", "textarea", length=32000),
        vc("DisconnectReason", "string", length=255),
        vc("UserId", "reference", length=18, reference_to=("User",)),
        _f("OwnerId", "reference", length=18, nillable=False, defaulted_on_create=True,
           reference_to=("Group", "User"), relationship_name="Owner"),
        vc("QueueName", "string", length=255),
        vc("CustomerHoldDuration", "int", digits=9),
        vc("LongestHoldDuration", "int", digits=9),
        vc("NumberOfHolds", "int", digits=9),
        vc("IsRecorded", "boolean"),
        vc("SourceType", "picklist", length=40, picklist=_pl("Sales", "Service")),
    ]
    if options.voice_object:
        voice.append(_custom(options.voice_call_link_field, "reference", length=18,
                             reference_to=(options.voice_object,), label="Aircall Voice"))
    obj("VoiceCall", voice, label="Voice Call", createable=True)

    # --- Aircall Voice custom object (R-SFV-3) ---
    if options.voice_object:
        avo = [
            *_system_fields(),
            _ro("Name", "string", length=80, name_field=True, auto_number=True, defaulted_on_create=True,
                label="Aircall Voice Number"),
            _custom("aircall__Call_Id__c", "string", length=255,
                    external_id=options.voice_call_id_external, id_lookup=options.voice_call_id_external,
                    unique=options.voice_call_id_external, label="Aircall Call ID"),
            _custom("aircall__Call_Type__c", "picklist", length=255, picklist=_pl("Inbound", "Outbound")),
            _custom("aircall__Detailed_Type__c", "picklist", length=255,
                    picklist=_pl("Inbound answered", "Missed call", "Voicemail", "Outbound answered",
                                 "Outbound unanswered")),
            _custom("aircall__Started_At__c", "datetime", label="Call Start Date/Time"),
            _custom("aircall__Answered_At__c", "datetime", label="Call Answered Date/Time"),
            _custom("aircall__Ended_At__c", "datetime", label="Call End Date/Time"),
            _custom("aircall__Duration__c", "double", precision=18, scale=0),
            _custom("aircall__Aircall_Number__c", "string", length=40),
            _custom("aircall__Contact__c", "reference", length=18, reference_to=("Contact",)),
            _custom("aircall__Lead__c", "reference", length=18, reference_to=("Lead",)),
            _custom("aircall__Account__c", "reference", length=18, reference_to=("Account",)),
            _custom("aircall__Recording__c", "url"),
            _custom("aircall__Tags__c", "textarea"),
            _custom("aircall__Comments__c", "textarea"),
            _custom("aircall__Assigned_To__c", "string", length=255),
            _custom("aircall__Answered_By__c", "string", length=255),
        ]
        if options.voice_ai_fields:
            # RULES.md R-AI-4: our names for the AI insights, not confirmed against Aircall's package.
            avo += [
                _custom("aircall__AI_Summary__c", "textarea", length=32768, label="AI Summary"),
                _custom("aircall__AI_Topics__c", "textarea", length=1000, label="AI Topics"),
                _custom("aircall__AI_Sentiment__c", "textarea", length=255, label="AI Sentiment"),
                _custom("aircall__AI_Action_Items__c", "textarea", length=32768, label="AI Action Items"),
                _custom("aircall__AI_Transcription__c", "textarea", length=131072, label="AI Transcription"),
            ]
        obj(options.voice_object, avo, label="Aircall Voice", custom=True, key_prefix=CUSTOM_PREFIX,
            name_format="AV-{:08d}")

    return {o.name: o for o in objs}


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------

INTEGRATION_USERNAME = "integration@aircall-sync.sandbox"
INTEGRATION_EMAIL = "integration@aircall-sync.sandbox.invalid"

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_AUTONUMBER = {("Case", "CaseNumber"): "{:08d}", ("VoiceCall", "Name"): "VC-{:08d}"}
_PERSON_SYNC = {  # Account field -> person Contact field (§5 "A person account is an Account plus a hidden person contact")
    "FirstName": "FirstName", "LastName": "LastName", "Salutation": "Salutation", "Phone": "Phone",
    "PersonMobilePhone": "MobilePhone", "PersonHomePhone": "HomePhone", "PersonOtherPhone": "OtherPhone",
    "PersonAssistantPhone": "AssistantPhone", "PersonEmail": "Email", "OwnerId": "OwnerId",
}
_PERSON_ONLY = ("FirstName", "LastName", "Salutation", "PersonEmail", "PersonMobilePhone", "PersonHomePhone",
                "PersonOtherPhone", "PersonAssistantPhone")
_SOSL_PHONE_FIELDS = {
    "Contact": ("Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone"),
    "Lead": ("Phone", "MobilePhone"),
    "Account": ("Phone", "PersonMobilePhone", "PersonHomePhone", "PersonOtherPhone", "PersonAssistantPhone"),
}


class _Source:
    """The store seen through :class:`soql.DataSource` (called with the store lock held)."""

    def __init__(self, store: SalesforceStore) -> None:
        self.store = store

    def resolve_object(self, name: str) -> str | None:
        return self.store._object_name(name)

    def field(self, obj: str, name: str) -> FieldDef | None:
        odef = self.store.schema.get(obj)
        return odef.field(name) if odef else None

    def relationship(self, obj: str, name: str) -> FieldDef | None:
        odef = self.store.schema.get(obj)
        return odef.relationship(name) if odef else None

    def scan(self, obj: str) -> Iterable[Mapping[str, Any]]:
        return list(self.store._data.get(obj, {}).values())

    def lookup(self, obj: str, field: str, values: Sequence[str]) -> Iterable[Mapping[str, Any]] | None:
        return self.store._lookup(obj, field, values)

    def get(self, record_id: str) -> tuple[str, Mapping[str, Any]] | None:
        return self.store._by_id.get(record_id.lower()) if isinstance(record_id, str) else None

    def phone_fields(self, obj: str) -> Sequence[str]:
        return self.store._phone_fields(obj)

    def text_fields(self, obj: str, scope: str) -> Sequence[str]:
        odef = self.store.schema.get(obj)
        if odef is None:
            return ()
        if scope == "EMAIL":
            return [f.name for f in odef.fields.values() if f.type == "email"]
        if scope == "NAME":
            return [f.name for f in odef.fields.values()
                    if f.name_field or f.name in ("FirstName", "LastName", "Company")]
        return [f.name for f in odef.fields.values() if f.type in ("string", "email", "picklist", "combobox")]

    def phone_lookup(self, obj: str, digit_string: str) -> Iterable[Mapping[str, Any]] | None:
        return self.store._phone_lookup(obj, digit_string)


class SalesforceStore:
    """The emulated org's data: thread-safe, in memory, readable by tests.

    Records are plain dicts keyed by field API name (only non-null values are
    kept; reads fill the rest with ``None``). Dates are ``YYYY-MM-DD``,
    date-times ``2024-01-31T09:05:00.000+0000``, as the REST API returns them.

    Test API: :meth:`records`, :meth:`get`, :meth:`find`, :meth:`find_one`,
    :meth:`type_of`, :meth:`count` / :attr:`counts` (requests per kind:
    ``auth``, ``describe``, ``query``, ``search``, ``record``, ``collections``,
    ``composite``, ``bulk``, ``limits``, plus ``composite.<kind>`` per
    subrequest), :meth:`insert` and :meth:`modify` (write without API
    validation, e.g. close a Case or rename a Contact), :meth:`remove`.
    """

    def __init__(
        self,
        options: OrgOptions | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        integration_username: str = INTEGRATION_USERNAME,
        integration_email: str = INTEGRATION_EMAIL,
    ) -> None:
        self.options = options or OrgOptions()
        self.schema = build_schema(self.options)
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._data: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self._by_id: dict[str, tuple[str, dict[str, Any]]] = {}
        self._deleted: set[str] = set()
        self._indexes: dict[tuple[str, str], dict[str, set[str]]] = {}
        self._phone_index: dict[str, dict[str, set[str]]] = {}
        self._seq: Counter[str] = Counter()
        self._autonumber: Counter[tuple[str, str]] = Counter()
        self._journal: list[tuple[str, str, dict[str, Any] | None]] | None = None
        self._counts: Counter[str] = Counter()
        self._lower_names = {n.lower(): n for n in self.schema}
        self.source = _Source(self)
        self.integration_user_id = ""  # the first user creates itself
        self.integration_user_id = self.add_user(
            "Aircall Integration", integration_email, username=integration_username,
            created=self.clock() - timedelta(days=720),
        )
        self.record_types: dict[str, str] = {}
        if self.options.person_accounts:
            self.record_types["Business Account"] = self.insert(
                "RecordType", Name="Business Account", DeveloperName="Business_Account", SobjectType="Account",
                IsActive=True, IsPersonType=False)
            self.record_types["Person Account"] = self.insert(
                "RecordType", Name="Person Account", DeveloperName="PersonAccount", SobjectType="Account",
                IsActive=True, IsPersonType=True)
        if self.options.activity_record_types:
            extra = {"IsPersonType": False} if self.options.person_accounts else {}
            self.record_types["Call"] = self.insert(
                "RecordType", Name="Call", DeveloperName="Call", SobjectType="Task", IsActive=True, **extra)
        self.call_center_id = self.insert("CallCenter", Name="Aircall", InternalName="AircallCTI")
        for i, (value, closed, default) in enumerate(self.options.task_statuses):
            self.insert("TaskStatus", MasterLabel=value, ApiName=value, IsClosed=closed, IsDefault=default,
                        SortOrder=i + 1)

    # -- helpers --------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    def _object_name(self, name: str) -> str | None:
        return self._lower_names.get(name.lower()) if isinstance(name, str) else None

    def _new_id(self, obj: str) -> str:
        prefix = self.schema[obj].key_prefix
        self._seq[prefix] += 1
        n = self._seq[prefix]
        body = ""
        for _ in range(9):
            n, r = divmod(n, 62)
            body = _BASE62[r] + body
        return soql.id15_to_18(prefix + "8d0" + body)

    def object_for_id(self, record_id: str) -> str | None:
        """The object an id belongs to, from its key prefix (whether or not it exists)."""
        if not soql.is_salesforce_id(record_id):
            return None
        prefix = record_id[:3]
        for obj, p in KEY_PREFIXES.items():
            if p == prefix and obj not in ("Organization",):
                return obj
        if prefix == CUSTOM_PREFIX and self.options.voice_object:
            return self.options.voice_object
        return None

    def _phone_fields(self, obj: str) -> tuple[str, ...]:
        odef = self.schema.get(obj)
        if odef is None:
            return ()
        names = _SOSL_PHONE_FIELDS.get(obj)
        if names is None:
            return tuple(f.name for f in odef.fields.values() if f.type == "phone")
        return tuple(n for n in names if n in odef.fields)

    # -- indexes ----------------------------------------------------------------

    def _lookup(self, obj: str, field_name: str, values: Sequence[str]) -> list[dict[str, Any]] | None:
        if obj not in self._data:
            return None
        key = (obj, field_name)
        idx = self._indexes.get(key)
        if idx is None:
            idx = {}
            for rid, rec in self._data[obj].items():
                v = rec.get(field_name)
                if v is not None:
                    idx.setdefault(str(v).lower(), set()).add(rid)
            self._indexes[key] = idx
        ids: set[str] = set()
        for v in values:
            ids |= idx.get(v.lower(), set())
        data = self._data[obj]
        # Ids are sequential per object, so sorting them keeps creation order, as a scan would.
        return [data[i] for i in sorted(ids) if i in data]

    def _phone_lookup(self, obj: str, digit_string: str) -> list[dict[str, Any]] | None:
        if obj not in self._data:
            return None
        idx = self._phone_index.get(obj)
        if idx is None:
            idx = {}
            for rid, rec in self._data[obj].items():
                for d in self._phone_digits(obj, rec):
                    idx.setdefault(d, set()).add(rid)
            self._phone_index[obj] = idx
        data = self._data[obj]
        return [data[i] for i in sorted(idx.get(digit_string, ())) if i in data]

    def _phone_digits(self, obj: str, rec: Mapping[str, Any]) -> set[str]:
        return {soql.digits(rec[f]) for f in self._phone_fields(obj) if rec.get(f)}

    def _index_remove(self, obj: str, rec: Mapping[str, Any]) -> None:
        rid = rec["Id"]
        for (o, f), idx in self._indexes.items():
            if o == obj and rec.get(f) is not None:
                s = idx.get(str(rec[f]).lower())
                if s is not None:
                    s.discard(rid)
        pidx = self._phone_index.get(obj)
        if pidx is not None:
            for d in self._phone_digits(obj, rec):
                s = pidx.get(d)
                if s is not None:
                    s.discard(rid)

    def _index_add(self, obj: str, rec: Mapping[str, Any]) -> None:
        rid = rec["Id"]
        for (o, f), idx in self._indexes.items():
            if o == obj and rec.get(f) is not None:
                idx.setdefault(str(rec[f]).lower(), set()).add(rid)
        pidx = self._phone_index.get(obj)
        if pidx is not None:
            for d in self._phone_digits(obj, rec):
                pidx.setdefault(d, set()).add(rid)

    def _put(self, obj: str, rec: dict[str, Any]) -> None:
        rid = rec["Id"]
        old = self._data[obj].get(rid)
        if self._journal is not None:
            self._journal.append((obj, rid, copy.copy(old) if old is not None else None))
        if old is not None:
            self._index_remove(obj, old)
        self._data[obj][rid] = rec
        self._by_id[rid.lower()] = (obj, rec)
        self._deleted.discard(rid.lower())
        self._index_add(obj, rec)

    def _drop(self, obj: str, rid: str, *, journal: bool = True) -> None:
        old = self._data[obj].pop(rid, None)
        if old is None:
            return
        if journal and self._journal is not None:
            self._journal.append((obj, rid, copy.copy(old)))
        self._index_remove(obj, old)
        self._by_id.pop(rid.lower(), None)
        self._deleted.add(rid.lower())

    @contextmanager
    def transaction(self) -> Iterator[Callable[[], None]]:
        """Hold the lock and journal every write; call the yielded function to roll back."""
        with self._lock:
            outer = self._journal
            self._journal = []
            journal = self._journal

            def rollback() -> None:
                self._journal = None
                for obj, rid, previous in reversed(journal):
                    current = self._data[obj].get(rid)
                    if current is not None:
                        self._drop(obj, rid, journal=False)
                    if previous is not None:
                        self._put(obj, previous)
                    else:
                        self._deleted.discard(rid.lower())
                journal.clear()
                self._journal = journal

            try:
                yield rollback
            finally:
                if outer is not None:
                    outer.extend(journal)
                self._journal = outer

    # -- counters ---------------------------------------------------------------

    def _count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind] += n

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def count(self, kind: str) -> int:
        """Requests of one kind so far (``query``, ``search``, ``collections``…)."""
        with self._lock:
            return self._counts[kind]

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    # -- reading (tests) --------------------------------------------------------

    def _full(self, obj: str, rec: Mapping[str, Any]) -> dict[str, Any]:
        out = dict.fromkeys(self.schema[obj].fields)
        out.update(rec)
        return out

    def records(self, obj: str) -> list[dict[str, Any]]:
        """Copies of every record of ``obj``, oldest first."""
        name = self._object_name(obj)
        if name is None:
            raise KeyError(obj)
        with self._lock:
            return [self._full(name, r) for r in self._data[name].values()]

    def get(self, record_id: str) -> dict[str, Any] | None:
        """A copy of one record (15- or 18-character id), or None."""
        if not soql.is_salesforce_id(record_id):
            return None
        with self._lock:
            hit = self._by_id.get(soql.normalize_id(record_id).lower())
            return self._full(hit[0], hit[1]) if hit else None

    def type_of(self, record_id: str) -> str | None:
        with self._lock:
            hit = self._by_id.get(soql.normalize_id(record_id).lower()) if soql.is_salesforce_id(record_id) else None
            return hit[0] if hit else None

    def find(self, obj: str, **criteria: Any) -> list[dict[str, Any]]:
        """Records of ``obj`` whose fields equal every criterion (``store.find("Task", CallObject="123")``)."""
        name = self._object_name(obj)
        if name is None:
            raise KeyError(obj)
        odef = self.schema[name]
        crit = {}
        for k, v in criteria.items():
            f = odef.field(k)
            if f is None:
                raise KeyError(f"{name}.{k}")
            crit[f.name] = v
        with self._lock:
            return [self._full(name, r) for r in self._data[name].values()
                    if all(r.get(k) == v for k, v in crit.items())]

    def find_one(self, obj: str, **criteria: Any) -> dict[str, Any]:
        hits = self.find(obj, **criteria)
        if len(hits) != 1:
            raise LookupError(f"{len(hits)} {obj} records match {criteria}")
        return hits[0]

    # -- writing without API validation (seed, tests) -----------------------------

    def add_user(
        self,
        name: str,
        email: str,
        *,
        username: str | None = None,
        active: bool = True,
        created: datetime | None = None,
        time_zone: str = "GMT",
    ) -> str:
        first, _, last = name.rpartition(" ")
        alias = (first[:1] + last[:4]).lower() or "user"
        return self.insert(
            "User", Username=username or email.lower() + ".sandbox", FirstName=first or None, LastName=last,
            Email=email, Alias=alias[:8], IsActive=active, UserType="Standard", TimeZoneSidKey=time_zone,
            _created=created,
        )

    def insert(self, obj: str, _created: datetime | None = None, _modified: datetime | None = None,
               **fields: Any) -> str:
        """Create a record as-is (defaults and derived fields filled, no validation).

        ``_created`` / ``_modified`` set CreatedDate / LastModifiedDate (default: now).
        """
        name = self._object_name(obj)
        if name is None:
            raise KeyError(obj)
        odef = self.schema[name]
        values: dict[str, Any] = {}
        for k, v in fields.items():
            f = odef.field(k)
            if f is None:
                raise KeyError(f"{name}.{k}")
            values[f.name] = _to_stored(f, v)
        with self._lock:
            values = self._apply_defaults(odef, values, self.integration_user_id or None, infer_person=True)
            return self._commit_create(name, values, self.integration_user_id or None,
                                       created=_created, modified=_modified)

    def modify(self, record_id: str, _modified: datetime | None = None, **fields: Any) -> dict[str, Any]:
        """Change fields of a record as an admin would (no API validation); returns the new record."""
        with self._lock:
            hit = self._by_id.get(soql.normalize_id(record_id).lower())
            if hit is None:
                raise KeyError(record_id)
            obj, rec = hit
            odef = self.schema[obj]
            values = {}
            for k, v in fields.items():
                f = odef.field(k)
                if f is None:
                    raise KeyError(f"{obj}.{k}")
                values[f.name] = _to_stored(f, v)
            self._commit_update(obj, rec["Id"], values, self.integration_user_id, modified=_modified)
            return self._full(obj, self._data[obj][rec["Id"]])

    def remove(self, record_id: str) -> None:
        with self._lock:
            hit = self._by_id.get(soql.normalize_id(record_id).lower())
            if hit is None:
                raise KeyError(record_id)
            self._delete(hit[0], hit[1]["Id"])

    # -- commit -----------------------------------------------------------------

    def _apply_defaults(self, odef: ObjectDef, values: dict[str, Any], user_id: str | None, *,
                        infer_person: bool = False) -> dict[str, Any]:
        out = dict(values)
        for f in odef.fields.values():
            if f.name in out or not f.defaulted_on_create or not f.createable:
                continue
            if f.name == "OwnerId" and user_id:
                out["OwnerId"] = user_id
            elif f.type == "boolean":
                out[f.name] = False
            elif f.picklist:
                d = next((p.value for p in f.picklist if p.default), None)
                if d is not None:
                    out[f.name] = d
        for f in odef.fields.values():
            if f.type == "boolean" and f.name not in out and not f.nillable:
                out[f.name] = False
        if odef.name == "Account" and self.options.person_accounts and "RecordTypeId" not in out:
            # The API defaults to the business record type (a person account needs its RecordTypeId,
            # §5); seed/test inserts may leave it to be inferred from LastName.
            person = infer_person and any(out.get(k) for k in ("LastName", "FirstName")) and "Name" not in out
            out["RecordTypeId"] = self.record_types["Person Account" if person else "Business Account"]
        return out

    def _now_str(self) -> str:
        return format_datetime(self.now())

    def _commit_create(self, obj: str, values: dict[str, Any], user_id: str | None, *,
                       created: datetime | None = None, modified: datetime | None = None) -> str:
        odef = self.schema[obj]
        rid = self._new_id(obj)
        created_s = format_datetime(created) if created else self._now_str()
        modified_s = format_datetime(modified) if modified else (created_s if created else self._now_str())
        rec: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        rec.update(Id=rid, IsDeleted=False, CreatedDate=created_s, LastModifiedDate=modified_s,
                   SystemModstamp=modified_s)
        creator = user_id or rid  # the very first user creates itself
        rec["CreatedById"] = creator
        rec["LastModifiedById"] = creator
        for f in odef.fields.values():
            if not f.auto_number:
                continue
            fmt = _AUTONUMBER.get((obj, f.name)) or (odef.name_format if f.name == "Name" else None)
            if fmt:
                self._autonumber[(obj, f.name)] += 1
                rec[f.name] = fmt.format(self._autonumber[(obj, f.name)] + (1000 if obj == "Case" else 0))
        self._derive(obj, rec, None)
        self._put(obj, rec)
        if obj == "Account" and rec.get("IsPersonAccount"):
            self._sync_person_contact(rec, user_id)
        return rid

    def _commit_update(self, obj: str, rid: str, values: dict[str, Any], user_id: str, *,
                       modified: datetime | None = None) -> None:
        old = self._data[obj][rid]
        rec = dict(old)
        for k, v in values.items():
            if v is None:
                rec.pop(k, None)
            else:
                rec[k] = v
        stamp = format_datetime(modified) if modified else self._now_str()
        rec["LastModifiedDate"] = stamp
        rec["SystemModstamp"] = stamp
        rec["LastModifiedById"] = user_id
        self._derive(obj, rec, old)
        self._put(obj, rec)
        if obj == "Account" and rec.get("IsPersonAccount"):
            self._sync_person_contact(rec, user_id)

    def _delete(self, obj: str, rid: str) -> None:
        rec = self._data[obj].get(rid)
        if rec is None:
            return
        self._drop(obj, rid)
        if obj == "Account" and rec.get("PersonContactId"):
            self._drop("Contact", rec["PersonContactId"])
        # Lookups to a deleted record are cleared, as Salesforce does for lookup (not master-detail) fields.
        low = rid.lower()
        for o, table in self._data.items():
            refs = [f.name for f in self.schema[o].fields.values() if f.type == "reference"]
            for other in list(table.values()):
                hit = [f for f in refs if isinstance(other.get(f), str) and other[f].lower() == low]
                if hit:
                    new = dict(other)
                    for f in hit:
                        new.pop(f, None)
                    self._derive(o, new, other)
                    self._put(o, new)

    def _sync_person_contact(self, account: dict[str, Any], user_id: str | None) -> None:
        values = {c: account.get(a) for a, c in _PERSON_SYNC.items()}
        values["AccountId"] = account["Id"]
        values["IsPersonAccount"] = True
        cid = account.get("PersonContactId")
        if cid and cid in self._data["Contact"]:
            current = self._data["Contact"][cid]
            if any(current.get(k) != v for k, v in values.items()):
                rec = {k: v for k, v in {**current, **values}.items() if v is not None}
                rec["LastModifiedDate"] = rec["SystemModstamp"] = account["LastModifiedDate"]
                self._derive("Contact", rec, current)
                self._put("Contact", rec)
            return
        cid = self._commit_create("Contact", {k: v for k, v in values.items() if v is not None}, user_id,
                                  created=soql.parse_datetime(account["CreatedDate"]),
                                  modified=soql.parse_datetime(account["LastModifiedDate"]))
        acc = dict(account)
        acc["PersonContactId"] = cid
        self._put("Account", acc)

    def _derive(self, obj: str, rec: dict[str, Any], old: Mapping[str, Any] | None) -> None:
        """System-maintained fields (Name, IsClosed, AccountId…)."""
        if obj in ("Contact", "Lead", "User") or (obj == "Account" and rec.get("IsPersonAccount")):
            full = " ".join(x for x in (rec.get("FirstName"), rec.get("LastName")) if x)
            if full:
                rec["Name"] = full
        if obj == "Account" and self.options.person_accounts:
            person_rt = self.record_types.get("Person Account")
            rec["IsPersonAccount"] = bool(person_rt and rec.get("RecordTypeId") == person_rt)
            if rec["IsPersonAccount"]:
                full = " ".join(x for x in (rec.get("FirstName"), rec.get("LastName")) if x)
                if full:
                    rec["Name"] = full
        if obj == "Task":
            closed = {v: c for v, c, _d in self.options.task_statuses}.get(rec.get("Status") or "", False)
            rec["IsClosed"] = closed
            if closed and not (old and old.get("IsClosed")):
                rec["CompletedDateTime"] = rec.get("LastModifiedDate") or self._now_str()
            elif not closed:
                rec.pop("CompletedDateTime", None)
            account = self._account_of(rec.get("WhatId")) or self._account_of(rec.get("WhoId"))
            if account:
                rec["AccountId"] = account
            else:
                rec.pop("AccountId", None)
        if obj == "Case":
            rec["IsClosed"] = rec.get("Status") == "Closed"
            if rec["IsClosed"] and not (old and old.get("IsClosed")):
                rec["ClosedDate"] = rec.get("LastModifiedDate") or self._now_str()
            elif not rec["IsClosed"]:
                rec.pop("ClosedDate", None)
            if not rec.get("AccountId") and rec.get("ContactId"):
                acc = self._account_of(rec["ContactId"])
                if acc:
                    rec["AccountId"] = acc
        if obj == "Opportunity":
            stage = rec.get("StageName") or ""
            rec["IsClosed"] = stage.startswith("Closed")
            rec["IsWon"] = stage == "Closed Won"

    def _account_of(self, ref: str | None) -> str | None:
        if not ref:
            return None
        hit = self._by_id.get(ref.lower())
        if hit is None:
            return None
        obj, rec = hit
        if obj == "Account":
            return rec["Id"]
        if obj in ("Contact", "Opportunity", "Case", "Contract"):
            return rec.get("AccountId")
        return None

    # -- validation (the API path) ---------------------------------------------------

    def prepare(
        self,
        obj: str,
        payload: Mapping[str, Any],
        *,
        user_id: str,
        version: float,
        existing: Mapping[str, Any] | None = None,
        from_csv: bool = False,
    ) -> tuple[dict[str, Any], list[SaveError]]:
        """Check one record for create (``existing`` None) or update; returns (values, errors).

        Call with the lock held. Validation order: unknown fields, fields not
        writable in this operation, value types, per-field constraints
        (restricted picklists, lengths, ranges, e-mail), references, required
        fields, object rules. The first failing step reports its errors.
        """
        odef = self.schema[obj]
        create = existing is None
        if create:
            refusal = self._create_refusal(odef, version)
            if refusal is not None:
                return {}, [refusal]
        elif not odef.updateable:
            return {}, [SaveError("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be updated: {obj}")]
        raw: dict[str, tuple[FieldDef, Any]] = {}
        for key, value in payload.items():
            if key == "attributes":
                continue
            f = odef.field(key)
            if f is None:
                return {}, [SaveError("INVALID_FIELD", f"No such column '{key}' on sobject of type {obj}", (key,))]
            raw[f.name] = (f, value)
        if create and "Id" in raw:
            return {}, [SaveError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ("Id",))]
        not_writable = [n for n, (f, _v) in raw.items() if not (f.createable if create else f.updateable)]
        if not_writable:
            return {}, [SaveError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(not_writable)}. Please check the security settings of "
                "this field and verify that it is read/write for your profile or permission set.",
                tuple(not_writable),
            )]

        values: dict[str, Any] = {}
        for name, (f, value) in raw.items():
            try:
                values[name] = _coerce(f, value, from_csv=from_csv)
            except ValueError:
                if from_csv:
                    return {}, [SaveError("INVALID_TYPE_ON_FIELD_IN_RECORD",
                                          f"{f.display_label}: value not of required type: {value}", (name,))]
                return {}, [SaveError(
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {_SOAP_TYPES.get(f.type, 'xsd:string').split(':')[1]} from "
                    f"{_json_kind(value)} value {value} or request may be missing a required field",
                    (name,),
                )]

        errors = self._field_constraints(odef, values)
        if errors:
            return {}, errors
        errors = self._reference_checks(odef, values)
        if errors:
            return {}, errors

        if create:
            values = self._apply_defaults(odef, values, user_id)
        merged = dict(existing or {})
        merged.update(values)
        errors = self._required(odef, values, merged, create)
        if errors:
            return {}, errors
        errors = self._object_rules(odef, values, merged, existing)
        if errors:
            return {}, errors
        return values, []

    def _create_refusal(self, odef: ObjectDef, version: float) -> SaveError | None:
        if odef.name == "VoiceCall":
            if version < self.options.voicecall_create_min_version:
                return SaveError("INVALID_TYPE_FOR_OPERATION", "entity type cannot be inserted: VoiceCall")
            if not self.options.voicecall_createable:
                return SaveError("INSUFFICIENT_ACCESS_OR_READONLY",
                                 "insufficient access rights on object: VoiceCall (needs a Contact Center or "
                                 "Dialer permission set)")
        if not odef.createable:
            return SaveError("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be inserted: {odef.name}")
        return None

    def createable(self, obj: str, version: float) -> bool:
        odef = self.schema[obj]
        return self._create_refusal(odef, version) is None

    def _field_constraints(self, odef: ObjectDef, values: Mapping[str, Any]) -> list[SaveError]:
        for name, v in values.items():
            f = odef.fields[name]
            if v is None:
                continue
            if f.restricted_picklist and v not in {p.value for p in f.picklist if p.active}:
                return [SaveError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                  f"{f.display_label}: bad value for restricted picklist field: {v}", (name,))]
            if odef.name == "Task" and name == "TaskSubtype" and v == "Cadence":
                # §1 "Cadence can't be set manually".
                return [SaveError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                  f"{f.display_label}: bad value for restricted picklist field: {v}", (name,))]
            if isinstance(v, str) and f.length and len(v) > f.length:
                shown = v if len(v) <= 100 else v[:100] + "..."
                return [SaveError("STRING_TOO_LONG",
                                  f"{f.display_label}: data value too large: {shown} (max length={f.length})", (name,))]
            if f.type == "int" and f.digits and abs(v) >= 10 ** f.digits:
                return [SaveError("NUMBER_OUTSIDE_VALID_RANGE",
                                  f"{f.display_label}: value outside of valid range on numeric field: {v}", (name,))]
            if f.type in ("double", "currency", "percent") and f.precision and abs(v) >= 10 ** (f.precision - f.scale):
                return [SaveError("NUMBER_OUTSIDE_VALID_RANGE",
                                  f"{f.display_label}: value outside of valid range on numeric field: {v}", (name,))]
            if f.type == "email" and not _EMAIL_RE.match(v):
                return [SaveError("INVALID_EMAIL_ADDRESS", f"{f.display_label}: invalid email address: {v}", (name,))]
        return []

    def _reference_checks(self, odef: ObjectDef, values: dict[str, Any]) -> list[SaveError]:
        for name, v in list(values.items()):
            f = odef.fields[name]
            if f.type != "reference" or v is None:
                continue
            label = f.display_label
            if not soql.is_salesforce_id(v):
                return [SaveError("MALFORMED_ID", f"{label}: id value of incorrect type: {v}", (name,))]
            # Salesforce stores every reference as the canonical 18-character id.
            v = values[name] = soql.normalize_id(v)
            target = self.object_for_id(v)
            if target not in f.reference_to:
                return [SaveError("FIELD_INTEGRITY_EXCEPTION", f"{label}: id value of incorrect type: {v}", (name,))]
            hit = self._by_id.get(soql.normalize_id(v).lower())
            if hit is None:
                if v.lower() in self._deleted:
                    return [SaveError("ENTITY_IS_DELETED", "entity is deleted", (name,))]
                return [SaveError("INVALID_CROSS_REFERENCE_KEY", f"{label}: invalid cross reference id", (name,))]
            if name == "RecordTypeId" and hit[1].get("SobjectType") != odef.name:
                return [SaveError("INVALID_CROSS_REFERENCE_KEY",
                                  f"Record Type ID: this ID value isn't valid for the user: {v}", (name,))]
        return []

    def _required(self, odef: ObjectDef, values: Mapping[str, Any], merged: Mapping[str, Any],
                  create: bool) -> list[SaveError]:
        missing: list[str] = []
        person = odef.name == "Account" and self._is_person_account(merged)
        for f in odef.fields.values():
            needed = (f.createable if create else f.updateable) and not f.nillable and f.type != "boolean"
            if not needed:
                continue
            if odef.name == "Account" and f.name == "Name" and person:
                continue
            if create:
                if merged.get(f.name) is None:
                    missing.append(f.name)
            elif f.name in values and values[f.name] is None:
                missing.append(f.name)
        if person and merged.get("LastName") is None:
            missing.append("LastName")
        if missing:
            return [SaveError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                              tuple(missing))]
        return []

    def _is_person_account(self, rec: Mapping[str, Any]) -> bool:
        rt = self.record_types.get("Person Account")
        return bool(rt and rec.get("RecordTypeId") == rt)

    def _object_rules(self, odef: ObjectDef, values: Mapping[str, Any], merged: Mapping[str, Any],
                      existing: Mapping[str, Any] | None) -> list[SaveError]:
        obj = odef.name
        owner = values.get("OwnerId")
        if owner:
            hit = self._by_id.get(owner.lower())
            if hit and hit[0] == "User" and not hit[1].get("IsActive"):
                return [SaveError("INACTIVE_OWNER_OR_USER",
                                  f"operation performed with inactive user [{owner}] as owner of {obj.lower()}",
                                  ("OwnerId",))]
        if obj == "Task":
            who = merged.get("WhoId")
            who_hit = self._by_id.get(who.lower()) if who else None
            if who_hit and who_hit[0] == "Lead":
                if who_hit[1].get("IsConverted") and "WhoId" in values:
                    return [SaveError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", ("WhoId",))]
                if merged.get("WhatId"):
                    # §1 "Lead + WhatId rule".
                    return [SaveError("FIELD_INTEGRITY_EXCEPTION",
                                      "Related To ID: a task whose Name is a lead can't be related to another "
                                      "record (WhatId must be empty)", ("WhoId", "WhatId"))]
        if obj == "Lead" and existing is not None and existing.get("IsConverted"):
            return [SaveError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")]
        if obj == "Contact" and existing is not None and existing.get("IsPersonAccount"):
            return [SaveError("INVALID_FIELD_FOR_INSERT_UPDATE",
                              f"Person account contacts are updated through their Account "
                              f"({existing.get('AccountId')})", tuple(values))]
        if obj == "Account" and self.options.person_accounts:
            person = self._is_person_account(merged)
            if existing is not None and "RecordTypeId" in values and person != self._is_person_account(existing):
                return [SaveError("INVALID_FIELD_FOR_INSERT_UPDATE",
                                  "Cannot change between business and person account record types",
                                  ("RecordTypeId",))]
            if not person:
                bad = [k for k in _PERSON_ONLY if values.get(k) is not None]
                if bad:
                    return [SaveError("INVALID_FIELD_FOR_INSERT_UPDATE",
                                      f"Business Account may not use Person Account field(s): {', '.join(bad)}",
                                      tuple(bad))]
        return []

    # -- API writes -----------------------------------------------------------------

    def api_create(self, obj: str, values: dict[str, Any], user_id: str) -> str:
        with self._lock:
            return self._commit_create(obj, values, user_id)

    def api_update(self, obj: str, rid: str, values: dict[str, Any], user_id: str) -> None:
        with self._lock:
            self._commit_update(obj, rid, values, user_id)

    def api_delete(self, obj: str, rid: str) -> None:
        with self._lock:
            self._delete(obj, rid)

    def resolve(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        """(object, live record) for an id; None when absent. Call with the lock held."""
        if not soql.is_salesforce_id(record_id):
            return None
        return self._by_id.get(soql.normalize_id(record_id).lower())

    def is_deleted(self, record_id: str) -> bool:
        return soql.is_salesforce_id(record_id) and soql.normalize_id(record_id).lower() in self._deleted


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    if isinstance(value, int):
        return "VALUE_NUMBER_INT"
    if isinstance(value, float):
        return "VALUE_NUMBER_FLOAT"
    if isinstance(value, (list, tuple)):
        return "START_ARRAY"
    if isinstance(value, dict):
        return "START_OBJECT"
    return "VALUE_STRING"


def _to_stored(f: FieldDef, v: Any) -> Any:
    """Python values given by seed/tests -> the stored JSON form."""
    if v is None:
        return None
    if f.type == "datetime" and isinstance(v, datetime):
        return format_datetime(v)
    if f.type == "date" and isinstance(v, date):
        return v.isoformat()
    if f.type == "datetime" and isinstance(v, str):
        return format_datetime(soql.parse_datetime(v))
    return v


def _coerce(f: FieldDef, value: Any, *, from_csv: bool = False) -> Any:
    """A JSON (or CSV text) value -> the stored form for field ``f``; ValueError when it can't be."""
    if value is None:
        return None
    t = f.type
    if from_csv:
        if value == "#N/A":
            return None
        if value == "":
            return None
    if t in _TEXT_TYPES:
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            raise ValueError(value)
        if isinstance(value, (int, float)):
            # REST stores a JSON number sent to a text field as its text.
            return str(value)
        return value if value != "" else None
    if t in ("reference", "id"):
        if not isinstance(value, str):
            raise ValueError(value)
        return value if value != "" else None
    if t == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false") + (("1", "0") if from_csv else ()):
            return value.lower() in ("true", "1")
        raise ValueError(value)
    if t == "int":
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise ValueError(value)
    if t in ("double", "currency", "percent"):
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            try:
                return float(value) if re.search(r"[.eE]", value) else int(value)
            except ValueError:
                raise ValueError(value) from None
        raise ValueError(value)
    if t == "date":
        if not isinstance(value, str):
            raise ValueError(value)
        return date.fromisoformat(value).isoformat() if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else _bad(value)
    if t == "datetime":
        if not isinstance(value, str):
            raise ValueError(value)
        return format_datetime(soql.parse_datetime(value))
    return value


def _bad(value: Any) -> Any:
    raise ValueError(value)


# --------------------------------------------------------------------------
# Auth configuration and Salesforce-specific faults
# --------------------------------------------------------------------------

DEFAULT_FIXED_TOKEN = "00D8d0000001AbC!AQ0AQSandboxFixedTokenNotARealSalesforceSession"


@dataclass(slots=True)
class AuthConfig:
    """Credentials the emulated org accepts (§7 OAuth flows).

    ``jwt_certificate``: PEM of the connected app's certificate (or a bare
    public key) used to verify JWT bearer assertions; ``None`` disables the
    flow. ``passwords`` / ``security_tokens`` are per username; the password
    flow expects ``password + security_token`` (§7). ``run_as`` is the
    client-credentials "Run As" user (default: the integration user).
    ``fixed_token`` is a pre-issued access token for the tool's ``token`` mode.
    """

    consumer_key: str = "sandbox-consumer-key"
    consumer_secret: str = "sandbox-consumer-secret"
    jwt_certificate: bytes | str | None = None
    passwords: dict[str, str] = field(default_factory=lambda: {INTEGRATION_USERNAME: "sandbox-password"})
    security_tokens: dict[str, str] = field(default_factory=lambda: {INTEGRATION_USERNAME: "SANDBOXTOKEN"})
    run_as: str | None = None
    fixed_token: str | None = DEFAULT_FIXED_TOKEN
    allow_password_flow: bool = True
    allow_client_credentials: bool = True


class SalesforceFaults:
    """Faults only Salesforce has (§4 "Errors and limits", §8 "Session refresh").

    - ``lock_probability`` (seeded) / :meth:`lock_next`: a record write fails
      with ``UNABLE_TO_LOCK_ROW`` (per record, in collections, single-record
      writes and Bulk rows);
    - :meth:`limit_exceeded_next`: the next N data requests get 403
      ``REQUEST_LIMIT_EXCEEDED``;
    - ``expire_after_requests``: every session expires after serving that many
      data requests (then 401 ``INVALID_SESSION_ID`` until a new token is
      fetched); :meth:`SalesforceApp.expire_sessions` expires them at once.
    """

    def __init__(self, *, seed: int = 0, lock_probability: float = 0.0,
                 expire_after_requests: int | None = None) -> None:
        if not 0.0 <= lock_probability <= 1.0:
            raise ValueError("lock_probability must be within [0, 1]")
        self.lock_probability = lock_probability
        self.expire_after_requests = expire_after_requests
        self._rng = random.Random(seed)
        self._lock_next = 0
        self._limit_next = 0
        self._mutex = threading.Lock()
        self.locks_injected = 0

    def lock_next(self, n: int = 1) -> None:
        with self._mutex:
            self._lock_next += n

    def limit_exceeded_next(self, n: int = 1) -> None:
        with self._mutex:
            self._limit_next += n

    def take_lock(self) -> bool:
        with self._mutex:
            if self._lock_next > 0:
                self._lock_next -= 1
                self.locks_injected += 1
                return True
            if self.lock_probability and self._rng.random() < self.lock_probability:
                self.locks_injected += 1
                return True
            return False

    def take_limit(self) -> bool:
        with self._mutex:
            if self._limit_next > 0:
                self._limit_next -= 1
                return True
            return False


@dataclass(slots=True)
class _Session:
    user_id: str
    issued_at: float
    requests: int = 0
    expired: bool = False


@dataclass(slots=True)
class _Ctx:
    user_id: str
    version: str
    vnum: float
    base_url: str  # absolute, mount point included
    path_prefix: str  # path of the mount point ("" at the root)
    force_all_or_none: bool = False
    in_composite: bool = False

    @property
    def url_prefix(self) -> str:
        return f"{self.path_prefix}/services/data/v{self.version}"


@dataclass(slots=True)
class _Result:
    status: int
    payload: Any = None
    raw: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if self.raw is not None:
            headers = {"Content-Type": self.content_type or "text/plain; charset=utf-8", **self.headers}
            return Response(self.status, self.raw, headers)
        if self.status == 204:
            return Response(204, b"", dict(self.headers))
        return Response.json(self.payload, status=self.status, headers=self.headers)


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(slots=True)
class _Job:
    id: str
    object: str
    operation: str
    external_id_field: str | None
    line_ending: str
    column_delimiter: str
    created_by: str
    created: str
    api_version: float
    state: str = "Open"
    data: bytes | None = None
    header: list[str] = field(default_factory=list)
    successful: list[tuple[str, bool, list[str]]] = field(default_factory=list)
    failed: list[tuple[str, str, list[str]]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    unprocessed_header: list[str] = field(default_factory=list)
    error_message: str | None = None
    ready_at: float = 0.0
    processing_ms: int = 0

    def visible_state(self) -> str:
        if self.state in ("JobComplete", "Failed") and time.monotonic() < self.ready_at:
            return "InProgress"
        return self.state

    def info(self, base: str) -> dict[str, Any]:
        state = self.visible_state()
        done = state in ("JobComplete", "Failed")
        out: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by,
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version,
            "jobType": "V2Ingest",
            "contentUrl": f"{base.lstrip('/')}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "numberRecordsProcessed": (len(self.successful) + len(self.failed)) if done else 0,
            "numberRecordsFailed": len(self.failed) if done else 0,
            "retries": 0,
            "totalProcessingTime": self.processing_ms if done else 0,
            "apiActiveProcessingTime": self.processing_ms if done else 0,
            "apexProcessingTime": 0,
        }
        if self.external_id_field:
            out["externalIdFieldName"] = self.external_id_field
        if self.error_message:
            out["errorMessage"] = self.error_message
        return out


_DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
_LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
_REF_RE = re.compile(r"@\{([A-Za-z][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\}")
_VERSION_RE = re.compile(r"^/services/data/v(\d+\.\d)(?:/(.*))?$")
_LOCK_MESSAGE = "unable to obtain exclusive access to this record or 1 records: {}"


def _split_csv(text: str, delimiter: str, terminator: str) -> list[list[str]]:
    """Parse CSV whose records end with exactly ``terminator`` (quotes may hold anything).

    A quote opens a quoted section only at the start of a field; ``""`` inside
    it is one quote; after the closing quote the field goes on verbatim up to
    the next delimiter or terminator. A last record without its terminator
    counts unless it is empty.
    """
    quoted_re, plain_re = _csv_patterns(delimiter, terminator)
    rows: list[list[str]] = []
    row: list[str] = []
    pos = 0
    n = len(text)
    while pos < n:
        value = ""
        if text[pos] == '"':
            m = quoted_re.match(text, pos)
            if m is None:
                raise ValueError("unterminated quoted field")
            value = m.group(1).replace('""', '"')
            pos = m.end()
        m = plain_re.match(text, pos)
        value += m.group()
        pos = m.end()
        if pos == n:
            # Input ends inside this record: an empty last line is not a record.
            if row or value:
                row.append(value)
                rows.append(row)
            return rows
        row.append(value)
        if text[pos] == delimiter:
            pos += 1
            if pos == n:
                row.append("")
                rows.append(row)
                return rows
        else:
            rows.append(row)
            row = []
            pos += len(terminator)
    return rows


@functools.lru_cache(maxsize=None)
def _csv_patterns(delimiter: str, terminator: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    # Possessive: a doubled quote is always an escaped quote, never a close followed by an open.
    quoted = re.compile(r'"((?:[^"]|"")*+)"')
    d, first, rest = re.escape(delimiter), re.escape(terminator[0]), re.escape(terminator[1:])
    # Unquoted text runs up to the delimiter or the whole terminator: a lone CR in a CRLF file is data.
    partial = f"|{first}(?!{rest})" if rest else ""
    plain = re.compile(f"(?:[^{d}{first}]{partial})*+")
    return quoted, plain


def _csv_out(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    return out.getvalue().encode("utf-8")


# --------------------------------------------------------------------------
# The HTTP app
# --------------------------------------------------------------------------


class SalesforceApp:
    """The Salesforce REST API as the tool sees it; mount it at the server root.

    ``instance_url`` (token responses) is the mount point's base URL, and every
    relative URL returned (``nextRecordsUrl``, ``attributes.url``) starts with
    the mount path, so clients that prefix them with the host stay here.
    """

    def __init__(
        self,
        store: SalesforceStore,
        *,
        auth: AuthConfig | None = None,
        faults: SalesforceFaults | None = None,
        bulk_processing_delay: float = 0.0,
    ) -> None:
        self.store = store
        self.auth = auth or AuthConfig()
        self.faults = faults or SalesforceFaults()
        self.bulk_processing_delay = bulk_processing_delay
        #: Seconds a closed job waits before its rows are processed (none of them visible until then).
        self.bulk_queue_delay = 0.0
        #: Tracebacks of Bulk jobs that crashed while processing (they run outside any request).
        self.bulk_errors: list[str] = []
        self._mutex = threading.RLock()
        self._sessions: dict[str, _Session] = {}
        if self.auth.fixed_token:
            self._sessions[self.auth.fixed_token] = _Session(store.integration_user_id, time.time())
        self._api_usage = 0
        self._jobs: dict[str, _Job] = {}
        self._job_seq = 0
        self._locators: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self._locator_seq = 0
        self._jwt_key = self._load_jwt_key(self.auth.jwt_certificate)

    # -- test helpers --------------------------------------------------------------

    def issue_token(self, username: str | None = None) -> str:
        """A fresh access token for ``username`` (default: the integration user)."""
        user_id = self._user_id(username) if username else self.store.integration_user_id
        if user_id is None:
            raise KeyError(username)
        return self._new_session(user_id)

    def expire_sessions(self) -> None:
        """Expire every session issued so far (§8: the next request gets INVALID_SESSION_ID)."""
        with self._mutex:
            for s in self._sessions.values():
                s.expired = True

    @property
    def api_usage(self) -> int:
        with self._mutex:
            return self._api_usage

    def set_api_usage(self, used: int) -> None:
        """Pretend ``used`` API requests were already made in the rolling 24 h."""
        with self._mutex:
            self._api_usage = used

    def job(self, job_id: str) -> dict[str, Any]:
        with self._mutex:
            return self._jobs[job_id].info("")

    # -- plumbing --------------------------------------------------------------------

    def _user_id(self, username: str) -> str | None:
        with self.store.lock:
            for rec in self.store._data["User"].values():
                if str(rec.get("Username", "")).lower() == username.lower():
                    return str(rec["Id"])
        return None

    def _new_session(self, user_id: str) -> str:
        token = f"{ORG_ID[:15]}!AQ0A" + base64.urlsafe_b64encode(random.randbytes(48)).decode().rstrip("=")
        with self._mutex:
            self._sessions[token] = _Session(user_id, time.time())
        return token

    @staticmethod
    def _load_jwt_key(pem: bytes | str | None) -> rsa.RSAPublicKey | None:
        if pem is None:
            return None
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        except ValueError:
            key = serialization.load_pem_public_key(data)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the JWT bearer flow needs an RSA certificate or public key (RS256)")
        return key

    def fault_response(self, fault: Fault, request: Request) -> Response:
        """Injected HTTP faults, in Salesforce's own error shapes (§4)."""
        status = fault.status or 500
        headers: dict[str, str] = {}
        if status in (429, 503):
            headers["Retry-After"] = str(max(1, round(fault.retry_after_s)))
        if request.path.startswith("/services/oauth2"):
            return Response.json({"error": "server_error", "error_description": "injected fault"}, status, headers)
        code, message = {
            401: ("INVALID_SESSION_ID", "Session expired or invalid"),
            403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
            404: ("NOT_FOUND", "The requested resource does not exist"),
            429: ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
            500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if you contact "
                                       "support: 0000000000-00000 (-0000000000)"),
        }.get(status, ("SERVER_UNAVAILABLE", "Server temporarily unavailable; try again later."))
        return Response.json([{"message": message, "errorCode": code}], status, headers)

    def _limit_header(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self._api_usage}/{self.store.options.daily_api_limit}"}

    @staticmethod
    def _mount_path(request: Request) -> str:
        return urllib.parse.urlsplit(request.base_url).path.rstrip("/")

    def _check_size(self, request: Request) -> None:
        # §9: the combined URI and headers may not exceed 16,384 bytes. The raw request line is
        # rebuilt from the parsed parts (spaces as '+', as requests' params= sends them).
        uri = self._mount_path(request) + request.path
        if request.query_items:
            uri += "?" + urllib.parse.urlencode(request.query_items)
        uri_len = len(uri.encode("utf-8"))
        headers_len = sum(len(k) + len(v) + 4 for k, v in request.headers.items())
        line_len = len(request.method) + 1 + uri_len + len(" HTTP/1.1\r\n")
        if uri_len > URI_AND_HEADERS_MAX:
            raise _HttpError(414, "URI_TOO_LONG", f"URI Too Long: {uri_len} bytes; the maximum length for the "
                                                  f"combined URI and headers is {URI_AND_HEADERS_MAX} bytes")
        if line_len + headers_len > URI_AND_HEADERS_MAX:
            raise _HttpError(431, "REQUEST_HEADER_FIELDS_TOO_LARGE",
                             f"Request Header Fields Too Large: the URI and headers take {line_len + headers_len} "
                             f"bytes; the maximum is {URI_AND_HEADERS_MAX}")

    # -- entry point ---------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        data_path = path.startswith("/services/data/v")
        try:
            self._check_size(request)
            if path == "/services/oauth2/token":
                return self._token(request)
            if path in ("/services/oauth2/userinfo",) or path.startswith("/id/"):
                return self._identity(request, path)
            if path == "/services/data":
                return Response.json([
                    {"label": f"v{v}", "url": f"{self._mount_path(request)}/services/data/v{v}.0", "version": f"{v}.0"}
                    for v in range(40, 67)
                ])
            m = _VERSION_RE.match(path)
            if not m or float(m.group(1)) < MIN_API_VERSION:
                raise _not_found()
            version = m.group(1)
            rest = m.group(2) or ""
            session = self._authenticate(request)
            with self._mutex:
                if self.faults.take_limit() or self._api_usage >= self.store.options.daily_api_limit:
                    raise _HttpError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
                self._api_usage += 1
            ctx = _Ctx(session.user_id, version, float(version), request.base_url, self._mount_path(request))
            parts = [p for p in rest.split("/") if p != ""]
            self.store._count(_kind(parts, request.method))
            result = self._route(ctx, request.method, parts, list(request.query_items), request.body, False,
                                 request.header("content-type") or "", request.headers)
            response = result.response()
            response.headers.update(self._limit_header())
            return response
        except _HttpError as e:
            headers = self._limit_header() if data_path and e.status not in (401, 414, 431) else {}
            if e.status == 401:
                headers["WWW-Authenticate"] = 'Token'
            if e.status == 405:
                headers["Allow"] = ", ".join(e.fields) if e.fields else "GET"
                e.fields = []
            return Response.json(e.body(), status=e.status, headers=headers)

    def _authenticate(self, request: Request) -> _Session:
        header = request.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "oauth") or not token:
            raise _HttpError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        with self._mutex:
            s = self._sessions.get(token)
            if s is None or s.expired:
                raise _HttpError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            limit = self.faults.expire_after_requests
            if limit is not None and s.requests >= limit:
                s.expired = True
                raise _HttpError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            s.requests += 1
            rec = self.store._by_id.get(s.user_id.lower())
            if rec is None or not rec[1].get("IsActive"):
                raise _HttpError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            return s

    # -- OAuth (§7) ----------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        self.store._count("auth")
        try:
            if request.method != "POST":
                raise _OAuthError("invalid_request", "must use HTTP POST")
            params = dict(request.query_items)
            ctype = (request.header("content-type") or "").lower()
            if request.body:
                if "json" in ctype:
                    raise _OAuthError("invalid_request", "the token request must be form-encoded")
                params.update(urllib.parse.parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
            grant = params.get("grant_type", "")
            if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                user_id = self._jwt_grant(params.get("assertion", ""))
            elif grant == "client_credentials":
                user_id = self._client_credentials_grant(request, params)
            elif grant == "password":
                user_id = self._password_grant(params)
            elif not grant:
                raise _OAuthError("invalid_request", "grant type not supported")
            else:
                raise _OAuthError("unsupported_grant_type", "grant type not supported")
        except _OAuthError as e:
            return Response.json({"error": e.error, "error_description": e.description}, status=e.status)
        token = self._new_session(user_id)
        issued = str(int(time.time() * 1000))
        identity = f"{request.base_url}/id/{ORG_ID}/{user_id}"
        signature = base64.b64encode(
            hmac.new(self.auth.consumer_secret.encode(), (identity + issued).encode(), hashlib.sha256).digest()
        ).decode()
        return Response.json({
            "access_token": token,
            "instance_url": request.base_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued,
            "signature": signature,
            "scope": "api",
        })

    def _active_user(self, username: str) -> str | None:
        uid = self._user_id(username)
        if uid is None:
            return None
        rec = self.store.get(uid)
        return uid if rec and rec.get("IsActive") else None

    def _jwt_grant(self, assertion: str) -> str:
        if self._jwt_key is None:
            raise _OAuthError("invalid_grant", "invalid assertion (no certificate is configured for JWT bearer)")
        parts = assertion.split(".")
        if len(parts) != 3:
            raise _OAuthError("invalid_grant", "invalid assertion")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError):
            raise _OAuthError("invalid_grant", "invalid assertion") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
            raise _OAuthError("invalid_grant", "invalid assertion (alg must be RS256)")
        try:
            self._jwt_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise _OAuthError("invalid_grant", "invalid assertion (signature)") from None
        if claims.get("iss") != self.auth.consumer_key:
            raise _OAuthError("invalid_client_id", "client identifier invalid")
        if not claims.get("aud"):
            raise _OAuthError("invalid_grant", "audience is invalid")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= time.time():
            raise _OAuthError("invalid_grant", "expired authorization code")
        uid = self._active_user(str(claims.get("sub") or ""))
        if uid is None:
            raise _OAuthError("invalid_grant", "user hasn't approved this consumer")
        return uid

    def _client_ok(self, client_id: str | None, secret: str | None) -> None:
        if client_id != self.auth.consumer_key:
            raise _OAuthError("invalid_client_id", "client identifier invalid")
        if secret != self.auth.consumer_secret:
            raise _OAuthError("invalid_client", "invalid client credentials")

    def _client_credentials_grant(self, request: Request, params: Mapping[str, str]) -> str:
        client_id, secret = params.get("client_id"), params.get("client_secret")
        header = request.header("authorization") or ""
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise _OAuthError("invalid_client", "invalid client credentials") from None
            client_id, _, secret = decoded.partition(":")
            client_id = urllib.parse.unquote(client_id)
            secret = urllib.parse.unquote(secret)
        self._client_ok(client_id, secret)
        if not self.auth.allow_client_credentials:
            raise _OAuthError("invalid_grant", "no client credentials user enabled")
        uid = self._active_user(self.auth.run_as) if self.auth.run_as else self.store.integration_user_id
        if uid is None:
            raise _OAuthError("invalid_grant", "no client credentials user enabled")
        return uid

    def _password_grant(self, params: Mapping[str, str]) -> str:
        if not self.auth.allow_password_flow:
            raise _OAuthError("unsupported_grant_type", "grant type not supported")
        self._client_ok(params.get("client_id"), params.get("client_secret"))
        username = params.get("username", "")
        expected = next((u for u in self.auth.passwords if u.lower() == username.lower()), None)
        if expected is None:
            raise _OAuthError("invalid_grant", "authentication failure")
        wanted = self.auth.passwords[expected] + self.auth.security_tokens.get(expected, "")
        if not hmac.compare_digest(params.get("password", ""), wanted):
            raise _OAuthError("invalid_grant", "authentication failure")
        uid = self._active_user(expected)
        if uid is None:
            raise _OAuthError("invalid_grant", "authentication failure")
        return uid

    def _identity(self, request: Request, path: str) -> Response:
        try:
            session = self._authenticate(request)
        except _HttpError as e:
            return Response.json(e.body(), status=e.status)
        rec = self.store.get(session.user_id)
        assert rec is not None
        if path.startswith("/id/") and not path.endswith(session.user_id):
            return Response.json(_not_found().body(), status=404)
        ident = f"{request.base_url}/id/{ORG_ID}/{session.user_id}"
        if path.startswith("/id/"):
            return Response.json({
                "id": ident, "asserted_user": True, "user_id": session.user_id, "organization_id": ORG_ID,
                "username": rec["Username"], "display_name": rec["Name"], "email": rec["Email"],
                "active": rec["IsActive"], "user_type": "STANDARD", "language": "en_US", "locale": "en_US",
                "utcOffset": 0, "is_app_installed": True,
                "urls": {"rest": f"{request.base_url}/services/data/v{{version}}/",
                         "query": f"{request.base_url}/services/data/v{{version}}/query/"},
            })
        return Response.json({
            "sub": ident, "user_id": session.user_id, "organization_id": ORG_ID,
            "preferred_username": rec["Username"], "name": rec["Name"], "email": rec["Email"],
            "email_verified": True, "active": rec["IsActive"],
        })

    # -- routing -------------------------------------------------------------------------

    def _json(self, body: Any, parsed: bool) -> Any:
        if parsed:
            return body
        if not body:
            return None
        try:
            return json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise _HttpError(400, "JSON_PARSER_ERROR", f"Unexpected character: {e}") from None

    def _route(
        self,
        ctx: _Ctx,
        method: str,
        parts: list[str],
        query: list[tuple[str, str]],
        body: Any,
        parsed: bool,
        content_type: str,
        headers: Mapping[str, str],
    ) -> _Result:
        q = dict(query)
        head = parts[0] if parts else ""
        n = len(parts)

        def allow(*methods: str) -> None:
            if method not in methods:
                raise _HttpError(405, "METHOD_NOT_ALLOWED",
                                 f"HTTP Method '{method}' not allowed. Allowed are {','.join(methods)}", methods)

        if n == 0:
            allow("GET")
            return _Result(200, {k: f"{ctx.url_prefix}/{k}" for k in
                                 ("sobjects", "query", "queryAll", "search", "composite", "limits", "jobs")})
        if head == "limits" and n == 1:
            allow("GET")
            return _Result(200, self._limits())
        if head == "sobjects":
            if n == 1:
                allow("GET")
                return _Result(200, self._global_describe(ctx))
            obj = self._object(parts[1])
            if n == 2:
                allow("GET", "POST")
                if method == "GET":
                    return _Result(200, {"objectDescribe": self._summary(ctx, obj), "recentItems": []})
                return self._create_one(ctx, obj, self._json(body, parsed))
            if n == 3 and parts[2] == "describe":
                allow("GET")
                return _Result(200, self._describe(ctx, obj))
            if n == 3:
                allow("GET", "PATCH", "DELETE")
                if method == "GET":
                    return self._get_one(ctx, obj, parts[2], q.get("fields"))
                if method == "PATCH":
                    return self._update_one(ctx, obj, parts[2], self._json(body, parsed))
                return self._delete_one(ctx, obj, parts[2])
            if n == 4:
                allow("GET", "PATCH")
                value = urllib.parse.unquote(parts[3])
                if method == "GET":
                    return self._get_by_field(ctx, obj, parts[2], value, q.get("fields"))
                return self._upsert_one(ctx, obj, parts[2], value, self._json(body, parsed))
            raise _not_found()
        if head in ("query", "queryAll"):
            allow("GET")
            if n == 1:
                return self._query(ctx, q.get("q"), headers)
            if n == 2:
                return self._query_more(ctx, parts[1])
            raise _not_found()
        if head == "search" and n == 1:
            allow("GET")
            return self._search(ctx, q.get("q"))
        if head == "composite":
            if n == 1:
                allow("POST")
                if ctx.in_composite:
                    raise _HttpError(400, "INVALID_API_INPUT", "Composite requests can't be nested")
                return self._composite(ctx, self._json(body, parsed))
            if parts[1] != "sobjects":
                raise _not_found()
            if n == 2:
                allow("POST", "PATCH", "DELETE")
                if method == "POST":
                    return self._collection_write(ctx, self._json(body, parsed), create=True)
                if method == "PATCH":
                    return self._collection_write(ctx, self._json(body, parsed), create=False)
                return self._collection_delete(ctx, q)
            obj = self._object(parts[2])
            if n == 3:
                allow("GET", "POST")
                if method == "GET":
                    return self._collection_retrieve(ctx, obj, q.get("ids"), q.get("fields"))
                data = self._json(body, parsed) or {}
                ids = data.get("ids") if isinstance(data, dict) else None
                fields = data.get("fields") if isinstance(data, dict) else None
                return self._collection_retrieve(
                    ctx, obj, ",".join(ids) if isinstance(ids, list) else None,
                    ",".join(fields) if isinstance(fields, list) else None)
            if n == 4:
                allow("PATCH")
                return self._collection_upsert(ctx, obj, parts[3], self._json(body, parsed))
            raise _not_found()
        if head == "jobs" and n >= 2 and parts[1] == "ingest":
            if ctx.in_composite:
                raise _HttpError(400, "INVALID_API_INPUT", "Bulk jobs can't be part of a composite request")
            return self._bulk(ctx, method, parts[2:], body, content_type)
        raise _not_found()

    def _object(self, name: str) -> str:
        obj = self.store._object_name(name)
        if obj is None:
            raise _HttpError(404, "NOT_FOUND", "The requested resource does not exist")
        return obj

    # -- describe -------------------------------------------------------------------------

    def _summary(self, ctx: _Ctx, obj: str) -> dict[str, Any]:
        return self.store.schema[obj].summary(ctx.url_prefix, createable=self.store.createable(obj, ctx.vnum))

    def _global_describe(self, ctx: _Ctx) -> dict[str, Any]:
        return {
            "encoding": "UTF-8",
            "maxBatchSize": COLLECTION_MAX,
            "sobjects": [self._summary(ctx, o) for o in sorted(self.store.schema)],
        }

    def _describe(self, ctx: _Ctx, obj: str) -> dict[str, Any]:
        odef = self.store.schema[obj]
        out = self._summary(ctx, obj)
        createable = out["createable"]
        fields = []
        for f in odef.fields.values():
            d = f.describe()
            if not createable:
                d["createable"] = False
            fields.append(d)
        rt_infos = []
        with self.store.lock:
            for rec in self.store._data["RecordType"].values():
                if rec.get("SobjectType") == obj:
                    rt_infos.append({
                        "active": True, "available": True, "defaultRecordTypeMapping": rec["Name"] == "Business Account",
                        "developerName": rec["DeveloperName"], "master": False, "name": rec["Name"],
                        "recordTypeId": rec["Id"],
                        "urls": {"layout": f"{ctx.url_prefix}/sobjects/{obj}/describe/layouts/{rec['Id']}"},
                    })
        if not rt_infos:
            rt_infos = [{"active": True, "available": True, "defaultRecordTypeMapping": True,
                         "developerName": "Master", "master": True, "name": "Master",
                         "recordTypeId": "012000000000000AAA", "urls": {}}]
        out.update({
            "actionOverrides": [],
            "childRelationships": [],
            "compactLayoutable": True,
            "fields": fields,
            "listviewable": None,
            "lookupLayoutable": None,
            "namedLayoutInfos": [],
            "networkScopeFieldName": None,
            "recordTypeInfos": rt_infos,
            "searchLayoutable": True,
            "sobjectDescribeOption": "FULL",
            "supportedScopes": [{"label": "All", "name": "everything"}, {"label": "Mine", "name": "mine"}],
        })
        return out

    def _limits(self) -> dict[str, Any]:
        m = self.store.options.daily_api_limit
        with self._mutex:
            used = self._api_usage
            batches = len(self._jobs)
        return {
            "DailyApiRequests": {"Max": m, "Remaining": max(0, m - used)},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000 - batches},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
            "DataStorageMB": {"Max": 5, "Remaining": 5},
            "FileStorageMB": {"Max": 20, "Remaining": 20},
            "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            "HourlyODataCallout": {"Max": 10000, "Remaining": 10000},
        }

    # -- single records -------------------------------------------------------------------

    def _render_record(self, ctx: _Ctx, obj: str, rec: Mapping[str, Any], fields: str | None) -> dict[str, Any]:
        odef = self.store.schema[obj]
        out: dict[str, Any] = {"attributes": {"type": obj, "url": f"{ctx.url_prefix}/sobjects/{obj}/{rec['Id']}"}}
        if fields:
            for name in [x.strip() for x in fields.split(",") if x.strip()]:
                f = odef.field(name)
                if f is None:
                    raise _HttpError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj}'. If you are "
                                     "attempting to use a custom field, be sure to append the '__c' after the custom "
                                     "field name. Please reference your WSDL or the describe call for the "
                                     "appropriate names.")
                out[f.name] = rec.get(f.name)
            return out
        for name in odef.fields:
            out[name] = rec.get(name)
        return out

    def _lock_error(self, values: Mapping[str, Any], rid: str | None) -> SaveError | None:
        if not self.faults.take_lock():
            return None
        parent = values.get("WhatId") or values.get("WhoId") or values.get("AccountId") or rid or ""
        return SaveError("UNABLE_TO_LOCK_ROW", _LOCK_MESSAGE.format(parent))

    def _create_one(self, ctx: _Ctx, obj: str, payload: Any) -> _Result:
        if not isinstance(payload, dict):
            raise _HttpError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        with self.store.lock:
            values, errors = self.store.prepare(obj, payload, user_id=ctx.user_id, version=ctx.vnum)
            if not errors:
                lock = self._lock_error(values, None)
                errors = [lock] if lock else []
            if errors:
                return _Result(400, [e.as_rest() for e in errors])
            rid = self.store.api_create(obj, values, ctx.user_id)
        return _Result(201, {"id": rid, "success": True, "errors": []},
                       headers={"Location": f"{ctx.url_prefix}/sobjects/{obj}/{rid}"})

    def _existing(self, obj: str, record_id: str) -> dict[str, Any]:
        hit = self.store.resolve(record_id)
        if hit is None or hit[0] != obj:
            if self.store.is_deleted(record_id):
                raise _HttpError(404, "ENTITY_IS_DELETED", "entity is deleted")
            raise _not_found()
        return hit[1]

    def _get_one(self, ctx: _Ctx, obj: str, record_id: str, fields: str | None) -> _Result:
        with self.store.lock:
            rec = self._existing(obj, record_id)
            return _Result(200, self._render_record(ctx, obj, rec, fields))

    def _update_one(self, ctx: _Ctx, obj: str, record_id: str, payload: Any) -> _Result:
        if not isinstance(payload, dict):
            raise _HttpError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        with self.store.lock:
            rec = self._existing(obj, record_id)
            payload = {k: v for k, v in payload.items() if k.lower() != "id"}
            values, errors = self.store.prepare(obj, payload, user_id=ctx.user_id, version=ctx.vnum, existing=rec)
            if not errors:
                lock = self._lock_error(rec, rec["Id"])
                errors = [lock] if lock else []
            if errors:
                return _Result(400, [e.as_rest() for e in errors])
            self.store.api_update(obj, rec["Id"], values, ctx.user_id)
        return _Result(204)

    def _delete_one(self, ctx: _Ctx, obj: str, record_id: str) -> _Result:
        with self.store.lock:
            rec = self._existing(obj, record_id)
            if not self.store.schema[obj].deletable:
                raise _HttpError(400, "INVALID_TYPE_FOR_OPERATION", f"entity type cannot be deleted: {obj}")
            lock = self._lock_error(rec, rec["Id"])
            if lock:
                return _Result(400, [lock.as_rest()])
            self.store.api_delete(obj, rec["Id"])
        return _Result(204)

    def _lookup_field(self, obj: str, name: str, *, upsert: bool) -> FieldDef:
        f = self.store.schema[obj].field(name)
        ok = f is not None and (f.external_id or (not upsert and (f.id_lookup or f.name == "Id")))
        if not ok:
            # §1 "Upsert by external id: UNCONFIRMED" — strict: only externalId fields (idLookup for reads).
            raise _HttpError(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}")
        assert f is not None
        return f

    def _matches(self, obj: str, f: FieldDef, value: str) -> list[dict[str, Any]]:
        hits = self.store._lookup(obj, f.name, [value]) or []
        return [h for h in hits if str(h.get(f.name, "")).lower() == value.lower()]

    def _get_by_field(self, ctx: _Ctx, obj: str, field_name: str, value: str, fields: str | None) -> _Result:
        with self.store.lock:
            f = self._lookup_field(obj, field_name, upsert=False)
            hits = self._matches(obj, f, value)
            if not hits:
                raise _not_found()
            if len(hits) > 1:
                return _Result(300, [f"{ctx.url_prefix}/sobjects/{obj}/{h['Id']}" for h in hits])
            return _Result(200, self._render_record(ctx, obj, hits[0], fields))

    def _upsert_core(self, ctx: _Ctx, obj: str, f: FieldDef, value: Any, payload: Mapping[str, Any]
                     ) -> tuple[str | None, bool, list[SaveError]]:
        hits = self._matches(obj, f, str(value))
        if len(hits) > 1:
            return None, False, [SaveError("DUPLICATE_EXTERNAL_ID",
                                           f"{f.display_label}: more than one record found for external id field: "
                                           f"{[h['Id'] for h in hits]}", (f.name,))]
        body = {k: v for k, v in payload.items() if k.lower() != "id"}
        if hits:
            rec = hits[0]
            body = {k: v for k, v in body.items() if k.lower() != f.name.lower()}
            values, errors = self.store.prepare(obj, body, user_id=ctx.user_id, version=ctx.vnum, existing=rec)
            if not errors:
                lock = self._lock_error(rec, rec["Id"])
                errors = [lock] if lock else []
            if errors:
                return rec["Id"], False, errors
            self.store.api_update(obj, rec["Id"], values, ctx.user_id)
            return rec["Id"], False, []
        body[f.name] = value
        values, errors = self.store.prepare(obj, body, user_id=ctx.user_id, version=ctx.vnum)
        if not errors:
            lock = self._lock_error(values, None)
            errors = [lock] if lock else []
        if errors:
            return None, True, errors
        return self.store.api_create(obj, values, ctx.user_id), True, []

    def _upsert_one(self, ctx: _Ctx, obj: str, field_name: str, value: str, payload: Any) -> _Result:
        if not isinstance(payload, dict):
            raise _HttpError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        with self.store.lock:
            f = self._lookup_field(obj, field_name, upsert=True)
            hits = self._matches(obj, f, value)
            if len(hits) > 1:
                return _Result(300, [f"{ctx.url_prefix}/sobjects/{obj}/{h['Id']}" for h in hits])
            rid, created, errors = self._upsert_core(ctx, obj, f, value, payload)
        if errors:
            return _Result(400, [e.as_rest() for e in errors])
        if created:
            return _Result(201, {"id": rid, "success": True, "errors": [], "created": True},
                           headers={"Location": f"{ctx.url_prefix}/sobjects/{obj}/{rid}"})
        if ctx.vnum < 46.0:
            return _Result(204)
        return _Result(200, {"id": rid, "success": True, "errors": [], "created": False})

    # -- sObject Collections (§4) ----------------------------------------------------------

    def _collection_body(self, body: Any) -> tuple[list[Any], bool]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise _HttpError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object with a 'records' array")
        records = body["records"]
        if len(records) > COLLECTION_MAX:
            raise _HttpError(400, "EXCEEDED_ID_LIMIT",
                             f"record limit reached. cannot submit more than {COLLECTION_MAX} records into this call")
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise _HttpError(400, "JSON_PARSER_ERROR", "allOrNone must be a boolean")
        return records, all_or_none

    def _collection_write(self, ctx: _Ctx, body: Any, *, create: bool) -> _Result:
        records, all_or_none = self._collection_body(body)
        all_or_none = all_or_none or ctx.force_all_or_none
        types = [r.get("attributes", {}).get("type") if isinstance(r, dict) and isinstance(r.get("attributes"), dict)
                 else None for r in records]
        chunks = sum(1 for i, t in enumerate(types) if i == 0 or t != types[i - 1])
        if create and chunks > COLLECTION_MAX_CHUNKS:
            # §4 "mixed types are processed in chunks (max 10 chunks)"; the error shape is UNCONFIRMED.
            raise _HttpError(400, "INVALID_BATCH_REQUEST",
                             "Cannot have more than 10 chunks in a single operation. Please rearrange the data to "
                             "reduce chunking.")
        plans: list[tuple[str | None, str | None, dict[str, Any], list[SaveError]]] = []
        with self.store.lock:
            for rec, t in zip(records, types, strict=True):
                plans.append(self._plan_write(ctx, rec, t, create=create))
            failed = any(p[3] for p in plans)
            results: list[dict[str, Any]] = []
            if all_or_none and failed:
                for obj, rid, _values, errors in plans:
                    errs = errors or [SaveError(
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request was using AllOrNone "
                        "header")]
                    results.append({"id": rid if not create else None, "success": False,
                                    "errors": [e.as_save() for e in errs]})
                return _Result(200, results)
            for obj, rid, values, errors in plans:
                if errors:
                    results.append({"id": rid if not create else None, "success": False,
                                    "errors": [e.as_save() for e in errors]})
                    continue
                assert obj is not None
                if create:
                    rid = self.store.api_create(obj, values, ctx.user_id)
                else:
                    assert rid is not None
                    self.store.api_update(obj, rid, values, ctx.user_id)
                results.append({"id": rid, "success": True, "errors": []})
        return _Result(200, results)

    def _plan_write(self, ctx: _Ctx, rec: Any, type_name: Any, *, create: bool
                    ) -> tuple[str | None, str | None, dict[str, Any], list[SaveError]]:
        if not isinstance(rec, dict):
            return None, None, {}, [SaveError("JSON_PARSER_ERROR", "Each record must be a JSON object")]
        if not type_name:
            return None, None, {}, [SaveError("INVALID_TYPE", "Must send a concrete entity type.")]
        obj = self.store._object_name(str(type_name))
        if obj is None:
            return None, None, {}, [SaveError("INVALID_TYPE", f"sObject type '{type_name}' is not supported.")]
        payload = {k: v for k, v in rec.items() if k != "attributes"}
        if create:
            if any(k.lower() == "id" for k in payload):
                return obj, None, {}, [SaveError("INVALID_FIELD_FOR_INSERT_UPDATE",
                                                 "cannot specify Id in an insert call", ("Id",))]
            values, errors = self.store.prepare(obj, payload, user_id=ctx.user_id, version=ctx.vnum)
            if not errors:
                lock = self._lock_error(values, None)
                errors = [lock] if lock else []
            return obj, None, values, errors
        rid = next((v for k, v in payload.items() if k.lower() == "id"), None)
        if not rid:
            return obj, None, {}, [SaveError("MISSING_ARGUMENT", "Id not specified in an update call")]
        hit = self.store.resolve(str(rid))
        if hit is None:
            code = "ENTITY_IS_DELETED" if self.store.is_deleted(str(rid)) else "INVALID_CROSS_REFERENCE_KEY"
            msg = "entity is deleted" if code == "ENTITY_IS_DELETED" else "invalid cross reference id"
            return obj, str(rid), {}, [SaveError(code, msg)]
        if hit[0] != obj:
            return obj, str(rid), {}, [SaveError("MALFORMED_ID", f"{obj} ID: id value of incorrect type: {rid}", ("Id",))]
        payload = {k: v for k, v in payload.items() if k.lower() != "id"}
        values, errors = self.store.prepare(obj, payload, user_id=ctx.user_id, version=ctx.vnum, existing=hit[1])
        if not errors:
            lock = self._lock_error(hit[1], hit[1]["Id"])
            errors = [lock] if lock else []
        return obj, hit[1]["Id"], values, errors

    def _collection_delete(self, ctx: _Ctx, q: Mapping[str, str]) -> _Result:
        ids = [x for x in (q.get("ids") or "").split(",") if x]
        if not ids:
            raise _HttpError(400, "MISSING_ARGUMENT", "ids parameter is required")
        if len(ids) > COLLECTION_MAX:
            raise _HttpError(400, "EXCEEDED_ID_LIMIT",
                             f"record limit reached. cannot submit more than {COLLECTION_MAX} records into this call")
        all_or_none = (q.get("allOrNone") or "false").lower() == "true" or ctx.force_all_or_none
        with self.store.lock:
            plans: list[tuple[str, str | None, list[SaveError]]] = []
            for rid in ids:
                hit = self.store.resolve(rid)
                if hit is None:
                    code = "ENTITY_IS_DELETED" if self.store.is_deleted(rid) else "INVALID_CROSS_REFERENCE_KEY"
                    msg = "entity is deleted" if code == "ENTITY_IS_DELETED" else "invalid cross reference id"
                    plans.append((rid, None, [SaveError(code, msg)]))
                    continue
                lock = self._lock_error(hit[1], hit[1]["Id"])
                plans.append((hit[1]["Id"], hit[0], [lock] if lock else []))
            if all_or_none and any(p[2] for p in plans):
                return _Result(200, [{"id": rid, "success": False, "errors": [e.as_save() for e in (errs or [SaveError(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone "
                    "header")])]} for rid, _o, errs in plans])
            out = []
            for rid, obj, errs in plans:
                if errs or obj is None:
                    out.append({"id": rid, "success": False, "errors": [e.as_save() for e in errs]})
                    continue
                self.store.api_delete(obj, rid)
                out.append({"id": rid, "success": True, "errors": []})
        return _Result(200, out)

    def _collection_retrieve(self, ctx: _Ctx, obj: str, ids: str | None, fields: str | None) -> _Result:
        if not ids or not fields:
            raise _HttpError(400, "MISSING_ARGUMENT", "The 'ids' and 'fields' parameters are required")
        id_list = [x for x in ids.split(",") if x]
        if len(id_list) > 2000:
            raise _HttpError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot retrieve more than 2000 records")
        out: list[Any] = []
        with self.store.lock:
            for rid in id_list:
                if not soql.is_salesforce_id(rid):
                    raise _HttpError(400, "MALFORMED_ID", f"malformed id {rid}")
                hit = self.store.resolve(rid)
                out.append(self._render_record(ctx, obj, hit[1], fields) if hit and hit[0] == obj else None)
        return _Result(200, out)

    def _collection_upsert(self, ctx: _Ctx, obj: str, field_name: str, body: Any) -> _Result:
        if ctx.vnum < 46.0:
            raise _not_found()
        records, all_or_none = self._collection_body(body)
        all_or_none = all_or_none or ctx.force_all_or_none
        with self.store.lock:
            f = self.store.schema[obj].field(field_name)
            if f is None or not f.external_id:
                # §4 "Only external ids are supported. Don't use record ids".
                raise _HttpError(400, "INVALID_FIELD",
                                 f"Field name provided, {field_name} is not an External ID or indexed field for {obj}")
            for r in records:
                t = r.get("attributes", {}).get("type") if isinstance(r, dict) else None
                if t is not None and self.store._object_name(str(t)) != obj:
                    raise _HttpError(400, "INVALID_TYPE", "All records must be of the type in the URL (single type)")
            with self.store.transaction() as rollback:
                results = []
                failed = False
                for r in records:
                    payload = {k: v for k, v in r.items() if k != "attributes"} if isinstance(r, dict) else {}
                    value = next((v for k, v in payload.items() if k.lower() == f.name.lower()), None)
                    if value in (None, ""):
                        results.append({"id": None, "success": False, "created": False, "errors": [SaveError(
                            "MISSING_ARGUMENT", f"{f.name} not specified", (f.name,)).as_save()]})
                        failed = True
                        continue
                    rid, created, errors = self._upsert_core(ctx, obj, f, value, payload)
                    failed = failed or bool(errors)
                    results.append({"id": rid if not errors else None, "success": not errors, "created": created
                                    and not errors, "errors": [e.as_save() for e in errors]})
                if all_or_none and failed:
                    rollback()
                    for res in results:
                        if res["success"]:
                            res.update(id=None, success=False, created=False, errors=[SaveError(
                                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                "Record rolled back because not all records were valid and the request was using "
                                "AllOrNone header").as_save()])
        return _Result(200, results)

    # -- Composite (§4) -----------------------------------------------------------------------

    def _composite(self, ctx: _Ctx, body: Any) -> _Result:
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise _HttpError(400, "JSON_PARSER_ERROR", "The request body must hold a 'compositeRequest' array")
        subs = body["compositeRequest"]
        all_or_none = bool(body.get("allOrNone", False))
        if len(subs) > COMPOSITE_MAX:
            raise _HttpError(400, "INVALID_API_INPUT",
                             f"Composite request may only have {COMPOSITE_MAX} subrequests; it has {len(subs)}")
        parsed: list[tuple[str, str, list[str], str, Any]] = []
        seen: set[str] = set()
        heavy = 0
        for sub in subs:
            if not isinstance(sub, dict):
                raise _HttpError(400, "JSON_PARSER_ERROR", "Each subrequest must be a JSON object")
            ref = sub.get("referenceId")
            method = str(sub.get("method", "")).upper()
            url = sub.get("url")
            if not isinstance(ref, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", ref):
                raise _HttpError(400, "INVALID_API_INPUT", f"Invalid referenceId: {ref!r}")
            if ref in seen:
                raise _HttpError(400, "INVALID_API_INPUT", f"Duplicate referenceId provided in the request: {ref}")
            seen.add(ref)
            if method not in ("GET", "POST", "PATCH", "PUT", "DELETE") or not isinstance(url, str):
                raise _HttpError(400, "INVALID_API_INPUT", f"Subrequest {ref} needs a method and a url")
            path = urllib.parse.urlsplit(url).path
            m = _VERSION_RE.match(path.rstrip("/"))
            if not m:
                raise _HttpError(400, "INVALID_API_INPUT", f"The url of subrequest {ref} must start with "
                                 "/services/data/vXX.X/")
            sub_parts = [p for p in (m.group(2) or "").split("/") if p]
            head = sub_parts[0] if sub_parts else ""
            if head not in ("sobjects", "query", "queryAll", "composite") or (
                    head == "composite" and (len(sub_parts) < 2 or sub_parts[1] != "sobjects")):
                raise _HttpError(400, "INVALID_API_INPUT",
                                 f"The composite request contains an unsupported resource: {url}")
            if head in ("query", "queryAll") or head == "composite":
                heavy += 1
            parsed.append((ref, method, sub_parts, url, sub.get("body")))
        if heavy > COMPOSITE_MAX_QUERY_OR_COLLECTION:
            raise _HttpError(400, "INVALID_API_INPUT",
                             f"Composite request may contain at most {COMPOSITE_MAX_QUERY_OR_COLLECTION} sObject "
                             "Collections or query subrequests")

        results: dict[str, Any] = {}
        responses: list[dict[str, Any]] = []
        halted = [{"errorCode": "PROCESSING_HALTED",
                   "message": "The transaction was rolled back since another operation in the same transaction "
                              "failed."}]
        with self.store.transaction() as rollback:
            failed_at: int | None = None
            for i, (ref, method, _parts, url, sub_body) in enumerate(parsed):
                try:
                    url2 = self._substitute(url, results, in_url=True)
                    body2 = self._substitute(sub_body, results)
                except LookupError as e:
                    res = _Result(400, [{"errorCode": "PROCESSING_HALTED", "message": str(e)}])
                else:
                    split = urllib.parse.urlsplit(url2)
                    m = _VERSION_RE.match(split.path.rstrip("/"))
                    assert m is not None
                    sub_parts = [urllib.parse.unquote(p) if j < 3 else p
                                 for j, p in enumerate(x for x in (m.group(2) or "").split("/") if x)]
                    sub_ctx = replace(ctx, version=m.group(1), vnum=float(m.group(1)),
                                      force_all_or_none=all_or_none, in_composite=True)
                    self.store._count("composite." + _kind(sub_parts, method))
                    try:
                        if float(m.group(1)) < MIN_API_VERSION:
                            raise _not_found()
                        res = self._route(sub_ctx, method, sub_parts,
                                          urllib.parse.parse_qsl(split.query, keep_blank_values=True),
                                          body2, True, "application/json", {})
                    except _HttpError as e:
                        res = _Result(e.status, e.body())
                results[ref] = res.payload
                responses.append({"body": res.payload if res.status != 204 else None,
                                  "httpHeaders": {k: v for k, v in res.headers.items() if k == "Location"},
                                  "httpStatusCode": res.status, "referenceId": ref})
                # Under an outer allOrNone a collection that rolled back records fails the transaction too.
                rolled = all_or_none and isinstance(res.payload, list) and any(
                    isinstance(x, dict) and x.get("success") is False for x in res.payload)
                if res.status >= 400 or rolled:
                    results[ref] = None
                    if all_or_none:
                        failed_at = i
                        break
            if failed_at is not None:
                rollback()
                for j, r in enumerate(responses):
                    if j != failed_at:
                        r.update(body=halted, httpHeaders={}, httpStatusCode=400)
                for ref, *_ in parsed[failed_at + 1:]:
                    responses.append({"body": halted, "httpHeaders": {}, "httpStatusCode": 400, "referenceId": ref})
        return _Result(200, {"compositeResponse": responses})

    @staticmethod
    def _resolve_ref(results: Mapping[str, Any], ref: str, path: str) -> Any:
        if ref not in results or results[ref] is None:
            raise LookupError(f"Invalid reference specified. No value for {ref}{path} found in {ref}. Provided "
                              f"referenceId ('{ref}') might be incorrect or might not be specified in a previous "
                              "subrequest.")
        cur = results[ref]
        for step in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", path):
            name, idx = step
            try:
                cur = cur[int(idx)] if idx else cur[name]
            except (KeyError, IndexError, TypeError):
                raise LookupError(f"Invalid reference specified. No value for {ref}{path} found in {ref}.") from None
        return cur

    def _substitute(self, value: Any, results: Mapping[str, Any], *, in_url: bool = False) -> Any:
        if isinstance(value, str):
            whole = _REF_RE.fullmatch(value)
            if whole and not in_url:
                return self._resolve_ref(results, whole.group(1), whole.group(2))
            return _REF_RE.sub(lambda mm: str(self._resolve_ref(results, mm.group(1), mm.group(2))), value)
        if isinstance(value, list):
            return [self._substitute(v, results) for v in value]
        if isinstance(value, dict):
            return {k: self._substitute(v, results) for k, v in value.items()}
        return value

    # -- query and search ------------------------------------------------------------------------

    def _query(self, ctx: _Ctx, text: str | None, headers: Mapping[str, str]) -> _Result:
        if not text:
            raise _HttpError(400, "MALFORMED_QUERY", "A query string has to be specified")
        batch = self.store.options.query_batch_size
        opts = headers.get("sforce-query-options", "")
        m = re.search(r"batchSize=(\d+)", opts)
        if m:
            batch = max(200, min(2000, int(m.group(1))))
        try:
            query = soql.parse_soql(text, now=self.store.now())
            with self.store.lock:
                result = soql.run_soql(query, self.store.source, url_prefix=ctx.url_prefix)
        except soql.QueryError as e:
            raise _HttpError(400, e.code, e.message) from None
        if query.is_count or len(result.records) <= batch:
            return _Result(200, {"totalSize": result.total_size, "done": True, "records": result.records})
        with self._mutex:
            self._locator_seq += 1
            body = f"{self._locator_seq:012d}"
            qid = soql.id15_to_18(QUERY_LOCATOR_PREFIX + body)[:15] + "IAW"
            self._locators[qid] = (ctx.user_id, result.records)
            # Salesforce keeps at most 10 open cursors per user: the oldest is dropped.
            mine = [k for k, (u, _r) in self._locators.items() if u == ctx.user_id]
            for old in mine[:-10]:
                del self._locators[old]
        return _Result(200, {"totalSize": result.total_size, "done": False,
                             "nextRecordsUrl": f"{ctx.url_prefix}/query/{qid}-{batch}",
                             "records": result.records[:batch]})

    def _query_more(self, ctx: _Ctx, locator: str) -> _Result:
        qid, _, offset_text = locator.partition("-")
        with self._mutex:
            hit = self._locators.get(qid)
        if hit is None or not offset_text.isdigit() or hit[0] != ctx.user_id:
            raise _HttpError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        records = hit[1]
        offset = int(offset_text)
        batch = self.store.options.query_batch_size
        page = records[offset:offset + batch]
        nxt = offset + batch
        body: dict[str, Any] = {"totalSize": len(records), "done": nxt >= len(records), "records": page}
        if nxt < len(records):
            body["nextRecordsUrl"] = f"{ctx.url_prefix}/query/{qid}-{nxt}"
        else:
            with self._mutex:
                self._locators.pop(qid, None)
        return _Result(200, body)

    def _search(self, ctx: _Ctx, text: str | None) -> _Result:
        if not text:
            raise _HttpError(400, "MALFORMED_SEARCH",
                             "No search term found. The search term must be enclosed in braces.")
        try:
            query = soql.parse_sosl(text, now=self.store.now())
            with self.store.lock:
                rows = soql.run_sosl(query, self.store.source, url_prefix=ctx.url_prefix)
        except soql.QueryError as e:
            raise _HttpError(400, e.code, e.message) from None
        return _Result(200, {"searchRecords": rows})

    # -- Bulk API 2.0 ingest (§4) ---------------------------------------------------------------

    def _bulk(self, ctx: _Ctx, method: str, parts: list[str], body: bytes, content_type: str) -> _Result:
        base = f"{ctx.url_prefix}"
        if not parts:
            if method == "GET":
                with self._mutex:
                    jobs = [j.info(base) for j in self._jobs.values()]
                return _Result(200, {"done": True, "records": jobs, "nextRecordsUrl": None})
            if method != "POST":
                raise _HttpError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET,POST",
                                 ("GET", "POST"))
            return self._bulk_create(ctx, self._json(body, False))
        with self._mutex:
            job = self._jobs.get(parts[0])
        if job is None:
            raise _HttpError(404, "NOT_FOUND", f"Job with id {parts[0]} not found")
        if len(parts) == 1:
            if method == "GET":
                return _Result(200, job.info(base))
            if method == "DELETE":
                if job.state not in ("UploadComplete", "JobComplete", "Aborted", "Failed"):
                    raise _HttpError(400, "INVALIDJOBSTATE", "Job must be closed, aborted or complete to delete it")
                with self._mutex:
                    del self._jobs[job.id]
                return _Result(204)
            if method == "PATCH":
                return self._bulk_state(ctx, job, self._json(body, False))
            raise _HttpError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are "
                             "GET,PATCH,DELETE", ("GET", "PATCH", "DELETE"))
        what = parts[1]
        if what == "batches" and len(parts) == 2:
            if method != "PUT":
                raise _HttpError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are PUT",
                                 ("PUT",))
            if "csv" not in content_type.lower():
                raise _HttpError(400, "INVALIDCONTENTTYPE", "Content-Type must be text/csv")
            with self._mutex:
                if job.state != "Open":
                    raise _HttpError(409, "INVALIDJOBSTATE", f"Job {job.id} is not Open (state {job.state})")
                if job.data is not None:
                    raise _HttpError(400, "BULK_API_ERROR", f"Found multiple contents for job: <{job.id}>, please "
                                     "'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make "
                                     "sure you only do 'PUT' once on a given Job.")
                if len(body) > 150 * 1024 * 1024:
                    raise _HttpError(400, "BULK_API_ERROR", "The upload exceeds the 150 MB limit of a job")
                job.data = body
            return _Result(201)
        if len(parts) == 2 and what in ("successfulResults", "failedResults", "unprocessedrecords"):
            if method != "GET":
                raise _HttpError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET",
                                 ("GET",))
            state = job.visible_state()
            if what != "unprocessedrecords" and state not in ("JobComplete", "Failed"):
                raise _HttpError(400, "INVALIDJOBSTATE", f"Job {job.id} is not complete (state {state})")
            if what == "successfulResults":
                raw = _csv_out(["sf__Id", "sf__Created", *job.header],
                               ([rid, "true" if created else "false", *row] for rid, created, row in job.successful))
                count = len(job.successful)
            elif what == "failedResults":
                raw = _csv_out(["sf__Id", "sf__Error", *job.header],
                               ([rid, err, *row] for rid, err, row in job.failed))
                count = len(job.failed)
            else:
                raw = _csv_out(job.unprocessed_header or job.header, job.unprocessed)
                count = len(job.unprocessed)
            return _Result(200, raw=raw, content_type="text/csv",
                           headers={"Sforce-Locator": "null", "Sforce-NumberOfRecords": str(count)})
        raise _not_found()

    def _bulk_create(self, ctx: _Ctx, spec: Any) -> _Result:
        if not isinstance(spec, dict):
            raise _HttpError(400, "JSON_PARSER_ERROR", "The job must be a JSON object")
        obj = self.store._object_name(str(spec.get("object", "")))
        operation = spec.get("operation")
        if obj is None:
            raise _HttpError(400, "INVALIDJOB", f"InvalidJob : Invalid object: {spec.get('object')}")
        if operation not in ("insert", "update", "upsert", "delete", "hardDelete"):
            raise _HttpError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        ext = spec.get("externalIdFieldName")
        if operation == "upsert":
            f = self.store.schema[obj].field(str(ext or ""))
            if not ext or f is None or not (f.external_id or f.id_lookup or f.name == "Id"):
                raise _HttpError(400, "INVALIDJOB", f"InvalidJob : External ID was blank or is not an external id "
                                 f"field for {obj}: {ext}")
            ext = f.name
        if spec.get("contentType", "CSV") != "CSV":
            raise _HttpError(400, "INVALIDJOB", "InvalidJob : contentType must be CSV")
        line_ending = spec.get("lineEnding", "LF")
        delimiter = spec.get("columnDelimiter", "COMMA")
        if line_ending not in _LINE_ENDINGS or delimiter not in _DELIMITERS:
            raise _HttpError(400, "INVALIDJOB", "InvalidJob : invalid lineEnding or columnDelimiter")
        with self._mutex:
            self._job_seq += 1
            body = ""
            n = self._job_seq
            for _ in range(9):
                n, r = divmod(n, 62)
                body = _BASE62[r] + body
            jid = soql.id15_to_18(JOB_PREFIX + "8d0" + body)
            job = _Job(jid, obj, str(operation), ext if operation == "upsert" else None, line_ending, delimiter,
                       ctx.user_id, format_datetime(self.store.now()), ctx.vnum)
            self._jobs[jid] = job
        return _Result(200, job.info(ctx.url_prefix))

    def _bulk_state(self, ctx: _Ctx, job: _Job, body: Any) -> _Result:
        state = body.get("state") if isinstance(body, dict) else None
        with self._mutex:
            if state == "Aborted" and job.state in ("Open", "UploadComplete"):
                job.state = "Aborted"
                if job.data:
                    try:
                        rows = _split_csv(job.data.decode("utf-8-sig"), _DELIMITERS[job.column_delimiter],
                                          _LINE_ENDINGS[job.line_ending])
                    except (UnicodeDecodeError, ValueError):
                        rows = []
                    if rows:
                        job.header, job.unprocessed = rows[0], rows[1:]
                return _Result(200, job.info(ctx.url_prefix))
            if state != "UploadComplete" or job.state != "Open":
                raise _HttpError(400, "INVALIDJOBSTATE", f"Invalid state change from {job.state} to {state}")
            job.state = "UploadComplete"
            info = job.info(ctx.url_prefix)
        # Terminal states stay hidden behind "InProgress" until ready_at (set before they are).
        job.ready_at = time.monotonic() + 3600.0
        # Salesforce processes a closed job on its own; the client polls GET /{id} (salesforce-api.md,
        # Bulk API 2.0): the answer to this PATCH does not wait for the rows.
        threading.Thread(target=self._bulk_run, args=(ctx, job), name=f"bulk-{job.id}", daemon=True).start()
        return _Result(200, info)

    def _bulk_run(self, ctx: _Ctx, job: _Job) -> None:
        if self.bulk_queue_delay:
            time.sleep(self.bulk_queue_delay)  # a closed job waits in Salesforce's queue before it starts
        started = time.monotonic()
        try:
            self._bulk_process(ctx, job)
        except Exception:  # noqa: BLE001 - an emulator bug: the job fails visibly, and is counted
            self.bulk_errors.append(traceback.format_exc())
            job.state = "Failed"
            job.error_message = "InternalServerError : the emulator failed while processing the job"
        job.processing_ms = int((time.monotonic() - started) * 1000)
        job.ready_at = time.monotonic() + self.bulk_processing_delay

    def _bulk_process(self, ctx: _Ctx, job: _Job) -> None:
        """Run the job's rows through the same validation as collections."""
        if not job.data:
            job.state = "Failed"
            job.error_message = "InvalidBatch : No content uploaded for the job"
            return
        try:
            text = job.data.decode("utf-8-sig")
            rows = _split_csv(text, _DELIMITERS[job.column_delimiter], _LINE_ENDINGS[job.line_ending])
        except (UnicodeDecodeError, ValueError) as e:
            job.state = "Failed"
            job.error_message = f"InvalidBatch : Failed to parse CSV: {e}"
            return
        if not rows:
            job.state = "Failed"
            job.error_message = "InvalidBatch : No content uploaded for the job"
            return
        header = rows[0]
        data_rows = rows[1:]
        job.header = header
        odef = self.store.schema[job.object]
        fields: list[str] = []
        for name in header:
            f = odef.field(name)
            if f is None:
                # A mismatched lineEnding leaves CR or whole data lines inside the header: this is
                # how Salesforce reports it too (the job fails, nothing is processed).
                job.state = "Failed"
                job.error_message = f"InvalidBatch : Field name not found : {name}"
                job.unprocessed_header = header
                job.unprocessed = [r for r in data_rows]
                return
            fields.append(f.name)
        for row in data_rows:
            if len(row) != len(header):
                job.failed.append(("", "TooManyOrTooFewFields:The number of values does not match the header --", row))
                continue
            payload = dict(zip(fields, row, strict=True))
            with self.store.lock:
                rid, created, errors = self._bulk_row(ctx, job, payload)
            if errors:
                e = errors[0]
                job.failed.append((rid or "", f"{e.status_code}:{e.message}:{','.join(e.fields)} --", row))
            else:
                job.successful.append((rid or "", created, row))
        job.state = "JobComplete"

    def _bulk_row(self, ctx: _Ctx, job: _Job, payload: dict[str, Any]) -> tuple[str | None, bool, list[SaveError]]:
        obj = job.object
        op = job.operation
        rid = payload.get("Id") or None
        if op in ("delete", "hardDelete"):
            hit = self.store.resolve(rid) if rid else None
            if hit is None or hit[0] != obj:
                return rid, False, [SaveError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")]
            lock = self._lock_error(hit[1], hit[1]["Id"])
            if lock:
                return rid, False, [lock]
            self.store.api_delete(obj, hit[1]["Id"])
            return hit[1]["Id"], False, []
        if op == "upsert" and job.external_id_field and job.external_id_field != "Id":
            f = self.store.schema[obj].fields[job.external_id_field]
            value = payload.get(f.name)
            if not value:
                return None, False, [SaveError("MISSING_ARGUMENT", f"{f.name} not specified", (f.name,))]
            hits = self._matches(obj, f, value)
            if len(hits) > 1:
                return None, False, [SaveError("DUPLICATE_EXTERNAL_ID", f"{f.display_label}: more than one record "
                                               f"found for external id field: {[h['Id'] for h in hits]}", (f.name,))]
            if hits:
                rid = hits[0]["Id"]
                payload = {k: v for k, v in payload.items() if k != f.name}
            else:
                rid = None
        if op == "update" and not rid:
            return None, False, [SaveError("MISSING_ARGUMENT", "Id not specified in an update call")]
        body = {k: v for k, v in payload.items() if k != "Id"}
        if op == "insert" and rid:
            return None, False, [SaveError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call",
                                           ("Id",))]
        if rid:
            hit = self.store.resolve(rid)
            if hit is None or hit[0] != obj:
                return rid, False, [SaveError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")]
            # In Bulk an empty cell leaves the field unchanged; #N/A clears it.
            body = {k: v for k, v in body.items() if v != ""}
            values, errors = self.store.prepare(obj, body, user_id=ctx.user_id, version=ctx.vnum,
                                                existing=hit[1], from_csv=True)
            if not errors:
                lock = self._lock_error(hit[1], hit[1]["Id"])
                errors = [lock] if lock else []
            if errors:
                return hit[1]["Id"], False, errors
            self.store.api_update(obj, hit[1]["Id"], values, ctx.user_id)
            return hit[1]["Id"], False, []
        body = {k: v for k, v in body.items() if v != ""}
        values, errors = self.store.prepare(obj, body, user_id=ctx.user_id, version=ctx.vnum, from_csv=True)
        if not errors:
            lock = self._lock_error(values, None)
            errors = [lock] if lock else []
        if errors:
            return None, False, errors
        return self.store.api_create(obj, values, ctx.user_id), True, []


def _kind(parts: Sequence[str], method: str) -> str:
    """The request counter a data request belongs to (SalesforceStore.counts)."""
    head = parts[0] if parts else ""
    if head == "sobjects":
        if len(parts) == 1 or (len(parts) == 3 and parts[2] == "describe") or (len(parts) == 2 and method == "GET"):
            return "describe"
        return "record"
    if head in ("query", "queryAll"):
        return "query"
    if head == "search":
        return "search"
    if head == "composite":
        return "composite" if len(parts) == 1 else "collections"
    if head == "jobs":
        return "bulk"
    if head == "limits":
        return "limits"
    return "other"


# --------------------------------------------------------------------------
# Starting a sandbox
# --------------------------------------------------------------------------


class SalesforceSandbox(tuple):  # type: ignore[type-arg]
    """``(server, store, ca_path)``, plus ``app``, ``summary`` (the seed), ``tls`` and ``url``."""

    app: SalesforceApp
    summary: Any
    tls: Any

    def __new__(cls, server: Any, store: SalesforceStore, ca_path: str, app: SalesforceApp, summary: Any,
                tls: Any) -> SalesforceSandbox:
        self = super().__new__(cls, (server, store, ca_path))
        self.app = app
        self.summary = summary
        self.tls = tls
        return self

    @property
    def server(self) -> Any:
        return self[0]

    @property
    def store(self) -> SalesforceStore:
        return self[1]

    @property
    def ca_path(self) -> str:
        return self[2]

    @property
    def url(self) -> str:
        return str(self[0].url)

    def stop(self) -> None:
        self[0].stop()


def start_salesforce_sandbox(
    tls_dir: str | Any,
    port: int = 0,
    *,
    seed: int = 0,
    external_numbers: Sequence[str] = (),
    users: Sequence[Mapping[str, str]] = (),
    options: OrgOptions | None = None,
    auth: AuthConfig | None = None,
    faults: SalesforceFaults | None = None,
    http_faults: Any = None,
    now: datetime | None = None,
    clock: Callable[[], datetime] | None = None,
    host: str = "127.0.0.1",
    bulk_processing_delay: float = 0.0,
    unknown_share: float = 0.35,
) -> SalesforceSandbox:
    """Build the TLS files, the org, seed it, mount the app at the root of a LoopbackServer and start it.

    Returns ``(server, store, ca_path)`` (a tuple subclass that also carries
    ``.app``, ``.summary`` and ``.url``). ``ca_path`` is what the tool's
    ``salesforce.ca_bundle`` points at; ``server.url`` is the ``instance_url``.
    """
    from aircall_sync.sandbox.salesforce_seed import seed_org
    from aircall_sync.sandbox.server import LoopbackServer
    from aircall_sync.sandbox.tls import ensure_tls_files, server_ssl_context

    files = ensure_tls_files(tls_dir)
    store = SalesforceStore(options, clock=clock)
    summary = seed_org(store, seed, external_numbers, users, now=now, unknown_share=unknown_share)
    app = SalesforceApp(store, auth=auth, faults=faults, bulk_processing_delay=bulk_processing_delay)
    server = LoopbackServer(host=host, port=port, ssl_context=server_ssl_context(files), faults=http_faults)
    server.mount(app, api="salesforce", prefix="")
    server.start()
    return SalesforceSandbox(server, store, str(files.ca_cert), app, summary, files)
