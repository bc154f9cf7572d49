"""Re-record the cassettes of the Aircall client layer.

    python cassettes/record.py                      # against a fresh sandbox (the default)
    python cassettes/record.py --live --config settings.toml --from 2026-10-01 --to 2026-10-02
                                                    # against a real Aircall account

Sandbox recordings are named ``aircall-sandbox-*.yaml``; live ones
``aircall-live-*.yaml`` (not committed unless reviewed: they hold real calls).
The Authorization header is filtered out before anything is written, and the
file is checked for the token afterwards.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import vcr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from aircall_sync.aircall.client import AircallClient  # noqa: E402
from aircall_sync.http import RetryPolicy  # noqa: E402

# Fixed so the sandbox cassettes are the same on every re-recording.
SANDBOX_START = datetime(2026, 10, 20, tzinfo=UTC)
SANDBOX_END = SANDBOX_START + timedelta(days=2)


def recorder(directory: Path) -> vcr.VCR:
    return vcr.VCR(
        cassette_library_dir=str(directory),
        record_mode="all",
        filter_headers=["authorization", "cookie", "set-cookie"],
        match_on=["method", "path", "query"],
        decode_compressed_response=True,
    )


def record(client: AircallClient, token: str, prefix: str, start: datetime, end: datetime, directory: Path) -> list[Path]:
    rec = recorder(directory)
    written = []
    with rec.use_cassette(f"{prefix}-ping.yaml"):
        client.ping()
    written.append(directory / f"{prefix}-ping.yaml")
    with rec.use_cassette(f"{prefix}-calls.yaml"):
        count = sum(1 for _ in client.iter_calls(start, end))
    written.append(directory / f"{prefix}-calls.yaml")
    for path in written:
        if token and token in path.read_text(encoding="utf-8"):
            path.unlink()
            raise SystemExit(f"{path.name}: the API token leaked into the recording; deleted it")
    print(f"recorded {count} calls into {', '.join(p.name for p in written)}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", action="store_true", help="record against the Aircall account in --config")
    parser.add_argument("--config", default="settings.toml")
    parser.add_argument("--from", dest="start", help="live only: first day (YYYY-MM-DD, UTC)")
    parser.add_argument("--to", dest="end", help="live only: last day, inclusive")
    parser.add_argument("--dir", default=str(HERE), help="where to write the cassettes")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    if args.live:
        from aircall_sync.settings import load_settings

        settings = load_settings(args.config)
        a = settings.aircall
        if not (args.start and args.end):
            parser.error("--live needs --from and --to")
        start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
        end = datetime.fromisoformat(args.end).replace(tzinfo=UTC) + timedelta(days=1)
        with AircallClient(a.base_url, a.api_id, a.api_token.reveal(), requests_per_minute=a.requests_per_minute) as c:
            record(c, a.api_token.reveal(), "aircall-live", start, end, directory)
        return
    from aircall_sync.sandbox.aircall_api import DEFAULT_API_ID, DEFAULT_API_TOKEN, start_aircall_sandbox

    server, _ = start_aircall_sandbox(calls=120, seed=21, start=SANDBOX_START, end=SANDBOX_END)
    try:
        with AircallClient(server.url + "/v1", DEFAULT_API_ID, DEFAULT_API_TOKEN, requests_per_minute=None,
                           retry=RetryPolicy(base_delay=0.05)) as c:
            record(c, DEFAULT_API_TOKEN, "aircall-sandbox", SANDBOX_START, SANDBOX_END, directory)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
