"""The SOQL and SOSL subset the Salesforce emulator understands.

Follows ``shared/reference/salesforce-api.md``:

- §5 (SOSL): ``FIND {terms} IN PHONE FIELDS RETURNING Obj(fields [WHERE …]
  [ORDER BY …] [LIMIT n]), …`` with ``OR`` between terms, quoted phrases and
  backslash-escaped reserved characters (``? & | ! { } [ ] ( ) ^ ~ * : \\ " ' + -``);
  a search query longer than 10,000 characters returns no rows, one longer than
  4,000 has its logical operators dropped (``AND`` read as ``OR``); at most
  2,000 rows overall;
- §6 and the queries quoted throughout (``SELECT Id FROM Task WHERE CallObject
  = :id``, ``… WHERE ContactId = :id AND IsClosed = false ORDER BY
  LastModifiedDate DESC``, ``… FROM OpportunityContactRole WHERE ContactId=:id
  AND Opportunity.IsClosed=false``): ``SELECT`` fields and ``COUNT()``, parent
  relationship paths (``Account.Name``, ``Owner.Email``), ``WHERE`` with
  ``AND``/``OR``/``NOT``/parentheses, ``= != <> < > <= >=``, ``IN``/``NOT IN``,
  ``LIKE``, ``null``, booleans, quoted strings with the SOQL escapes that
  simple-salesforce's ``format_soql`` produces (§4 "format_soql() escapes SOQL
  values (and LIKE)"), numbers, date and date-time literals, the relative date
  literals ``TODAY``/``YESTERDAY``/``TOMORROW``/``LAST_N_DAYS:n``/
  ``NEXT_N_DAYS:n``/``N_DAYS_AGO:n``; ``ORDER BY f [ASC|DESC] [NULLS
  FIRST|LAST]``, ``LIMIT``, ``OFFSET``.

Anything outside the subset (``GROUP BY``, sub-queries, semi-joins,
``TYPEOF``…) is refused as ``MALFORMED_QUERY`` naming the token: the emulator
must never silently answer a query it does not understand.

Strict choices where the reference is silent (each also noted at the code):

- mixing ``AND`` and ``OR`` at one level without parentheses is refused, as
  SOQL does ("unexpected token: 'OR'");
- string comparisons (``=``, ``IN``, ``LIKE``, ordering) ignore case, like
  SOQL on text fields; ``!=`` and ``NOT IN`` are true for null values (SOQL
  treats null as a value, not as SQL's unknown);
- a filter value must match the field's type (no quotes around booleans,
  numbers and dates; a date-time literal for a dateTime field); Id and
  reference filters must be well-formed 15/18-character ids;
- long text areas (``Description``) can't be filtered or sorted (§1: the
  field lacks the Filter/Sort properties).

SOSL phone matching (§5 calls the real semantics **UNCONFIRMED**): a term
matches a phone field when the term's digits equal the field value's digits,
exactly. ``6176105413`` matches ``(617) 610-5413`` and ``617.610.5413``;
``16176105413`` matches ``+1 617-610-5413``; ``+16176105413`` does **not**
match ``(617) 610-5413`` (11 digits against 10). A trailing ``*`` makes the
term a digit prefix. Unquoted words separated by spaces are separate terms
joined by an implicit AND (as SOSL reads them), so ``617 610 5413`` matches
nothing while ``"617 610 5413"`` matches ``6176105413``.

The module only parses and evaluates; the emulator supplies the data through
the small :class:`DataSource` protocol.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

__all__ = [
    "DataSource",
    "FieldLike",
    "QueryError",
    "SoqlQuery",
    "SoslQuery",
    "digits",
    "id15_to_18",
    "is_salesforce_id",
    "normalize_id",
    "parse_datetime",
    "parse_soql",
    "parse_sosl",
    "run_soql",
    "run_sosl",
]

# §5 limits.
SOSL_NO_ROWS_OVER = 10_000
SOSL_OPS_DROPPED_OVER = 4_000
SOSL_MAX_ROWS = 2_000
# SOQL OFFSET ceiling (Salesforce refuses larger offsets with
# NUMBER_OUTSIDE_VALID_RANGE; the number is the documented 2,000).
MAX_OFFSET = 2_000


class QueryError(Exception):
    """A query the emulator refuses, with the Salesforce ``errorCode``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------
# Ids
# --------------------------------------------------------------------------

_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_CHECKSUM_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


