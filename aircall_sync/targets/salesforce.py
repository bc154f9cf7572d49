"""The Salesforce org: session, the one request path, batched reads and writes.

Facts relied on (``../shared/reference/salesforce-api.md``):

- §7 the OAuth flows. We post to ``{instance_url}/services/oauth2/token``
  ourselves (DESIGN §5) because simple-salesforce builds its login URLs from a
  ``*.salesforce.com`` domain, and then hand the access token to
  ``simple_salesforce.Salesforce`` (``instance_url`` + ``session_id``).
- §8 simple-salesforce's own 401 retry can recurse forever on single-record
  calls, and Bulk never refreshes: we never give it login credentials, so it
  never retries by itself; ``request`` re-authenticates once per expiry here.
- §4 sObject Collections (200 records, ``allOrNone=false``, per-record
  ``SaveResult`` with ``statusCode``), Composite (25 subrequests, at most 5
  queries or collections, one API call), REST errors as arrays with
  ``errorCode``, ``UNABLE_TO_LOCK_ROW`` worth retrying.
- §9 URI plus headers must stay under 16,384 bytes (2,000 recommended): long
  SOQL/SOSL goes in the body of a Composite request instead of the URL.

``requests`` lets ``REQUESTS_CA_BUNDLE`` override a session's ``verify`` (a
long-standing quirk), so ``verify`` is passed with every request instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError

from aircall_sync import __version__
from aircall_sync.errors import CredentialsError, ServiceError
from aircall_sync.http import RetryPolicy, RetryStats

log = logging.getLogger("aircall_sync.salesforce")

COLLECTION_SIZE = 200  # sObject Collections (§4)
COMPOSITE_SIZE = 25  # subrequests per Composite (§4)
COMPOSITE_QUERIES = 5  # queries or collections per Composite (§4)
URL_BUDGET = 2000  # Salesforce's recommended URI length (§9)
BULK_WAIT_LIMIT = 3600.0  # seconds a run waits for one Bulk job before it stops
TIMEOUT = (15, 300)  # connect, read: a 200-record save can take a while

RETRIABLE_RECORD_ERRORS = frozenset({"UNABLE_TO_LOCK_ROW"})
#: A create whose answer was lost: it may or may not have been committed. Never
#: re-sent as is; the caller looks the records up by their key first (DESIGN §6).
UNCERTAIN = "UNCERTAIN"


class UncertainWriteError(ServiceError):
    """The connection failed after a create was sent: Salesforce may have committed it."""


class SalesforceApiError(ServiceError):
    """Salesforce refused a whole request; ``code`` is its errorCode when it gave one."""

    def __init__(self, message: str, status: int, code: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class RecordError:
    code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SaveResult:
    """One record's outcome in a collection or Bulk write."""

    id: str | None
    success: bool
    errors: tuple[RecordError, ...] = ()
    created: bool | None = None

    @property
    def error(self) -> RecordError | None:
        return self.errors[0] if self.errors else None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SaveResult:
        errors = tuple(
            RecordError(
                code=str(e.get("statusCode") or e.get("errorCode") or "UNKNOWN"),
                message=str(e.get("message") or ""),
                fields=tuple(e.get("fields") or ()),
            )
            for e in raw.get("errors") or ()
            if isinstance(e, Mapping)
        )
        return cls(id=raw.get("id"), success=bool(raw.get("success")), errors=errors, created=raw.get("created"))


@dataclass(frozen=True)
class BulkJob:
    """A Bulk API 2.0 ingest job that was sent and closed, and how to match its results back."""

    id: str
    sobject: str
    key: str
    keys: list[str]  # each row's key value, in the order the rows were sent


