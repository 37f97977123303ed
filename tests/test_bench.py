"""``rubot bench`` runs end to end (a smoke run): every scenario measured on both sides and written as JSON.

No timing is asserted here — timings depend on the machine; the figures and their targets live in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.stacks import ROOT, require_services

SCENARIOS = {"per_step", "one_step", "throughput", "resume", "agent_turn", "sql_per_step", "embedded_step"}


def test_rubot_bench_measures_every_scenario_against_raw_celery(tmp_path):
    require_services()
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "rubot_app.scripts.cli", "bench", "--quick", "--concurrency", "2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = {f["scenario"]: f for f in json.loads(out.read_text())}
    assert set(figures) == SCENARIOS
    for name, figure in figures.items():
        assert figure["rubot"] > 0, name
        if figure["raw"] is not None:
            assert figure["ratio"] == figure["rubot"] / figure["raw"]
    assert "ratio" in result.stdout and "per_step" in result.stdout
    # SQL per step is counted, not timed: a step without side effects costs one write transaction
    assert figures["sql_per_step"]["extra"]["writes_per_step"] >= 1