# Ids are checked and canonicalised on every reference of every write: memoised (pure functions).
@functools.lru_cache(maxsize=65536)
def id15_to_18(id15: str) -> str:
    """Append Salesforce's case-encoding checksum to a 15-character id."""
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(id15[chunk * 5:chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        suffix += _CHECKSUM_CHARS[bits]
    return id15 + suffix


def is_salesforce_id(value: object) -> bool:
    """Well-formed 15- or 18-character id (the 18-character checksum must agree, in any case)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        return False
    if len(value) == 15:
        return True
    canonical = normalize_id(value)
    return id15_to_18(canonical[:15]) == canonical


@functools.lru_cache(maxsize=65536)
def normalize_id(value: str) -> str:
    """The canonical 18-character form.

    A 15-character id is case-sensitive and gets its checksum; an
    18-character id is case-insensitive: its checksum says which of the first
    15 characters are upper case.
    """
    if len(value) == 15:
        return id15_to_18(value)
    body = list(value[:15].lower())
    suffix = value[15:].upper()
    for chunk, ch in enumerate(suffix):
        bits = _CHECKSUM_CHARS.find(ch)
        if bits < 0:
            return value
        for i in range(5):
            if bits & (1 << i):
                body[chunk * 5 + i] = body[chunk * 5 + i].upper()
    return "".join(body) + suffix


def digits(value: object) -> str:
    return _digits_of(str(value)) if value is not None else ""


@functools.lru_cache(maxsize=65536)
def _digits_of(text: str) -> str:
    # Searches compare the same phone values and terms again and again.
    return "".join(c for c in text if c.isdigit())


# --------------------------------------------------------------------------
# Date-times as Salesforce writes them
# --------------------------------------------------------------------------

_DT_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_datetime(text: str, *, require_zone: bool = False) -> datetime:
    """Parse the date-time spellings Salesforce accepts; naive = UTC.

    Raises ``ValueError`` on anything else.
    """
    m = _DT_RE.match(text.strip())
    if not m:
        raise ValueError(text)
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    if zone is None and require_zone:
        raise ValueError(text)
    micro = int((frac or "0")[:6].ljust(6, "0"))
    dt = datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss or 0), micro, tzinfo=UTC)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        z = zone[1:].replace(":", "")
        offset = timedelta(hours=int(z[:2]), minutes=int(z[2:4] or 0))
        dt = dt - sign * offset
    return dt


# --------------------------------------------------------------------------
# What the emulator provides
# --------------------------------------------------------------------------


class FieldLike(Protocol):
    name: str
    type: str
    filterable: bool
    sortable: bool
    reference_to: tuple[str, ...]
    relationship_name: str | None


class DataSource(Protocol):
    def resolve_object(self, name: str) -> str | None:
        """Canonical object name for ``name`` (any case), or None."""

    def field(self, obj: str, name: str) -> FieldLike | None:
        """A field of ``obj`` by name (any case), or None if the org lacks it."""

    def relationship(self, obj: str, name: str) -> FieldLike | None:
        """The reference field whose relationship name is ``name`` (any case)."""

    def scan(self, obj: str) -> Iterable[Mapping[str, Any]]:
        """Every record of ``obj``."""

    def lookup(self, obj: str, field: str, values: Sequence[str]) -> Iterable[Mapping[str, Any]] | None:
        """Records of ``obj`` whose ``field`` equals one of ``values`` (case-
        insensitive), or None when the source has no fast path for ``field``."""

    def get(self, record_id: str) -> tuple[str, Mapping[str, Any]] | None:
        """(object, record) for an id, for relationship paths."""

    def phone_fields(self, obj: str) -> Sequence[str]:
        """The fields ``IN PHONE FIELDS`` searches on ``obj``."""

    def text_fields(self, obj: str, scope: str) -> Sequence[str]:
        """The fields ``IN NAME|EMAIL|ALL FIELDS`` searches on ``obj``."""

    def phone_lookup(self, obj: str, digit_string: str) -> Iterable[Mapping[str, Any]] | None:
        """Records of ``obj`` with a phone field whose digits equal ``digit_string``,
        or None when the source has no index (then every record is scanned)."""


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, string, number, date, datetime, op, punct, eof
    text: str
    value: Any = None
    pos: int = 0
    like: str | None = None  # regex for a string token used with LIKE


_STRING_ESCAPES = {
    "n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t",
    "b": "\b", "B": "\b", "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\",
}

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
  | (?P<number>[+-]?\d+(?:\.\d+)?(?![\w.]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?::\d+)?)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


def _read_string(text: str, start: int) -> tuple[Token, int]:
    """A single-quoted SOQL string literal starting at ``text[start] == "'"``."""
    end = text.find("'", start + 1)
    if end > 0 and "\\" not in text[start + 1:end]:
        # No escapes (the common case, e.g. a long IN list of phone numbers): the text as is.
        body = text[start + 1:end]
        like = re.escape(body).replace("%", ".*").replace("_", ".")
        return Token("string", text[start:end + 1], body, start, like), end + 1
    out: list[str] = []
    like: list[str] = []
    plain_only_issue: str | None = None
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "'":
            # A literal holding LIKE-only escapes is only valid after LIKE.
            kind = "string" if plain_only_issue is None else "likestring"
            return Token(kind, text[start:i + 1], "".join(out), start, "".join(like)), i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[nxt])
                like.append(re.escape(_STRING_ESCAPES[nxt]))
            elif nxt in "_%":
                # §4: LIKE-only escapes; format_soql(':like') produces them.
                plain_only_issue = nxt
                out.append(nxt)
                like.append(re.escape(nxt))
            else:
                raise QueryError(
                    "MALFORMED_QUERY",
                    f"Invalid string literal '{text[start:i + 2]}…'. Illegal character sequence "
                    f"'\\{nxt}' in string literal.",
                )
            i += 2
            continue
        out.append(ch)
        like.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    raise QueryError("MALFORMED_QUERY", f"unterminated string literal at position {start}")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "'":
            tok, i = _read_string(text, i)
            tokens.append(tok)
            continue
        if ch == '"':
            raise QueryError("MALFORMED_QUERY", "unexpected token: '\"' (SOQL strings use single quotes)")
        m = _TOKEN_RE.match(text, i)
        if not m or m.end() == i:
            raise QueryError("MALFORMED_QUERY", f"unexpected token: '{text[i:i + 20]}'")
        kind = m.lastgroup
        assert kind is not None
        raw = m.group(kind)
        if kind != "ws":
            value: Any = raw
            if kind == "number":
                value = float(raw) if "." in raw else int(raw)
            elif kind == "date":
                try:
                    value = date.fromisoformat(raw)
                except ValueError:
                    raise QueryError("MALFORMED_QUERY", f"invalid date literal: {raw}") from None
            elif kind == "datetime":
                try:
                    value = parse_datetime(raw, require_zone=True)
                except ValueError:
                    raise QueryError("MALFORMED_QUERY", f"invalid date-time literal: {raw}") from None
            tokens.append(Token(kind, raw, value, i))
        i = m.end()
    tokens.append(Token("eof", "", None, n))
    return tokens


# --------------------------------------------------------------------------
# SOQL syntax tree
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DateRange:
    """A relative date literal: the half-open day range [start, end)."""

    text: str
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class Cond:
    path: str
    op: str  # = != < > <= >= IN NOTIN LIKE
    value: Any  # literal, list of literals, or a Token for LIKE/strings
    raw: tuple[Token, ...]


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # AND / OR
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Any


@dataclass(frozen=True, slots=True)
class OrderItem:
    path: str
    descending: bool
    nulls_last: bool


@dataclass(frozen=True, slots=True)
class SelectItem:
    path: str | None  # None for COUNT()
    count: bool = False
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class SoqlQuery:
    text: str
    select: tuple[SelectItem, ...]
    sobject: str
    where: Any
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None

    @property
    def is_count(self) -> bool:
        return any(s.count for s in self.select)


_KEYWORDS = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC",
    "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "TRUE", "FALSE", "NULL",
}
_UNSUPPORTED = {"GROUP", "HAVING", "WITH", "FOR", "TYPEOF", "USING", "INCLUDES", "EXCLUDES", "ROLLUP", "CUBE"}


class _Parser:
    def __init__(self, text: str, tokens: list[Token], *, now: datetime | None = None) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.now = now

    # -- helpers -------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def kw(self, word: str) -> bool:
        t = self.tok
        return t.kind == "ident" and t.text.upper() == word

    def take_kw(self, word: str) -> bool:
        if self.kw(word):
            self.i += 1
            return True
        return False

    def expect_kw(self, word: str) -> None:
        if not self.take_kw(word):
            self.fail(f"expecting '{word}'")

    def punct(self, ch: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text == ch

    def expect_punct(self, ch: str) -> None:
        if not self.punct(ch):
            self.fail(f"expecting '{ch}'")
        self.i += 1

    def fail(self, why: str = "") -> None:
        t = self.tok
        shown = t.text if t.kind != "eof" else "<EOF>"
        extra = ""
        if t.kind == "ident" and t.text.upper() in _UNSUPPORTED:
            extra = " (outside the subset this sandbox emulates)"
        msg = f"unexpected token: '{shown}'{extra}"
        if why:
            msg += f", {why}"
        raise QueryError("MALFORMED_QUERY", f"{self.text}\n^\nERROR at Row:1:Column:{t.pos + 1}\n{msg}")

    def ident(self) -> str:
        t = self.tok
        if t.kind != "ident" or t.text.upper() in _KEYWORDS or ":" in t.text:
            self.fail("expecting a field or object name")
        self.i += 1
        return t.text

    def integer(self) -> int:
        t = self.tok
        if t.kind != "number" or not isinstance(t.value, int) or t.value < 0:
            self.fail("expecting a non-negative integer")
        self.i += 1
        return int(t.value)

    # -- grammar -------------------------------------------------------------

    def query(self) -> SoqlQuery:
        self.expect_kw("SELECT")
        items = [self.select_item()]
        while self.punct(","):
            self.i += 1
            items.append(self.select_item())
        if any(s.count for s in items) and len(items) > 1:
            # COUNT() must stand alone (aggregates with other fields need GROUP BY).
            raise QueryError("MALFORMED_QUERY", "COUNT() must be the only element of the SELECT list")
        self.expect_kw("FROM")
        sobject = self.ident()
        where = None
        if self.take_kw("WHERE"):
            where = self.condition()
        order: list[OrderItem] = []
        if self.take_kw("ORDER"):
            self.expect_kw("BY")
            order.append(self.order_item())
            while self.punct(","):
                self.i += 1
                order.append(self.order_item())
        limit = offset = None
        if self.take_kw("LIMIT"):
            limit = self.integer()
        if self.take_kw("OFFSET"):
            offset = self.integer()
        if self.tok.kind != "eof":
            self.fail()
        return SoqlQuery(self.text, tuple(items), sobject, where, tuple(order), limit, offset)

    def select_item(self) -> SelectItem:
        if self.kw("COUNT") and self.tokens[self.i + 1].kind == "punct" and self.tokens[self.i + 1].text == "(":
            self.i += 2
            path = None
            if not self.punct(")"):
                path = self.ident()
            self.expect_punct(")")
            alias = None
            if self.tok.kind == "ident" and self.tok.text.upper() not in _KEYWORDS:
                alias = self.ident()
            return SelectItem(path, count=True, alias=alias)
        if self.punct("("):
            self.fail("sub-queries are outside the subset this sandbox emulates")
        return SelectItem(self.ident())

    def order_item(self) -> OrderItem:
        path = self.ident()
        desc = False
        if self.take_kw("DESC"):
            desc = True
        else:
            self.take_kw("ASC")
        # SOQL default: nulls first ascending, last descending.
        nulls_last = desc
        if self.take_kw("NULLS"):
            if self.take_kw("LAST"):
                nulls_last = True
            else:
                self.expect_kw("FIRST")
                nulls_last = False
        return OrderItem(path, desc, nulls_last)

    def condition(self) -> Any:
        first = self.unary()
        items = [first]
        op: str | None = None
        while self.kw("AND") or self.kw("OR"):
            this = self.tok.text.upper()
            if op is not None and this != op:
                # SOQL needs parentheses to mix AND and OR.
                self.fail("mixing AND and OR requires parentheses")
            op = this
            self.i += 1
            items.append(self.unary())
        return first if op is None else BoolOp(op, tuple(items))

    def unary(self) -> Any:
        if self.take_kw("NOT"):
            return Not(self.unary())
        if self.punct("("):
            self.i += 1
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Any:
        start = self.i
        path = self.ident()
        if self.kw("NOT") and self.tokens[self.i + 1].kind == "ident" and self.tokens[self.i + 1].text.upper() == "IN":
            self.i += 2
            values = self.value_list()
            return Cond(path, "NOTIN", values, tuple(self.tokens[start:self.i]))
        if self.take_kw("IN"):
            values = self.value_list()
            return Cond(path, "IN", values, tuple(self.tokens[start:self.i]))
        if self.take_kw("LIKE"):
            t = self.tok
            if t.kind not in ("string", "likestring"):
                self.fail("LIKE needs a quoted string")
            self.i += 1
            return Cond(path, "LIKE", t, (t,))
        t = self.tok
        if t.kind != "op":
            self.fail("expecting a comparison operator")
        self.i += 1
        op = "!=" if t.text == "<>" else t.text
        value = self.literal()
        return Cond(path, op, value, tuple(self.tokens[start:self.i]))

    def value_list(self) -> list[Any]:
        self.expect_punct("(")
        if self.kw("SELECT"):
            self.fail("semi-join sub-queries are outside the subset this sandbox emulates")
        values = [self.literal()]
        while self.punct(","):
            self.i += 1
            values.append(self.literal())
        self.expect_punct(")")
        return values

    def literal(self) -> Any:
        t = self.tok
        if t.kind == "likestring":
            self.fail("'\\_' and '\\%' escapes are only valid after LIKE")
        if t.kind in ("string", "number", "date", "datetime"):
            self.i += 1
            return t
        if t.kind == "ident":
            word = t.text.upper()
            if word in ("TRUE", "FALSE"):
                self.i += 1
                return word == "TRUE"
            if word == "NULL":
                self.i += 1
                return None
            rng = _relative_date(word, self.now)
            if rng is not None:
                self.i += 1
                return rng
        self.fail("expecting a literal value")
        raise AssertionError  # unreachable


def _relative_date(word: str, now: datetime | None) -> DateRange | None:
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    name, _, n_text = word.partition(":")
    if name in ("TODAY", "YESTERDAY", "TOMORROW") and not n_text:
        shift = {"TODAY": 0, "YESTERDAY": -1, "TOMORROW": 1}[name]
        d = today + timedelta(days=shift)
        return DateRange(word, d, d + timedelta(days=1))
    if n_text.isdigit():
        n = int(n_text)
        if name == "LAST_N_DAYS":
            return DateRange(word, today - timedelta(days=n), today + timedelta(days=1))
        if name == "NEXT_N_DAYS":
            return DateRange(word, today + timedelta(days=1), today + timedelta(days=n + 1))
        if name == "N_DAYS_AGO":
            d = today - timedelta(days=n)
            return DateRange(word, d, d + timedelta(days=1))
    return None


def parse_soql(text: str, *, now: datetime | None = None) -> SoqlQuery:
    """Parse one SOQL statement (raises :class:`QueryError`)."""
    if not text or not text.strip():
        raise QueryError("MALFORMED_QUERY", "empty query")
    return _Parser(text, tokenize(text), now=now).query()


# --------------------------------------------------------------------------
# Binding a query to the org's schema
# --------------------------------------------------------------------------

_STRINGISH = {"string", "textarea", "phone", "email", "url", "picklist", "multipicklist", "combobox",
              "encryptedstring"}
_IDISH = {"id", "reference"}
_NUMERIC = {"int", "double", "currency", "percent", "long"}


@dataclass(frozen=True, slots=True)
class _Path:
    """A resolved field path: relationship hops, then a field name.

    ``hops`` are (reference field name, relationship name) pairs; polymorphic
    hops resolve the final field per record type at run time.
    """

    hops: tuple[tuple[str, str], ...]
    field_name: str
    field_type: str
    filterable: bool
    sortable: bool
    keys: tuple[str, ...]  # output keys: relationship names then the field name


def _invalid_field(query_text: str, name: str, obj: str) -> QueryError:
    return QueryError(
        "INVALID_FIELD",
        f"{query_text}\nNo such column '{name}' on entity '{obj}'. If you are attempting to use a "
        "custom field, be sure to append the '__c' after the custom field name. Please reference "
        "your WSDL or the describe call for the appropriate names.",
    )


def _resolve_path(source: DataSource, obj: str, path: str, query_text: str) -> _Path:
    parts = path.split(".")
    hops: list[tuple[str, str]] = []
    keys: list[str] = []
    objs = [obj]
    if len(parts) == 2 and source.resolve_object(parts[0]) == obj and source.relationship(obj, parts[0]) is None:
        # "SELECT Contact.Name FROM Contact" is legal: the object name as prefix.
        parts = parts[1:]
    for rel in parts[:-1]:
        found = None
        for o in objs:
            found = source.relationship(o, rel)
            if found is not None:
                break
        if found is None or not found.reference_to:
            raise QueryError(
                "INVALID_FIELD",
                f"{query_text}\nDidn't understand relationship '{rel}' in field path. If you are "
                "attempting to use a custom relationship, be sure to append the '__r' after the "
                "custom relationship name.",
            )
        assert found.relationship_name is not None
        hops.append((found.name, found.relationship_name))
        keys.append(found.relationship_name)
        objs = list(found.reference_to)
    last = parts[-1]
    fdef = None
    for o in objs:
        fdef = source.field(o, last)
        if fdef is not None:
            break
    if fdef is None:
        raise _invalid_field(query_text, last, objs[0])
    keys.append(fdef.name)
    return _Path(tuple(hops), fdef.name, fdef.type, fdef.filterable, fdef.sortable, tuple(keys))


def _literal_for(path: _Path, lit: Any, query_text: str) -> Any:
    """Check a literal against the field type and turn it into a comparable value."""
    if lit is None:
        return None
    ftype = path.field_type
    where = f"value of filter criterion for field '{path.field_name}'"
    if isinstance(lit, DateRange):
        if ftype not in ("date", "datetime"):
            raise QueryError("INVALID_FIELD", f"{query_text}\n{where} must be of type {ftype}")
        return lit
    if isinstance(lit, bool):
        if ftype != "boolean":
            raise QueryError("INVALID_FIELD", f"{query_text}\n{where} must be of type {ftype} and should be enclosed in quotes"
                             if ftype in _STRINGISH | _IDISH else f"{query_text}\n{where} must be of type {ftype}")
        return lit
    assert isinstance(lit, Token)
    if ftype == "boolean":
        raise QueryError("INVALID_FIELD", f"{query_text}\n{where} must be of type boolean and should not be enclosed in quotes")
    quoted = lit.kind in ("string", "likestring")
    hint = " and should not be enclosed in quotes" if quoted else ""
    if ftype in _NUMERIC:
        if lit.kind != "number":
            raise QueryError("INVALID_FIELD", f"{query_text}\n{where} must be of type {ftype}{hint}")
        return lit.value
    if ftype == "date":
        if lit.kind != "date":
            raise QueryError("INVALID_FIELD", f"{query_text}\n{where} must be of type date{hint}")
        return lit.value
    if ftype == "datetime":
        if lit.kind != "datetime":
            raise QueryError("INVALID_FIELD", f"{query_text}\n{where} must be of type dateTime{hint}")
        return lit.value
    # Text, picklist, id and reference fields take quoted strings only.
    if lit.kind not in ("string", "likestring"):
        raise QueryError("INVALID_FIELD", f"{query_text}\n{where} must be of type {ftype} and should be enclosed in quotes")
    if ftype in _IDISH:
        if not is_salesforce_id(lit.value):
            raise QueryError("INVALID_QUERY_FILTER_OPERATOR", f"{query_text}\ninvalid ID field: {lit.value}")
        return normalize_id(lit.value).lower()
    return str(lit.value).lower()


@dataclass(slots=True)
class _Bound:
    obj: str
    paths: dict[str, _Path] = field(default_factory=dict)


def _bind_cond(source: DataSource, obj: str, node: Any, bound: _Bound, text: str) -> Any:
    """Resolve paths and literals; returns an evaluable tree of tuples."""
    if isinstance(node, BoolOp):
        return (node.op, [_bind_cond(source, obj, x, bound, text) for x in node.items])
    if isinstance(node, Not):
        return ("NOT", _bind_cond(source, obj, node.item, bound, text))
    assert isinstance(node, Cond)
    path = _resolve_path(source, obj, node.path, text)
    if not path.filterable:
        raise QueryError("INVALID_FIELD", f"{text}\nfield '{path.field_name}' can not be filtered in a query call")
    if node.op == "LIKE":
        if path.field_type not in _STRINGISH:
            raise QueryError("INVALID_FIELD", f"{text}\ninvalid operator on {path.field_type} field: LIKE")
        tok = node.value
        return ("LIKE", path, re.compile(f"^{tok.like}$", re.IGNORECASE | re.DOTALL))
    if node.op in ("IN", "NOTIN"):
        vals = [_literal_for(path, v, text) for v in node.value]
        return (node.op, path, vals)
    if node.op not in ("=", "!=") and path.field_type in ("boolean",):
        raise QueryError("INVALID_FIELD", f"{text}\ninvalid operator on boolean field: {node.op}")
    if node.value is None and node.op not in ("=", "!="):
        raise QueryError("MALFORMED_QUERY", f"{text}\nnull can only be compared with = or !=")
    return (node.op, path, _literal_for(path, node.value, text))


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def _follow(source: DataSource, record: Mapping[str, Any], path: _Path) -> tuple[bool, Any]:
    """(found, value) of ``path`` on ``record``; found is False when a hop is null."""
    cur: Mapping[str, Any] | None = record
    for ref_field, _rel in path.hops:
        assert cur is not None
        ref = cur.get(ref_field)
        if not ref:
            return False, None
        hit = source.get(ref)
        if hit is None:
            return False, None
        cur = hit[1]
    assert cur is not None
    return True, cur.get(path.field_name)


def _comparable(path: _Path, value: Any) -> Any:
    if value is None:
        return None
    t = path.field_type
    if t in _STRINGISH:
        return str(value).lower()
    if t in _IDISH:
        return str(value).lower()
    if t == "datetime":
        return parse_datetime(value) if isinstance(value, str) else value
    if t == "date":
        return date.fromisoformat(value) if isinstance(value, str) else value
    return value


def _in_range(path: _Path, v: Any, rng: DateRange, op: str) -> bool:
    if path.field_type == "datetime":
        start: Any = datetime(rng.start.year, rng.start.month, rng.start.day, tzinfo=UTC)
        end: Any = datetime(rng.end.year, rng.end.month, rng.end.day, tzinfo=UTC)
    else:
        start, end = rng.start, rng.end
    if op == "=":
        return start <= v < end
    if op == "!=":
        return not (start <= v < end)
    if op == "<":
        return v < start
    if op == "<=":
        return v < end
    if op == ">":
        return v >= end
    return v >= start  # >=


def _compare(op: str, v: Any, lit: Any, path: _Path) -> bool:
    if lit is None:
        return (v is None) if op == "=" else (v is not None)
    if v is None:
        # SOQL: null is a value, so "!= x" holds for null; orderings never do.
        return op == "!="
    if isinstance(lit, DateRange):
        return _in_range(path, v, lit, op)
    if path.field_type == "datetime" and isinstance(lit, date) and not isinstance(lit, datetime):
        return False
    try:
        if op == "=":
            return v == lit
        if op == "!=":
            return v != lit
        if op == "<":
            return v < lit
        if op == ">":
            return v > lit
        if op == "<=":
            return v <= lit
        return v >= lit
    except TypeError:
        return False


def _evaluate(source: DataSource, node: Any, record: Mapping[str, Any]) -> bool:
    kind = node[0]
    if kind == "AND":
        return all(_evaluate(source, x, record) for x in node[1])
    if kind == "OR":
        return any(_evaluate(source, x, record) for x in node[1])
    if kind == "NOT":
        return not _evaluate(source, node[1], record)
    path: _Path = node[1]
    _found, raw = _follow(source, record, path)
    v = _comparable(path, raw)
    if kind == "LIKE":
        return v is not None and node[2].match(str(raw)) is not None
    if kind == "IN":
        return v is not None and any(_compare("=", v, lit, path) for lit in node[2])
    if kind == "NOTIN":
        return v is None or not any(_compare("=", v, lit, path) for lit in node[2])
    return _compare(kind, v, node[2], path)


def _index_candidates(source: DataSource, obj: str, tree: Any) -> Iterable[Mapping[str, Any]] | None:
    """Use an equality on a direct field (top level or inside a top-level AND) as an index probe."""
    conds = tree[1] if tree is not None and tree[0] == "AND" else [tree] if tree is not None else []
    for c in conds:
        if c[0] in ("=", "IN") and not c[1].hops and c[1].field_type in _STRINGISH | _IDISH:
            values = c[2] if c[0] == "IN" else [c[2]]
            if any(v is None or isinstance(v, DateRange) for v in values):
                continue
            hit = source.lookup(obj, c[1].field_name, [str(v) for v in values])
            if hit is not None:
                return hit
    return None


class _Desc:
    """Sort key wrapper that reverses the order of its payload."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return other.v < self.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and other.v == self.v


def _sort(source: DataSource, rows: list[Mapping[str, Any]], order: list[tuple[_Path, OrderItem]]) -> list[Mapping[str, Any]]:
    def key(rec: Mapping[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for path, item in order:
            _f, raw = _follow(source, rec, path)
            v = _comparable(path, raw)
            # Nulls go to one end regardless of direction.
            null_rank = (1 if item.nulls_last else 0) if v is None else (0 if item.nulls_last else 1)
            payload: Any = 0 if v is None else v
            if isinstance(payload, bool):
                payload = int(payload)
            parts.append((null_rank, _Desc(payload) if item.descending else payload))
        return tuple(parts)

    return sorted(rows, key=key)


def _render(
    source: DataSource,
    obj: str,
    record: Mapping[str, Any],
    paths: Sequence[_Path],
    url_prefix: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": {"type": obj, "url": f"{url_prefix}/sobjects/{obj}/{record['Id']}"}}
    for path in paths:
        node = out
        cur: Mapping[str, Any] | None = record
        ok = True
        for ref_field, rel in path.hops:
            assert cur is not None
            ref = cur.get(ref_field)
            hit = source.get(ref) if ref else None
            if hit is None:
                if rel not in node:
                    node[rel] = None
                ok = False
                break
            child = node.get(rel)
            if not isinstance(child, dict):
                child = {"attributes": {"type": hit[0], "url": f"{url_prefix}/sobjects/{hit[0]}/{hit[1]['Id']}"}}
                node[rel] = child
            node = child
            cur = hit[1]
        if ok:
            assert cur is not None
            node[path.field_name] = cur.get(path.field_name)
    return out


@dataclass(frozen=True, slots=True)
class SoqlResult:
    total_size: int
    records: list[dict[str, Any]]


def run_soql(
    query: SoqlQuery,
    source: DataSource,
    *,
    url_prefix: str,
) -> SoqlResult:
    """Evaluate a parsed query. ``url_prefix`` is ``/services/data/vXX.X``."""
    obj = source.resolve_object(query.sobject)
    if obj is None:
        raise QueryError(
            "INVALID_TYPE",
            f"{query.text}\nsObject type '{query.sobject}' is not supported. If you are attempting to "
            "use a custom object, be sure to append the '__c' after the entity name. Please reference "
            "your WSDL or the describe call for the appropriate names.",
        )
    if query.offset is not None and query.offset > MAX_OFFSET:
        raise QueryError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
    select_paths: list[_Path] = []
    for item in query.select:
        if item.path is not None:
            select_paths.append(_resolve_path(source, obj, item.path, query.text))
    bound = _Bound(obj)
    tree = _bind_cond(source, obj, query.where, bound, query.text) if query.where is not None else None
    order: list[tuple[_Path, OrderItem]] = []
    for o in query.order_by:
        p = _resolve_path(source, obj, o.path, query.text)
        if not p.sortable:
            raise QueryError("INVALID_FIELD", f"{query.text}\nfield '{p.field_name}' can not be sorted in a query call")
        order.append((p, o))

    candidates = _index_candidates(source, obj, tree)
    pool = candidates if candidates is not None else source.scan(obj)
    rows = [r for r in pool if tree is None or _evaluate(source, tree, r)]
    if order:
        rows = _sort(source, rows, order)
    if query.offset:
        rows = rows[query.offset:]
    if query.limit is not None:
        rows = rows[:query.limit]

    if query.is_count:
        item = query.select[0]
        if item.path is None:
            return SoqlResult(len(rows), [])
        p = select_paths[0]
        n = sum(1 for r in rows if _follow(source, r, p)[1] is not None)
        return SoqlResult(1, [{"attributes": {"type": "AggregateResult"}, item.alias or "expr0": n}])
    return SoqlResult(len(rows), [_render(source, obj, r, select_paths, url_prefix) for r in rows])


# --------------------------------------------------------------------------
# SOSL
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Returning:
    sobject: str
    fields: tuple[str, ...]
    where: Any
    order_by: tuple[OrderItem, ...]
    limit: int | None
    where_text: str


@dataclass(frozen=True, slots=True)
class SoslQuery:
    text: str
    search: str  # the text between the braces, raw
    terms: Any  # ("OR"|"AND"|"NOT", ...) tree of ("TERM", text, is_phrase)
    scope: str
    returning: tuple[Returning, ...]
    limit: int | None


_SOSL_RESERVED = set("?&|!{}[]()^~*:\\\"'+-")


def _sosl_terms(search: str) -> Any:
    """Parse the search expression inside the braces."""
    toks: list[tuple[str, str]] = []  # (kind, text): word, phrase, op, lparen, rparen
    i = 0
    n = len(search)
    while i < n:
        ch = search[i]
        if ch.isspace():
            i += 1
            continue
        if ch == '"':
            j = i + 1
            buf: list[str] = []
            while j < n and search[j] != '"':
                if search[j] == "\\" and j + 1 < n:
                    buf.append(search[j + 1])
                    j += 2
                    continue
                buf.append(search[j])
                j += 1
            if j >= n:
                raise QueryError("MALFORMED_SEARCH", "unterminated quoted phrase in search")
            toks.append(("phrase", "".join(buf)))
            i = j + 1
            continue
        if ch == "(":
            toks.append(("lparen", ch))
            i += 1
            continue
        if ch == ")":
            toks.append(("rparen", ch))
            i += 1
            continue
        buf = []
        while i < n and not search[i].isspace() and search[i] not in '()"':
            c = search[i]
            if c == "\\":
                if i + 1 >= n:
                    raise QueryError("MALFORMED_SEARCH", "search term ends with a lone backslash")
                buf.append(search[i + 1])
                i += 2
                continue
            if c in _SOSL_RESERVED and c not in "*?":
                # §4: reserved characters must be backslash-escaped; strict: refuse them bare.
                raise QueryError(
                    "MALFORMED_SEARCH",
                    f"line 1:{i + 1} no viable alternative at character '{c}' "
                    "(reserved characters must be escaped with a backslash)",
                )
            buf.append(c)
            i += 1
        word = "".join(buf)
        if word.upper() in ("AND", "OR", "NOT") and word == word.upper():
            toks.append(("op", word.upper()))
        else:
            if word and word[0] in "*?":
                raise QueryError("MALFORMED_SEARCH", f"wildcards are not allowed at the start of a term: {word}")
            toks.append(("word", word))

    pos = 0

    def peek() -> tuple[str, str] | None:
        return toks[pos] if pos < len(toks) else None

    def primary() -> Any:
        nonlocal pos
        t = peek()
        if t is None:
            raise QueryError("MALFORMED_SEARCH", "search expression is incomplete")
        if t[0] == "lparen":
            pos += 1
            inner = or_expr()
            if peek() is None or peek()[0] != "rparen":  # type: ignore[index]
                raise QueryError("MALFORMED_SEARCH", "unbalanced parentheses in search")
            pos += 1
            return inner
        if t[0] in ("word", "phrase"):
            pos += 1
            return ("TERM", t[1], t[0] == "phrase")
        raise QueryError("MALFORMED_SEARCH", f"unexpected '{t[1]}' in search expression")

    def and_expr() -> Any:
        nonlocal pos
        items = [primary()]
        while True:
            t = peek()
            if t is None or t[0] == "rparen" or (t[0] == "op" and t[1] == "OR"):
                break
            if t[0] == "op" and t[1] == "AND":
                pos += 1
                if peek() is not None and peek() == ("op", "NOT"):
                    pos += 1
                    items.append(("NOT", primary()))
                    continue
                items.append(primary())
                continue
            if t[0] == "op" and t[1] == "NOT":
                pos += 1
                items.append(("NOT", primary()))
                continue
            # Juxtaposed terms: implicit AND.
            items.append(primary())
        return items[0] if len(items) == 1 else ("AND", items)

    def or_expr() -> Any:
        nonlocal pos
        items = [and_expr()]
        while peek() == ("op", "OR"):
            pos += 1
            items.append(and_expr())
        return items[0] if len(items) == 1 else ("OR", items)

    tree = or_expr()
    if pos != len(toks):
        raise QueryError("MALFORMED_SEARCH", f"unexpected '{toks[pos][1]}' in search expression")
    return tree


def _drop_logic(tree: Any) -> Any:
    """§5: over 4,000 characters the logical operators are dropped (AND→OR)."""
    terms: list[Any] = []

    def walk(node: Any) -> None:
        if node[0] == "TERM":
            terms.append(node)
        elif node[0] == "NOT":
            walk(node[1])
        else:
            for x in node[1]:
                walk(x)

    walk(tree)
    return ("OR", terms)


_SOSL_HEAD = re.compile(r"^\s*FIND\s*\{", re.IGNORECASE)


def parse_sosl(text: str, *, now: datetime | None = None) -> SoslQuery:
    """Parse ``FIND {…} [IN … FIELDS] [RETURNING …] [LIMIT n]`` (raises :class:`QueryError`)."""
    m = _SOSL_HEAD.match(text or "")
    if not m:
        raise QueryError("MALFORMED_SEARCH", "search must start with FIND {…}")
    # Find the closing brace, honouring backslash escapes (an escaped '}' is part of a term).
    i = m.end()
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "}":
            break
        i += 1
    if i >= len(text):
        raise QueryError("MALFORMED_SEARCH", "missing '}' after the search terms")
    search = text[m.end():i]
    if len(search.strip()) < 2:
        raise QueryError("MALFORMED_SEARCH", "search term must be longer than one character")
    terms = _sosl_terms(search)
    rest = text[i + 1:]
    try:
        tokens = tokenize(rest)
    except QueryError as e:
        raise QueryError("MALFORMED_SEARCH", e.message) from None
    p = _Parser(rest, tokens, now=now)

    def sosl_fail(why: str) -> None:
        try:
            p.fail(why)
        except QueryError as e:
            raise QueryError("MALFORMED_SEARCH", e.message) from None

    scope = "ALL"
    if p.take_kw("IN"):
        word = p.tok.text.upper() if p.tok.kind == "ident" else ""
        if word not in ("ALL", "NAME", "EMAIL", "PHONE", "SIDEBAR"):
            sosl_fail("expecting ALL, NAME, EMAIL, PHONE or SIDEBAR")
        p.i += 1
        if not p.take_kw("FIELDS"):
            sosl_fail("expecting FIELDS")
        scope = "ALL" if word == "SIDEBAR" else word
    returning: list[Returning] = []
    if p.take_kw("RETURNING"):
        while True:
            try:
                name = p.ident()
            except QueryError as e:
                raise QueryError("MALFORMED_SEARCH", e.message) from None
            fields: list[str] = []
            where = None
            where_text = ""
            order: list[OrderItem] = []
            limit = None
            if p.punct("("):
                p.i += 1
                try:
                    if not p.punct(")") and not p.kw("WHERE") and not p.kw("ORDER") and not p.kw("LIMIT"):
                        fields.append(p.ident())
                        while p.punct(","):
                            p.i += 1
                            fields.append(p.ident())
                    if p.take_kw("WHERE"):
                        start = p.tok.pos
                        where = p.condition()
                        where_text = rest[start:p.tok.pos].strip()
                    if p.take_kw("ORDER"):
                        p.expect_kw("BY")
                        order.append(p.order_item())
                        while p.punct(","):
                            p.i += 1
                            order.append(p.order_item())
                    if p.take_kw("LIMIT"):
                        limit = p.integer()
                    p.expect_punct(")")
                except QueryError as e:
                    raise QueryError("MALFORMED_SEARCH", e.message) from None
            returning.append(Returning(name, tuple(fields), where, tuple(order), limit, where_text))
            if p.punct(","):
                p.i += 1
                continue
            break
    limit = None
    if p.take_kw("LIMIT"):
        limit = p.integer()
    if p.tok.kind != "eof":
        sosl_fail("")
    return SoslQuery(text, search, terms, scope, tuple(returning), limit)


def _term_matcher(term: str) -> Callable[[str], bool]:
    """Phone semantics (module docstring): digits equal, or a digit prefix with '*'."""
    d = digits(term)
    if term.endswith("*"):
        return lambda v: bool(d) and v.startswith(d)
    if "?" in term or "*" in term:
        pattern = re.compile("^" + "".join("\\d" if c == "?" else ".*" if c == "*" else c
                                           for c in term if c.isdigit() or c in "?*") + "$")
        return lambda v: bool(pattern.match(v))
    return lambda v: bool(d) and v == d


def _text_match(term: str, value: str) -> bool:
    # Non-phone scopes: a case-insensitive whole-word match (prefix with '*').
    words = re.findall(r"[\w@.]+", value.lower())
    t = term.lower()
    if t.endswith("*"):
        return any(w.startswith(t[:-1]) for w in words)
    if " " in t:
        return t in value.lower()
    return t in words


_Matcher = Callable[[list[str], list[str]], bool]


def _is_exact_term(node: Any) -> bool:
    return node[0] == "TERM" and "*" not in node[1] and "?" not in node[1]


def _compile_terms(tree: Any) -> _Matcher:
    """The search expression as one predicate on (phone digits, texts) of a record.

    Built once per search: a long FIND (hundreds of OR'ed numbers) is tested
    against every candidate record, and rebuilding each term's matcher per
    record made searches linear in terms x records.
    """
    kind = tree[0]
    if kind == "TERM":
        term = tree[1]
        m = _term_matcher(term)
        return lambda pd, tx: any(m(d) for d in pd) or any(_text_match(term, t) for t in tx)
    if kind == "NOT":
        inner = _compile_terms(tree[1])
        return lambda pd, tx: not inner(pd, tx)
    if kind == "OR" and all(_is_exact_term(x) for x in tree[1]):
        # Exact phone terms match by digit equality, so an OR of them is a set lookup.
        terms = [x[1] for x in tree[1]]
        wanted = {d for d in map(digits, terms) if d}
        return lambda pd, tx: (any(d in wanted for d in pd)
                               or any(_text_match(term, t) for term in terms for t in tx))
    parts = [_compile_terms(x) for x in tree[1]]
    if kind == "AND":
        return lambda pd, tx: all(p(pd, tx) for p in parts)
    return lambda pd, tx: any(p(pd, tx) for p in parts)


def _exact_terms(tree: Any) -> list[str] | None:
    """Digit strings of a pure OR of exact phone terms (index fast path), else None."""
    items = tree[1] if tree[0] == "OR" else [tree]
    out: list[str] = []
    for t in items:
        if t[0] != "TERM" or "*" in t[1] or "?" in t[1]:
            return None
        d = digits(t[1])
        if not d:
            return None
        out.append(d)
    return out


_DEFAULT_RETURNING = ("Account", "Contact", "Lead")


def run_sosl(query: SoslQuery, source: DataSource, *, url_prefix: str) -> list[dict[str, Any]]:
    """Evaluate a parsed search; returns ``searchRecords``."""
    if len(query.search) > SOSL_NO_ROWS_OVER:
        return []
    tree = _drop_logic(query.terms) if len(query.search) > SOSL_OPS_DROPPED_OVER else query.terms
    returning = query.returning or tuple(Returning(o, (), None, (), None, "") for o in _DEFAULT_RETURNING)
    out: list[dict[str, Any]] = []
    exact = _exact_terms(tree) if query.scope == "PHONE" else None
    matches = _compile_terms(tree)
    for ret in returning:
        obj = source.resolve_object(ret.sobject)
        if obj is None:
            raise QueryError("INVALID_TYPE", f"sObject type '{ret.sobject}' is not supported.")
        paths = [_resolve_path(source, obj, f, query.text) for f in (ret.fields or ("Id",))]
        tree_where = _bind_cond(source, obj, ret.where, _Bound(obj), ret.where_text) if ret.where is not None else None
        order = []
        for o in ret.order_by:
            p = _resolve_path(source, obj, o.path, query.text)
            if not p.sortable:
                raise QueryError("INVALID_FIELD", f"field '{p.field_name}' can not be sorted")
            order.append((p, o))
        phone_fields = list(source.phone_fields(obj)) if query.scope in ("PHONE", "ALL") else []
        text_fields = list(source.text_fields(obj, query.scope)) if query.scope != "PHONE" else []
        pool: Iterable[Mapping[str, Any]] | None = None
        if exact is not None:
            seen: dict[str, Mapping[str, Any]] = {}
            for d in exact:
                hits = source.phone_lookup(obj, d)
                if hits is None:
                    seen = {}
                    pool = None
                    break
                for r in hits:
                    seen.setdefault(r["Id"], r)
            else:
                pool = list(seen.values())
        if pool is None:
            pool = source.scan(obj)
        rows = []
        for r in pool:
            pd = [digits(r.get(f)) for f in phone_fields if r.get(f)]
            tx = [str(r.get(f)) for f in text_fields if r.get(f)]
            if not matches(pd, tx):
                continue
            if tree_where is not None and not _evaluate(source, tree_where, r):
                continue
            rows.append(r)
        if order:
            rows = _sort(source, rows, order)
        if ret.limit is not None:
            rows = rows[:ret.limit]
        out.extend(_render(source, obj, r, paths, url_prefix) for r in rows)
    cap = min(query.limit if query.limit is not None else SOSL_MAX_ROWS, SOSL_MAX_ROWS)
    return out[:cap]
