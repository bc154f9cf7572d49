"""Secrets never appear in output, logs, reports, state, cassettes or tracebacks (DESIGN §3, issue #6).

The sandbox is configured to accept *known fake* credentials (an Aircall API
token, a Salesforce consumer secret, password, security token, access token and
a JWT private key); every command then runs with them, in every output mode
(``--verbose``, ``--quiet``, ``--log-format json``), through failures and forced
crashes, and each secret (and the forms it travels in: Basic auth in base64,
URL-encoded) is searched for in stdout, stderr, log lines, ``--report`` files,
the SQLite state (its bytes, WAL and lock files included) and a cassette.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import tomli_w
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.sandbox.aircall_api import AircallApp
from aircall_sync.sandbox.salesforce_api import INTEGRATION_USERNAME, AuthConfig
from aircall_sync.sandbox.server import LoopbackServer
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from aircall_sync.sandbox.tls import generate_jwt_keypair

REPO = Path(__file__).resolve().parents[1]
END = datetime(2026, 10, 31, 12, tzinfo=UTC)
FROM, TO = "2026-10-29", "2026-10-31"

AIRCALL_ID = "fake-aircall-api-id-77"
AIRCALL_TOKEN = "FAKEaircallTOKEN-q8Zx41LmWv0Pn"
CONSUMER_KEY = "fake-consumer-key-3MVG9"
CONSUMER_SECRET = "FAKEconsumerSECRET-Vd8nK2hYqR5t"
PASSWORD = "FAKEpassword-Hq4s!J9x&Lc2"  # characters that URL-encoding changes
SECURITY_TOKEN = "FAKEsecurityTOKEN-Rb7Tk1Wm5"
ACCESS_TOKEN = "00D8d0000001FaK!AQ0AQFAKEaccessTOKEN-Xy6Lp0Nf3Ds8Kv"
WRONG_SECRET = "FAKEwrongSECRET-should-never-print-4Qa"

SECRETS = {
    "aircall.api_token": AIRCALL_TOKEN,
    "salesforce.consumer_secret": CONSUMER_SECRET,
    "salesforce.password": PASSWORD,
    "salesforce.security_token": SECURITY_TOKEN,
    "salesforce.access_token": ACCESS_TOKEN,
    "a refused consumer secret": WRONG_SECRET,
}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms() -> dict[str, str]:
    """Each secret, and the encodings it is sent in, as distinctive strings to search for."""
    out: dict[str, str] = {}
    for name, value in SECRETS.items():
        out[name] = value
        out[f"{name} (URL-encoded)"] = quote_plus(value)
        out[f"{name} (percent-encoded)"] = quote(value, safe="")
        out[f"{name} (core)"] = value[4:-4]  # a cut or re-wrapped copy is a leak too
    out["Aircall Basic auth"] = _b64(f"{AIRCALL_ID}:{AIRCALL_TOKEN}")
    out["client_credentials Basic auth"] = _b64(f"{CONSUMER_KEY}:{CONSUMER_SECRET}")
    out["password + security token"] = PASSWORD + SECURITY_TOKEN
    return out


@dataclass
class Env:
    box: Sandbox
    aircall: LoopbackServer
    jwt_key: Path
    tmp: Path

    def settings(self, auth: str, *, state: str = "state.sqlite3", **salesforce) -> dict:
        s = self.box.settings(self.tmp / state)
        s["aircall"].update({"api_id": AIRCALL_ID, "api_token": "${FAKE_AIRCALL_TOKEN}",
                             "base_url": self.aircall.url + "/v1", "requests_per_minute": 60000})
        sf = s["salesforce"]
        sf.update({"auth": auth, "access_token": "", "consumer_key": CONSUMER_KEY})
        if auth == "token":
            sf["access_token"] = ACCESS_TOKEN
        elif auth == "client_credentials":
            sf["consumer_secret"] = CONSUMER_SECRET
        elif auth == "password":
            sf.update({"username": INTEGRATION_USERNAME, "password": PASSWORD, "security_token": "${FAKE_SF_TOKEN}",
                       "consumer_secret": CONSUMER_SECRET})
        elif auth == "jwt":
            sf.update({"username": INTEGRATION_USERNAME, "private_key_file": str(self.jwt_key)})
        sf.update(salesforce)
        return s

    def config(self, name: str, auth: str, **kw) -> Path:
        path = self.tmp / f"{name}.toml"
        path.write_text(tomli_w.dumps(self.settings(auth, **kw)), encoding="utf-8")
        return path


ENVIRON = {"FAKE_AIRCALL_TOKEN": AIRCALL_TOKEN, "FAKE_SF_TOKEN": SECURITY_TOKEN}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("secrets")
    key, cert = generate_jwt_keypair(tmp)
    auth = AuthConfig(consumer_key=CONSUMER_KEY, consumer_secret=CONSUMER_SECRET,
                      passwords={INTEGRATION_USERNAME: PASSWORD}, security_tokens={INTEGRATION_USERNAME: SECURITY_TOKEN},
                      fixed_token=ACCESS_TOKEN, jwt_certificate=cert.read_bytes())
    box = Sandbox(SandboxOptions(calls=120, seed=4, days=3, end=END, salesforce_auth=auth)).start()
    # The stack's Aircall app takes the sandbox's fixed credentials: serve its calls again with the fake ones.
    aircall = LoopbackServer(AircallApp(box.aircall_store, api_id=AIRCALL_ID, api_token=AIRCALL_TOKEN),
                             api="aircall").start()
    try:
        yield Env(box, aircall, key, tmp)
    finally:
        aircall.stop()
        box.stop()


def pem_secret_lines(env: Env) -> list[str]:
    """The private key's base64 lines: any one of them in an output is a leak."""
    return [line for line in env.jwt_key.read_text().splitlines() if line and not line.startswith("-----")]


