"""Run every benchmark in ``benchmarks/`` and write the figures to ``docs/benchmarks.md``.

Each script (every ``benchmarks/*.py`` except this one and ``_``-prefixed helpers) runs in its own
subprocess, one after another (they measure side by side inside themselves; running two at once
would only add noise), with ``--json PATH``; its own output is passed through unchanged. The report
is one Markdown table — benchmark, metric, target, measured, ratio, pass — plus the date, the
machine and the exact command, so the figures can be reproduced and compared.

    python benchmarks/run_all.py [--quick] [--only load,events] [--args 'load=--jobs 40'] [--output docs/benchmarks.md]

``--quick`` passes smaller sizes to each script (fewer jobs, sessions, rows, repeats) for a fast
run; the targets stay those of the full sizes, so read a quick run's PASS/FAIL as indicative.
``--args NAME=ARGS`` (repeatable) passes arguments of your own to one script, after any ``--quick``
ones (the last of a repeated option wins); the report's Commands table shows what each ran with.
Exit status 1 when any target is missed or any script fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Smaller sizes for --quick, per script (scripts not listed run with their defaults).
QUICK_ARGS: dict[str, list[str]] = {
    "turnaround": ["--jobs", "10"],
    "events": ["--repeat", "100"],
    "object_info": ["--repeat", "3", "--size-mb", "10"],
    "gallery": ["--jobs", "2000", "--files", "30"],
    "load": ["--jobs", "20", "--sessions", "6", "--browsers", "1"],
}
# What each script is about, for the report (new scripts show their docstring's first line).
ORDER = ["turnaround", "events", "object_info", "gallery", "load"]


def discover() -> list[Path]:
    found = [p for p in HERE.glob("*.py") if p.stem != "run_all" and not p.stem.startswith("_")]
    return sorted(found, key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return (f"{os.cpu_count()} CPUs{' (' + model + ')' if model else ''}{mem}; {platform.system()} "
            f"{platform.release()} {platform.machine()}; Python {platform.python_version()}")


def run_one(script: Path, extra: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-json-") as tmp:
        out = Path(tmp) / f"{script.stem}.json"
        cmd = [sys.executable, str(script.relative_to(ROOT)), *extra, "--json", str(out)]
        shown = " ".join(shlex.quote(c) for c in ["python", *cmd[1:-2]])
        print(f"\n=== {script.stem}: {shown}", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, timeout=timeout)
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {timeout:.0f} s"
        took = time.monotonic() - t0
        records: list[dict[str, Any]] = []
        if out.exists():
            records = json.loads(out.read_text(encoding="utf-8"))
    print(f"=== {script.stem}: exit {code}, {took:.0f} s", flush=True)
    if not records:
        records = [{"metric": "(the script wrote no figures)", "target": None, "measured": None, "unit": "",
                    "ratio": None, "pass": False}]
    return {"name": script.stem, "command": shown, "exit": code, "seconds": took, "records": records}


def _num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(results: list[dict[str, Any]], command: str, started: dt.datetime, total_s: float, quick: bool,
           note: str = "") -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/run_all.py`; do not edit by hand. Every script measures side by side in one",
        "run and prints PASS/FAIL against its target; machines are noisy, so the ratios and the pass/fail",
        "matter more than the absolute times. The test suite never asserts timings.",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Command: `{command}`" + (" (quick sizes: read PASS/FAIL as indicative)" if quick else ""),
        f"- Total time: {total_s / 60:.1f} min",
        *([f"- Note: {note}"] if note else []),
        "",
        "| benchmark | metric | target | measured | ratio | pass |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["records"]:
            measured = _num(r.get("measured"))
            unit = r.get("unit") or ""
            if measured and unit:
                measured += f" {unit}"
            verdict = {True: "PASS", False: "**FAIL**", None: "—"}[r.get("pass")]
            cells = (res["name"], r.get("metric", ""), r.get("target") or "", measured, _num(r.get("ratio")), verdict)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "## Commands", "", "| benchmark | command | exit | time |", "|---|---|---|---|"]
    for res in results:
        lines.append(f"| {res['name']} | `{_cell(res['command'])}` | {_cell(res['exit'])} | {res['seconds']:.0f} s |")
    lines += ["", "Ratios: the side-by-side ratio where the benchmark has one (panel / floor, typed parsing /",
              "bare `json.loads`), otherwise measured / target for timed targets, or the share of sessions",
              "that passed. `—` in the pass column: a figure printed for information, without a target.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes for a fast run")
    ap.add_argument("--only", default="", help="comma-separated script names (default: all)")
    ap.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per script")
    ap.add_argument("--note", default="", help="one sentence for the report (e.g. why sizes were reduced)")
    ap.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                    help="extra arguments for one script, e.g. 'load=--jobs 40 --sessions 25'")
    args = ap.parse_args(argv)
    extra: dict[str, list[str]] = {}
    for item in args.args:
        name, sep, rest = item.partition("=")
        if not sep:
            ap.error(f"--args wants NAME=ARGS, not {item!r}")
        extra[name.strip()] = extra.get(name.strip(), []) + shlex.split(rest)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/run_all.py", *(argv if argv is not None
                                                                                     else sys.argv[1:])])
    scripts = discover()
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = (wanted | set(extra)) - {p.stem for p in scripts}
        if unknown:
            ap.error(f"no such benchmark: {', '.join(sorted(unknown))}")
        scripts = [p for p in scripts if p.stem in wanted]
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    if not args.only:
        unknown = set(extra) - {p.stem for p in scripts}
        if unknown:
            ap.error(f"no such benchmark: {', '.join(sorted(unknown))}")
    results = [run_one(p, (QUICK_ARGS.get(p.stem, []) if args.quick else []) + extra.get(p.stem, []), args.timeout)
               for p in scripts]
    total = time.monotonic() - t0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results, command, started, total, args.quick, args.note), encoding="utf-8")
    failed = [(res["name"], r["metric"]) for res in results for r in res["records"] if r.get("pass") is False]
    broken = [res["name"] for res in results if res["exit"] not in (0, 1)]
    print(f"\nwrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output} "
          f"({total / 60:.1f} min)")
    for name, metric in failed:
        print(f"  FAIL {name}: {metric}")
    for name in broken:
        print(f"  {name} did not finish normally")
    print("ALL PASS" if not failed and not broken else f"{len(failed)} FAIL")
    return 1 if failed or broken else 0


if __name__ == "__main__":
    sys.exit(main())
