"""The benchmarks' timing probes name methods of the app; a rename must fail here, not in
the middle of a benchmark run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _schedule() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_schedule", BENCH / "schedule.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("kind", ["runner", "worker"])
def test_every_schedule_probe_names_an_existing_coroutine(kind: str) -> None:
    import inspect

    targets = _schedule().probe_targets(kind)
    assert targets
    for owner, name, _step, _keyed in targets:
        assert inspect.iscoroutinefunction(getattr(owner, name)), f"{owner}.{name}"