class Leaks:
    """Collects every text the tool produced, and says where a secret showed up."""

    def __init__(self, env: Env):
        self.texts: dict[str, str] = {}
        self.forms = forms()
        self.pem = pem_secret_lines(env)

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        self.texts[where] = self.texts.get(where, "") + text

    def add_files(self, *paths: Path) -> None:
        for path in paths:
            for candidate in (path, *path.parent.glob(path.name + "-*"), *path.parent.glob(path.name + ".*.lock")):
                if candidate.is_file():
                    self.add(str(candidate), candidate.read_bytes())

    def found(self) -> list[str]:
        hits = []
        for where, text in self.texts.items():
            for name, value in self.forms.items():
                if value and value in text:
                    hits.append(f"{name} in {where}")
            for line in self.pem:
                if line in text:
                    hits.append(f"the JWT private key in {where}")
                    break
        return hits


def invoke(leaks: Leaks, config: Path, *args: str, global_args: tuple[str, ...] = ()) -> object:
    result = CliRunner().invoke(app, ["--config", str(config), *global_args, *args], env=ENVIRON)
    label = " ".join([*global_args, *args])
    leaks.add(f"`{label}` stdout", result.stdout)
    leaks.add(f"`{label}` stderr", result.stderr)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        leaks.add(f"`{label}` exception", "".join(traceback.format_exception(result.exception)))
    return result


VARIANTS = [(), ("--verbose",), ("--verbose", "--log-format", "json"), ("--quiet",)]


def command_matrix(env: Env, leaks: Leaks, config: Path, report: Path) -> dict[str, int]:
    """Every command once per output variant; returns the exit code per command line."""
    codes: dict[str, int] = {}
    call_id = next(c["id"] for c in env.box.aircall_store.iter_calls(0, 2**40) if c["status"] == "done")
    inactive = next(u["id"] for u in env.box.salesforce.summary.users if u.get("case") == "inactive")
    failing = config.with_name(config.stem + "-failing.toml")
    settings = tomllib_loads(config.read_text())
    settings["salesforce"].setdefault("matching", {})["fallback_owner_id"] = inactive
    failing.write_text(tomli_w.dumps(settings), encoding="utf-8")
    for variant in VARIANTS:
        # Records that fail (an inactive fallback owner) before anything landed: status lists them, retry
        # (with the good settings, below) pushes them.
        result = invoke(leaks, failing, "backfill", "--from", FROM, "--to", TO, "--report", str(report),
                        global_args=variant)
        codes[" ".join([*variant, "backfill (failing)"])] = result.exit_code
        leaks.add(str(report), report.read_bytes())
        commands = [
            ("init", str(env.tmp / "init.toml"), "--force"),
            ("check",),
            ("calls", "--from", FROM, "--to", TO),
            ("calls", "--from", FROM, "--to", TO, "--format", "jsonl"),
            ("backfill", "--from", FROM, "--to", TO, "--dry-run"),
            ("backfill", "--from", FROM, "--to", TO, "--dry-run", "--format", "json"),
            ("backfill", "--from", FROM, "--to", TO, "--report", str(report)),
            ("sync", "--dry-run", "--format", "json"),
            ("sync", "--report", str(report.with_suffix(".sync.jsonl"))),
            ("explain", str(call_id)),
            ("status",),
            ("retry", "--dry-run"),
            ("retry", "--report", str(report.with_suffix(".retry.jsonl"))),
        ]
        for command in commands:
            result = invoke(leaks, config, *command, global_args=variant)
            codes[" ".join([*variant, *command])] = result.exit_code
        leaks.add(str(report), report.read_bytes())
    return codes


