"""The Aircall client layer replayed from the recorded sandbox cassettes (no server running).

Re-record with ``python cassettes/record.py``; a test below fails if a
recording carries credentials.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import vcr

from aircall_sync import rules
from aircall_sync.aircall.client import AircallClient
from aircall_sync.http import RetryPolicy
from aircall_sync.sandbox.aircall_api import DEFAULT_API_ID, DEFAULT_API_TOKEN

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"


def replayer() -> vcr.VCR:
    # Ports differ between recordings: match on what the client decides, not the host.
    return vcr.VCR(cassette_library_dir=str(CASSETTES), record_mode="none", match_on=["method", "path", "query"])


def offline_client() -> AircallClient:
    # Any host: the cassette answers. Port 9 (discard) proves nothing reaches the network.
    return AircallClient("http://127.0.0.1:9/v1", DEFAULT_API_ID, DEFAULT_API_TOKEN, requests_per_minute=None,
                         retry=RetryPolicy(max_attempts=1))


def _recorded_range():
    import importlib.util

    spec = importlib.util.spec_from_file_location("record", CASSETTES / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SANDBOX_START, module.SANDBOX_END


def test_ping_replays():
    with replayer().use_cassette("aircall-sandbox-ping.yaml") as cassette, offline_client() as client:
        client.ping()
    assert cassette.play_count == 1


def test_calls_replay_and_parse():
    start, end = _recorded_range()
    with replayer().use_cassette("aircall-sandbox-calls.yaml") as cassette, offline_client() as client:
        calls = list(client.iter_calls(start, end))
    assert cassette.all_played
    assert len(calls) == len({c.id for c in calls}) == 120
    assert all(start <= c.started_at < end for c in calls)
    assert {rules.call_kind(c) for c in calls if c.ended_at} == set(rules.Kind)


@pytest.mark.parametrize("path", sorted(CASSETTES.glob("*.yaml")), ids=lambda p: p.name)
def test_cassettes_carry_no_credentials(path):
    text = path.read_text(encoding="utf-8")
    assert "authorization" not in text.lower()
    assert DEFAULT_API_TOKEN not in text
    assert "sandbox" in path.name  # the cassette says what it was recorded against
