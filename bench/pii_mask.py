"""Micro-benchmark of `shared.pii.mask` over the test corpus (no stack: masking alone).

Times a pass over every corpus row, and one call on the clean rows joined (prose and code with
nothing to mask: the cost of scanning past text). With ``--against REV`` the module as it was at
that git revision runs too, rounds interleaved, so both see the same machine load. CPU time of
this process (not wall time: the cores are shared); the best round and the median are printed,
then one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from shared import pii

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "pii_corpus.jsonl"


def _module_at(rev: str) -> ModuleType:
    """shared/pii.py as it was at ``rev``, imported under a name of its own."""
    source = subprocess.run(
        ["git", "show", f"{rev}:shared/pii.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "pii_at_rev.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("pii_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cpu_per_pass(run: Callable[[], object], passes: int) -> float:
    start = time.process_time()
    for _ in range(passes):
        run()
    return (time.process_time() - start) / passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds")
    parser.add_argument("--passes", type=int, default=10, help="passes per round")
    parser.add_argument("--against", metavar="REV", help="also time shared/pii.py at this git revision")
    args = parser.parse_args()
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [row["text"] for row in rows]
    clean = "\n".join(row["text"] for row in rows if not row["pii"])
    chars = sum(len(t) for t in texts)
    modules = {"current": pii} | ({args.against: _module_at(args.against)} if args.against else {})
    times: dict[tuple[str, str], list[float]] = {}
    for module in modules.values():
        for t in [*texts, clean]:  # warm-up: compile the patterns
            module.mask(t)
    for _ in range(args.rounds):
        for name, module in modules.items():
            mask: Callable[[str], str] = module.mask
            runs = {"corpus": lambda m=mask: [m(t) for t in texts], "clean": lambda m=mask: m(clean)}
            for what, run in runs.items():
                times.setdefault((name, what), []).append(_cpu_per_pass(run, args.passes))
    out: dict[str, object] = {"rows": len(texts), "chars": chars, "clean_chars": len(clean)}
    for (name, what), values in times.items():
        size = chars if what == "corpus" else len(clean)
        best, median = min(values), statistics.median(values)
        print(
            f"{name:>10} {what:>6}: best {best * 1e3:.3f} ms, median {median * 1e3:.3f} ms per pass"
            f" ({best / size * 1024 * 1e6:.1f} us per KB)"
        )
        out[f"{name}_{what}_ms"] = round(best * 1e3, 3)
        out[f"{name}_{what}_us_per_kb"] = round(best / size * 1024 * 1e6, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