def tomllib_loads(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


# ---------------------------------------------------------------- the tests


def test_every_command_in_every_mode_keeps_the_secrets(env):
    leaks = Leaks(env)
    config = env.config("password", "password")
    report = env.tmp / "report.jsonl"
    codes = command_matrix(env, leaks, config, report)
    assert codes["backfill --from 2026-10-29 --to 2026-10-31 --report " + str(report)] == 0
    assert codes["check"] == 0, "the fake secrets must be accepted, or nothing was tested"
    assert any(code == 3 for cmd, code in codes.items() if "failing" in cmd)
    assert all(code in (0, 3) for code in codes.values()), codes
    assert len(env.box.sf_store.records("Task")) > 50
    for extra in env.tmp.glob("report*.jsonl"):
        leaks.add(str(extra), extra.read_bytes())
    leaks.add_files(env.tmp / "state.sqlite3")
    assert (env.tmp / "state.sqlite3").stat().st_size > 0
    assert not leaks.found(), leaks.found()
    print(f"\nsecrets: {len(codes)} command lines, {len(leaks.texts)} outputs and files searched for "
          f"{len(leaks.forms)} forms of {len(SECRETS)} secrets and the JWT key")


@pytest.mark.parametrize("auth", ["token", "client_credentials", "jwt"])
def test_each_sign_in_mode_keeps_its_secrets(env, auth):
    leaks = Leaks(env)
    state = f"state-{auth}.sqlite3"
    config = env.config(auth, auth, state=state)
    for variant in (("--verbose",), ("--verbose", "--log-format", "json")):
        for command in (("check",), ("backfill", "--from", FROM, "--to", TO, "--report", str(env.tmp / "r.jsonl")),
                        ("sync", "--dry-run"), ("status",)):
            result = invoke(leaks, config, *command, global_args=variant)
            assert result.exit_code == 0, result.output
        leaks.add("report", (env.tmp / "r.jsonl").read_bytes())
    leaks.add_files(env.tmp / state)
    assert not leaks.found(), leaks.found()


def test_refused_and_expired_credentials_say_so_without_the_secret(env):
    leaks = Leaks(env)
    wrong = env.config("wrong", "client_credentials", consumer_secret=WRONG_SECRET)
    for variant in ((), ("--verbose",), ("--verbose", "--log-format", "json")):
        result = invoke(leaks, wrong, "check", global_args=variant)
        assert result.exit_code == 5
        result = invoke(leaks, wrong, "backfill", "--from", FROM, "--to", TO, global_args=variant)
        assert result.exit_code == 5
    bad_aircall = env.config("bad-aircall", "token")
    text = bad_aircall.read_text().replace("${FAKE_AIRCALL_TOKEN}", WRONG_SECRET)
    bad_aircall.write_text(text)
    result = invoke(leaks, bad_aircall, "calls", "--from", FROM, "--to", TO, global_args=("--verbose",))
    assert result.exit_code == 5
    token = env.config("expired", "token", state="state-expired.sqlite3")
    env.box.salesforce.app.expire_sessions()
    try:
        result = invoke(leaks, token, "backfill", "--from", FROM, "--to", TO, global_args=("--verbose",))
        assert result.exit_code == 5
        assert "INVALID_SESSION_ID" in result.stderr
    finally:
        # A fresh session for the fixed token, so later tests can sign in again.
        with env.box.salesforce.app._mutex:
            env.box.salesforce.app._sessions[ACCESS_TOKEN].expired = False
            env.box.salesforce.app._sessions[ACCESS_TOKEN].requests = 0
    leaks.add_files(env.tmp / "state-expired.sqlite3")
    assert not leaks.found(), leaks.found()


def _crash_in_chunk(self, *args, **kwargs):
    raise RuntimeError("forced crash while writing a chunk")


def _crash_with_settings(self, *args, **kwargs):
    # A careless message that formats the whole settings object: Secret must mask every credential.
    raise RuntimeError(f"cannot connect with {self.settings!r} / {self.settings}")


def _crash(*args, **kwargs):
    raise TypeError("forced crash in the HTTP library")


@pytest.mark.parametrize("where", ["runner", "sign-in", "settings in the message", "aircall"])
def test_a_crash_shows_no_secret(env, monkeypatch, where):
    """An unexpected error, with and without --verbose: its message and traceback (when shown) hold no secret.

    The crash is forced where the secrets are in the locals: inside the OAuth sign-in (the form with
    the password), inside Aircall's authenticated client, and in a message formatting the settings.
    """
    import httpx
    import requests

    from aircall_sync.runner import Runner
    from aircall_sync.targets.salesforce import SalesforceOrg

    if where == "runner":
        monkeypatch.setattr(Runner, "_chunk", _crash_in_chunk)
    elif where == "sign-in":
        monkeypatch.setattr(requests.Session, "post", _crash)
    elif where == "settings in the message":
        monkeypatch.setattr(SalesforceOrg, "connect", _crash_with_settings)
    else:
        monkeypatch.setattr(httpx.Client, "request", _crash)
    leaks = Leaks(env)
    config = env.config(f"crash-{where}".replace(" ", "-"), "password", state=f"state-crash-{where}.sqlite3")
    for variant in (("--verbose",), ("--verbose", "--log-format", "json"), ()):
        result = invoke(leaks, config, "backfill", "--from", FROM, "--to", TO, global_args=variant)
        assert result.exit_code == 1, result.output
        assert "this is a bug in aircall-sync" in result.stderr
    leaks.add_files(env.tmp / f"state-crash-{where}.sqlite3")
    assert not leaks.found(), leaks.found()


def test_verbose_shows_the_traceback_of_an_unexpected_error(env, monkeypatch):
    from aircall_sync.runner import Runner

    monkeypatch.setattr(Runner, "_chunk", _crash_in_chunk)
    config = env.config("crash-verbose", "password", state="state-crash-verbose.sqlite3")
    result = CliRunner().invoke(app, ["--config", str(config), "--verbose", "backfill", "--from", FROM, "--to", TO],
                                env=ENVIRON)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: forced crash while writing a chunk" in result.stderr


def test_settings_objects_mask_every_secret(env):
    """What a traceback with locals or a careless f-string would print: repr/str of the settings."""
    import copy
    import dataclasses

    from aircall_sync.settings import load_settings

    leaks = Leaks(env)
    import os

    for auth in ("token", "client_credentials", "password", "jwt"):
        old = {k: os.environ.get(k) for k in ENVIRON}
        os.environ.update(ENVIRON)
        try:
            settings = load_settings(env.config(f"repr-{auth}", auth))
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        leaks.add(f"repr {auth}", repr(settings))
        leaks.add(f"str {auth}", str(settings))
        leaks.add(f"asdict {auth}", repr(dataclasses.asdict(settings)))
        leaks.add(f"deepcopy {auth}", repr(copy.deepcopy(settings)))
        leaks.add(f"json {auth}", json.dumps(dataclasses.asdict(settings), default=str))
    assert not leaks.found(), leaks.found()


def test_a_real_process_with_verbose_json_logs_keeps_the_secrets(env):
    """The same as above through a real interpreter (no test runner between the CLI and its streams)."""
    leaks = Leaks(env)
    config = env.config("process", "client_credentials", state="state-process.sqlite3", **{})
    text = config.read_text() + '\n'
    config.write_text(text.replace("[sync]\n", '[sync]\nrevisit = "30d"\n'))
    report = env.tmp / "process.jsonl"
    import os

    # A first sync (no watermark yet) logs an INFO line: there is a log line to look at.
    proc = subprocess.run([sys.executable, "-m", "aircall_sync", "--config", str(config), "--verbose", "--log-format",
                           "json", "sync", "--report", str(report)],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, **ENVIRON, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    log_lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert log_lines, proc.stderr  # --verbose said something, in JSON
    leaks.add("stdout", proc.stdout)
    leaks.add("stderr", proc.stderr)
    leaks.add("report", report.read_bytes())
    leaks.add_files(env.tmp / "state-process.sqlite3")
    assert not leaks.found(), leaks.found()


def test_a_cassette_recorded_with_the_secrets_does_not_hold_them(env, tmp_path):
    from aircall_sync.aircall.client import AircallClient
    from aircall_sync.http import RetryPolicy

    spec = importlib.util.spec_from_file_location("record", REPO / "cassettes" / "record.py")
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    start = END - timedelta(days=1)
    with AircallClient(env.aircall.url + "/v1", AIRCALL_ID, AIRCALL_TOKEN, requests_per_minute=None,
                       retry=RetryPolicy(base_delay=0.05)) as client:
        written = record.record(client, AIRCALL_TOKEN, "aircall-sandbox", start, END, tmp_path)
    leaks = Leaks(env)
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert "authorization" not in text.lower()
        leaks.add(path.name, text)
    assert not leaks.found(), leaks.found()