@dataclass
class SalesforceStats(RetryStats):
    reauthentications: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def soql_quote(value: str) -> str:
    """A SOQL string literal: backslash and quote escaped, so data never becomes syntax."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
        .replace('"', '\\"')
    )
    return f"'{escaped}'"


def soql_in(values: Iterable[str]) -> str:
    return "(" + ", ".join(soql_quote(v) for v in values) + ")"


#: SOSL's reserved characters (§8: the FIND clause's list): escaped with a backslash.
SOSL_RESERVED = set('?&|!{}[]()^~*:\\"\'+-')


def sosl_term(value: str) -> str:
    """One quoted SOSL search term; reserved characters are escaped, braces can't end the FIND."""
    return '"' + "".join("\\" + ch if ch in SOSL_RESERVED else ch for ch in value) + '"'


class SalesforceOrg:
    """An authenticated org and the only path by which the tool talks to it."""

    def __init__(
        self,
        settings,
        *,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ):
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.stats = SalesforceStats()
        self.http = session or requests.Session()
        self.http.headers["User-Agent"] = f"aircall-sync/{__version__}"
        self.instance_url = settings.instance_url.rstrip("/")
        self.version = settings.api_version
        self.verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else True
        self.sf: Salesforce | None = None
        self.user_id: str | None = None
        self._describes: dict[str, dict] = {}

    # ------------------------------------------------------------ session

    def connect(self) -> SalesforceOrg:
        token, user_id = self._authenticate()
        self.sf = Salesforce(instance_url=self.instance_url, session_id=token, version=self.version, session=self.http)
        self.user_id = user_id or self._whoami()
        return self

    def _authenticate(self) -> tuple[str, str | None]:
        s = self.settings
        if s.auth == "token":
            return s.access_token.reveal(), None
        form: dict[str, str]
        auth = None
        if s.auth == "jwt":
            form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": self._jwt_assertion()}
        elif s.auth == "client_credentials":
            form = {"grant_type": "client_credentials"}
            auth = (s.consumer_key, s.consumer_secret.reveal())
        else:  # password (§7: blocked by default in new orgs; still supported where allowed)
            form = {
                "grant_type": "password",
                "username": s.username,
                "password": s.password.reveal() + s.security_token.reveal(),
                "client_id": s.consumer_key,
                "client_secret": s.consumer_secret.reveal(),
            }
        url = f"{self.instance_url}/services/oauth2/token"
        attempt = 0
        while True:
            attempt += 1
            self.stats.count("auth")
            try:
                response = self.http.post(url, data=form, auth=auth, timeout=TIMEOUT, verify=self.verify)
            except requests.RequestException as exc:
                if attempt >= self.retry.max_attempts:
                    raise ServiceError(
                        f"Salesforce could not be reached at {self.instance_url} ({type(exc).__name__})") from None
                self.stats.transport_errors += 1
                self._pause(self.retry.backoff(attempt))
                continue
            if (response.status_code >= 500 or response.status_code == 429) and attempt < self.retry.max_attempts:
                self.stats.server_errors += 1
                self._pause(self.retry.backoff(attempt))
                continue
            break
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = {}
            reason = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
            raise CredentialsError(
                f"Salesforce refused the {s.auth} login: {reason}; check the salesforce.* credentials in the settings"
            )
        body = response.json()
        identity = str(body.get("id") or "")
        user_id = identity.rstrip("/").rsplit("/", 1)[-1] if identity.count("/") >= 2 else None
        return str(body["access_token"]), user_id

    def _jwt_assertion(self) -> str:
        import jwt  # pyjwt, through simple-salesforce; RS256 needs cryptography

        s = self.settings
        host = self.instance_url.lower()
        # §7: the audience is the login host; sandboxes log in at test.salesforce.com.
        audience = "https://test.salesforce.com" if (".sandbox." in host or "//test." in host) else (
            "https://login.salesforce.com"
        )
        try:
            key = s.private_key_file.read_bytes()
        except OSError as exc:
            raise CredentialsError(
                f"cannot read salesforce.private_key_file {s.private_key_file}: {exc.strerror}"
            ) from None
        claims = {"iss": s.consumer_key, "sub": s.username, "aud": audience, "exp": int(time.time()) + 180}
        try:
            return jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError) as exc:
            raise CredentialsError(
                f"salesforce.private_key_file is not a usable RSA private key ({type(exc).__name__})"
            ) from None

    def _whoami(self) -> str:
        body = self._send("GET", f"{self.instance_url}/services/oauth2/userinfo", kind="auth")
        user_id = (body or {}).get("user_id")
        if not user_id:
            raise ServiceError("Salesforce did not say which user the access token belongs to (oauth2/userinfo)")
        return str(user_id)

    def _reauthenticate(self) -> None:
        if self.settings.auth == "token":
            raise CredentialsError(
                "the Salesforce access token expired or was revoked (INVALID_SESSION_ID); get a new one "
                "(e.g. `sf org display --verbose`) and set salesforce.access_token, or use auth = \"jwt\" "
                "or \"client_credentials\", which renew themselves"
            )
        token, _ = self._authenticate()
        self.stats.reauthentications += 1
        self.sf = Salesforce(instance_url=self.instance_url, session_id=token, version=self.version, session=self.http)
        log.info("Salesforce session expired; signed in again")

    # ------------------------------------------------------------ the one request path

    def request(self, method: str, path: str, *, kind: str, **kwargs) -> Any:
        """A data API call relative to ``/services/data/vXX.X/``; JSON back (None for 204)."""
        assert self.sf is not None, "connect() first"
        return self._send(method, self.sf.base_url + path.lstrip("/"), kind=kind, **kwargs)

    def _send(self, method: str, url: str, *, kind: str, raw: bool = False, resend: bool = True, **kwargs) -> Any:
        """``resend=False``: a connection lost after sending raises UncertainWriteError instead of a retry."""
        failures = 0
        reauthenticated = False
        while True:
            headers = dict(self.sf.headers) if self.sf else {}
            if self.sf is None and self.settings.auth == "token":
                headers["Authorization"] = "Bearer " + self.settings.access_token.reveal()
            headers.update(kwargs.pop("headers", {}) or {})
            self.stats.requests += 1
            self.stats.count(kind)
            try:
                response = self.http.request(method, url, headers=headers, timeout=TIMEOUT, verify=self.verify, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failures += 1
                self.stats.transport_errors += 1
                if not resend and not isinstance(exc, requests.exceptions.ConnectTimeout):
                    raise UncertainWriteError(
                        f"the connection to Salesforce failed during {method} {_short(url)}; the write may have "
                        "been committed") from None
                if failures >= self.retry.max_attempts:
                    raise ServiceError(
                        f"Salesforce did not answer after {failures} attempts ({type(exc).__name__}); "
                        "check the network or trust.salesforce.com, then run again"
                    ) from None
                self._pause(self.retry.backoff(failures))
                continue
            status = response.status_code
            if status == 401 and _error_code(response) == "INVALID_SESSION_ID" and not reauthenticated:
                self._reauthenticate()
                reauthenticated = True
                continue
            if status in (429, 502, 503, 504) or status >= 500:
                failures += 1
                if status == 429:
                    self.stats.rate_limited += 1
                else:
                    self.stats.server_errors += 1
                if failures >= self.retry.max_attempts:
                    raise SalesforceApiError(
                        f"Salesforce answered HTTP {status} {failures} times in a row for {method} "
                        f"{_short(url)}; try again later",
                        status,
                        _error_code(response),
                    )
                self._pause(self.retry.backoff(failures))
                continue
            if status == 401:
                raise CredentialsError(
                    f"Salesforce refused the session ({_error_code(response) or 'HTTP 401'}); check the "
                    "salesforce.* credentials"
                )
            if status >= 300:
                code = _error_code(response)
                if code == "REQUEST_LIMIT_EXCEEDED":  # 403: the org's rolling 24-hour allowance is used up
                    raise SalesforceApiError(
                        f"Salesforce refused {method} {_short(url)}: REQUEST_LIMIT_EXCEEDED: "
                        f"{_error_message(response)} (the org's API requests allowed over 24 hours are used up; "
                        "Setup > Company Information shows them)",
                        status,
                        code,
                    )
                raise SalesforceApiError(
                    f"Salesforce refused {method} {_short(url)}: {code or status}: {_error_message(response)}",
                    status,
                    code,
                )
            if raw:
                return response
            if status == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise ServiceError(f"Salesforce answered {method} {_short(url)} with a body that is not JSON") from None

    def _pause(self, seconds: float) -> None:
        self.stats.waited_seconds += seconds
        self.retry.sleep(seconds)

    # ------------------------------------------------------------ reads

    def describe(self, sobject: str) -> dict:
        if sobject not in self._describes:
            self._describes[sobject] = self.request("GET", f"sobjects/{sobject}/describe", kind="describe")
        return self._describes[sobject]

    def describe_many(self, sobjects: Sequence[str]) -> dict[str, dict | None]:
        """Describes in Composite batches; an object the org lacks (or hides) maps to None."""
        wanted = [o for o in sobjects if o not in self._describes]
        for chunk in _chunks(wanted, COMPOSITE_SIZE):
            subs = [{"method": "GET", "url": self._path(f"sobjects/{o}/describe"), "referenceId": f"d{i}"}
                    for i, o in enumerate(chunk)]
            for name, result in zip(chunk, self.composite(subs, kind="describe"), strict=True):
                self._describes[name] = result["body"] if result["httpStatusCode"] == 200 else None
        return {o: self._describes.get(o) for o in sobjects}

    def composite(self, subrequests: list[dict], *, kind: str) -> list[dict]:
        body = self.request("POST", "composite", kind=kind,
                            json={"allOrNone": False, "collateSubrequests": False, "compositeRequest": subrequests})
        by_ref = {r.get("referenceId"): r for r in (body or {}).get("compositeResponse", [])}
        return [by_ref.get(s["referenceId"], {"httpStatusCode": 0, "body": None}) for s in subrequests]

    def query(self, soql: str, *, kind: str = "query") -> list[dict]:
        return self.queries([soql], kind=kind)[0]

    def queries(self, soqls: Sequence[str], *, kind: str = "query") -> list[list[dict]]:
        """Run SOQL statements: one alone by URL, several (or a long one) through Composite (§9), 5 per
        request. A Composite request counts as one call toward the org's API limit, as a URL query does."""
        return self._read_many([("query", q) for q in soqls], kind)

    def searches(self, sosls: Sequence[str], *, kind: str = "search") -> list[list[dict]]:
        return self._read_many([("search", q) for q in sosls], kind)

    def _read_many(self, items: list[tuple[str, str]], kind: str) -> list[list[dict]]:
        results: list[list[dict] | None] = [None] * len(items)
        long_ones = []
        together = sum(1 for verb, _ in items if verb == "query") > 1
        for index, (verb, text) in enumerate(items):
            path = f"{verb}?q={quote(text, safe='')}"
            # Composite carries queries but not searches: a search always goes by URL,
            # and sosl_queries keeps it under the URI limit (§9).
            if verb == "search" or (not together and len(self.sf.base_url + path) <= URL_BUDGET):
                results[index] = self._records(verb, self.request("GET", path, kind=kind))
            else:
                long_ones.append((index, verb, path))
        for chunk in _chunks(long_ones, COMPOSITE_QUERIES):
            subs = [{"method": "GET", "url": self._path(p), "referenceId": f"r{n}"} for n, (_, _, p) in enumerate(chunk)]
            for (index, verb, _), result in zip(chunk, self.composite(subs, kind=kind), strict=True):
                if result["httpStatusCode"] != 200:
                    errors = result.get("body") or [{}]
                    first = errors[0] if isinstance(errors, list) and errors else {}
                    raise SalesforceApiError(
                        f"Salesforce refused a {verb}: {first.get('errorCode', result['httpStatusCode'])}: "
                        f"{first.get('message', '')}",
                        result["httpStatusCode"],
                        first.get("errorCode"),
                    )
                results[index] = self._records(verb, result["body"])
        return [r or [] for r in results]

    def _records(self, verb: str, body: Any) -> list[dict]:
        if verb == "search":
            return list((body or {}).get("searchRecords", []))
        records = list(body.get("records", []))
        # More than 2,000 rows come in pages (§9).
        while not body.get("done", True) and body.get("nextRecordsUrl"):
            body = self._send("GET", self.instance_url + body["nextRecordsUrl"], kind="query")
            records.extend(body.get("records", []))
        return records

    def _path(self, relative: str) -> str:
        return f"/services/data/v{self.version}/{relative}"

    # ------------------------------------------------------------ writes

    def create(self, records: Sequence[Mapping[str, Any]], *, kind: str = "create") -> list[SaveResult]:
        """Create through sObject Collections, 200 a request; each record has ``attributes.type``."""
        return self._collection("POST", records, kind)

    def update(self, records: Sequence[Mapping[str, Any]], *, kind: str = "update") -> list[SaveResult]:
        """Update by ``id`` through sObject Collections."""
        return self._collection("PATCH", records, kind)

    def _collection(self, method: str, records: Sequence[Mapping[str, Any]], kind: str) -> list[SaveResult]:
        results: list[SaveResult | None] = [None] * len(records)
        pending = list(range(len(records)))
        attempt = 0
        while pending:
            attempt += 1
            for chunk in _chunks(pending, COLLECTION_SIZE):
                try:
                    # Updates are idempotent; creates are not, so a lost answer is not re-sent blindly.
                    body = self.request(method, "composite/sobjects", kind=kind, resend=method != "POST",
                                        json={"allOrNone": False, "records": [records[i] for i in chunk]})
                except UncertainWriteError as exc:
                    for i in chunk:
                        results[i] = SaveResult(None, False, (RecordError(UNCERTAIN, str(exc)),))
                    continue
                for i, raw in zip(chunk, body or [], strict=False):
                    results[i] = SaveResult.parse(raw)
            # Lock contention clears by itself: retry those records only (§4).
            pending = [
                i for i in pending
                if results[i] is not None and not results[i].success
                and results[i].error and results[i].error.code in RETRIABLE_RECORD_ERRORS
            ]
            if pending and attempt < self.retry.max_attempts:
                self._pause(self.retry.backoff(attempt))
            else:
                break
        return [r or SaveResult(None, False, (RecordError("NO_RESULT", "Salesforce returned no result"),))
                for r in results]


    # ------------------------------------------------------------ Bulk API 2.0 (§4)

    def bulk_submit(self, sobject: str, operation: str, records: Sequence[Mapping[str, Any]], *,
                    key: str) -> BulkJob:
        """Insert or update through a Bulk API 2.0 ingest job: create it, upload its rows and close it.

        Salesforce then processes it on its own (§4).

        The caller may do other work before :meth:`bulk_results` waits for it.
        Bulk results come back unordered and without our row numbers, so each
        row is found again by ``key`` (``CallObject`` for Task inserts, ``Id``
        for updates), which is unique per call.
        """
        columns = sorted({name for record in records for name in record if name != "attributes"})
        if key not in columns:
            raise ValueError(f"bulk rows need the {key} column to be matched back")
        job = self.request("POST", "jobs/ingest", kind="bulk", json={
            "object": sobject, "operation": operation, "contentType": "CSV",
            "lineEnding": "CRLF", "columnDelimiter": "COMMA",
        })
        job_id = job["id"]
        self.request("PUT", f"jobs/ingest/{job_id}/batches", kind="bulk", data=_csv(columns, records).encode("utf-8"),
                     headers={"Content-Type": "text/csv"})
        self.request("PATCH", f"jobs/ingest/{job_id}", kind="bulk", json={"state": "UploadComplete"})
        return BulkJob(job_id, sobject, key, [str(record.get(key, "")) for record in records])

    def bulk_wait(self, job_id: str) -> dict:
        """Poll a closed job until it ends; its final status."""
        delay, waited = 0.2, 0.0
        while True:
            status = self.request("GET", f"jobs/ingest/{job_id}", kind="bulk")
            if status.get("state") in ("JobComplete", "Failed", "Aborted"):
                return status
            if waited >= BULK_WAIT_LIMIT:
                # Nothing is lost: the next run waits for this job again before it plans.
                raise ServiceError(
                    f"Salesforce Bulk job {job_id} is still {status.get('state') or 'processing'} after "
                    f"{waited / 60:.0f} minutes; run again later (Setup > Bulk Data Load Jobs shows it)")
            self._pause(delay)
            waited += delay
            delay = min(delay * 2, 10.0)

    def unfinished_bulk_jobs(self, sobject: str) -> list[str]:
        """Ingest jobs on ``sobject`` this user closed and Salesforce has not finished.

        A run killed after closing a job leaves it processing on Salesforce's
        side; its rows become visible only when it ends.
        """
        found = []
        url: str | None = self.sf.base_url + "jobs/ingest"
        mine = (self.user_id or "")[:15]
        while url:
            page = self._send("GET", url, kind="bulk") or {}
            for job in page.get("records") or []:
                if (job.get("object") == sobject and job.get("state") in ("UploadComplete", "InProgress")
                        and str(job.get("createdById") or "")[:15] == mine):
                    found.append(str(job["id"]))
            following = page.get("nextRecordsUrl")
            url = self.instance_url.rstrip("/") + following if following and not page.get("done", True) else None
        return found

    def bulk_results(self, job: BulkJob) -> list[SaveResult]:
        """Wait for a submitted job to end; its rows' results in the order they were submitted."""
        status = self.bulk_wait(job.id)
        state = status.get("state")
        if state != "JobComplete":
            reason = status.get("errorMessage") or state
            raise SalesforceApiError(f"Salesforce Bulk job {job.id} for {job.sobject} ended {state}: {reason}",
                                     200, state)
        key = job.key
        by_key: dict[str, SaveResult] = {}
        for row in _csv_rows(self._bulk_text(f"jobs/ingest/{job.id}/successfulResults/")):
            created = str(row.get("sf__Created", "")).lower() == "true"
            by_key[row.get(key, "")] = SaveResult(row.get("sf__Id") or None, True, (), created)
        for row in _csv_rows(self._bulk_text(f"jobs/ingest/{job.id}/failedResults/")):
            code, _, message = str(row.get("sf__Error", "")).partition(":")
            by_key[row.get(key, "")] = SaveResult(row.get("sf__Id") or None, False,
                                                  (RecordError(code.strip() or "UNKNOWN", message.strip()),))
        missing = SaveResult(None, False, (RecordError("UNPROCESSED", "Salesforce did not process this row"),))
        return [by_key.get(value, missing) for value in job.keys]

    def _bulk_text(self, path: str) -> str:
        response = self.request("GET", path, kind="bulk", raw=True)
        return response.content.decode("utf-8-sig")


def _csv(columns: list[str], records: Sequence[Mapping[str, Any]]) -> str:
    import csv
    import io

    out = io.StringIO()
    # Bulk API 2.0 reads the line ending the job declares: CRLF (§4).
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for record in records:
        # A column this row lacks is left empty (unset: the default on insert, untouched on
        # update); only an explicit None clears a field.
        writer.writerow([_csv_value(record[c]) if c in record else "" for c in columns])
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return "#N/A"  # Bulk API's way to set a field to null
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_rows(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text, newline="")))


def _chunks(items: Sequence, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _error_code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return body[0].get("errorCode")
    if isinstance(body, dict):
        return body.get("errorCode") or body.get("error")
    return None


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason or ""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return str(body[0].get("message", ""))[:500]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error_description") or "")[:500]
    return ""


def _short(url: str) -> str:
    # Paths only: query strings can carry SOQL with customer data.
    return url.split("?", 1)[0]


__all__ = [
    "BulkJob",
    "SalesforceApiError",
    "SalesforceError",
    "SalesforceOrg",
    "SaveResult",
    "RecordError",
    "soql_in",
    "soql_quote",
    "sosl_term",
]
