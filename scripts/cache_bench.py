"""What prompt caching saves on a 12-turn agent run: no caching, the placement before conversation caching, and now.

Run from a checkout (it uses the scenario in ``tests/cost_workflows.py``)::

    .venv/bin/python scripts/cache_bench.py [--json]

It starts an embedded Rubot deployment in a temporary folder (SQLite, filesystem broker, an in-process worker),
and runs the same 12-turn support conversation (11 tool calls) once per model class and cache placement, through
the real ``anthropic`` SDK against :class:`~pipeline.testing.MessagesStandIn`, which simulates Anthropic's prompt
cache (breakpoints, TTLs, lookback, per-model minimum length) and bills each request at the prices of
``pipeline/llm/default_prices.py``. It prints what the stand-in billed and what Rubot recorded for each run.
Nothing leaves 127.0.0.1; the numbers are deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEMENTS = {"off": "no caching", "prefix": "before (system + last tool)", "conversation": "now (conversation)"}


def measure(home: Path) -> list[dict[str, object]]:
    """Run every (model, placement) once; returns one row per run."""
    import pipeline
    from pipeline import runtime as rubot_runtime
    from pipeline.embedded import inprocess
    from pipeline.hosting import make_app
    from pipeline.models.anthropic import AnthropicModel
    from pipeline.store import migrate
    from pipeline.testing import MessagesStandIn
    from rubot_app.config.settings import load
    from tests import cost_workflows as cw

    settings = load({"RUBOT_HOME": str(home), "RUBOT_WORKFLOW_MODULES": "tests.cost_workflows"})
    runtime = rubot_runtime.of_app(make_app(settings, name="rubot-bench"))
    migrate.upgrade(runtime.db)
    rubot_runtime.install(runtime)
    rows = []
    with inprocess.worker(runtime.app, concurrency=2, loglevel="WARNING"):
        for key, model in cw.MODELS.items():
            for mode in cw.MODES:
                with MessagesStandIn(
                    cw.script(), prices=settings.prices, cache_minimums=settings.cache_minimums
                ) as stand_in:
                    runtime.model = AnthropicModel("bench-key", base_url=stand_in.url)
                    run = pipeline.run(cw.WORKFLOWS[(key, mode, "5m")], input=cw.INPUT, timeout=300)
                    if run.status != "completed":
                        raise SystemExit(f"{key}/{mode}: run {run.status}: {run.error}")
                    rows.append(
                        {
                            "model": model,
                            "placement": mode,
                            "billed_micros": stand_in.billed_micros,
                            "recorded_micros": run.cost_micros,
                            "turns": len(stand_in.message_requests),
                            "cache_read_tokens": run.tokens.cache_read_tokens,
                            "cache_write_tokens": run.tokens.cache_write_tokens,
                            "input_tokens": run.tokens.input_tokens,
                        }
                    )
    runtime.db.dispose()
    return rows


def table(rows: list[dict[str, object]]) -> list[str]:
    lines = [
        f"{'model':<20} {'placement':<30} {'billed USD':>11} {'vs none':>8} {'recorded USD':>13} "
        f"{'input':>8} {'cache write':>11} {'cache read':>10}"
    ]
    baseline = {r["model"]: r["billed_micros"] for r in rows if r["placement"] == "off"}
    for r in rows:
        saving = 1 - int(r["billed_micros"]) / int(baseline[r["model"]])  # type: ignore[arg-type]
        lines.append(
            f"{r['model']:<20} {PLACEMENTS[str(r['placement'])]:<30} {int(r['billed_micros']) / 1e6:>11.6f} "  # type: ignore[arg-type]
            f"{-saving:>8.1%} {int(r['recorded_micros']) / 1e6:>13.6f} {r['input_tokens']:>8,} "  # type: ignore[arg-type]
            f"{r['cache_write_tokens']:>11,} {r['cache_read_tokens']:>10,}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # the scenario lives in tests/ of this checkout
    with tempfile.TemporaryDirectory(prefix="rubot-cache-bench-") as home:
        rows = measure(Path(home))
    print(json.dumps(rows, indent=2) if args.json else "\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
