#!/usr/bin/env python3
"""Fails unless a ghz JSON report (ghz -O json) shows every call OK.

ghz exits 0 even when every call failed, so a script must read the
status-code distribution itself.

    python3 bench/ghz/check_report.py report.json
"""
import json
import sys


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    codes = report.get("statusCodeDistribution") or {}
    errors = report.get("errorDistribution") or {}
    count = report.get("count", 0)
    ok = codes.get("OK", 0)
    print(
        f"{report.get('name') or path}: {count} calls, {ok} OK, "
        f"{report.get('rps', 0):.0f} calls/s, "
        f"average {report.get('average', 0) / 1e6:.2f} ms"
    )
    if count == 0 or ok != count or errors:
        print(f"status codes: {codes}", file=sys.stderr)
        for message, n in errors.items():
            print(f"  {n} x {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} REPORT.json")
    sys.exit(main(sys.argv[1]))
