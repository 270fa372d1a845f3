"""Micro-benchmark of `shared.pii.mask` over the test corpus (no stack: masking alone).

Prints the time per corpus pass, per row and per KB, best of `--rounds`, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from shared.pii import mask

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "pii_corpus.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (the best one is reported)")
    parser.add_argument("--passes", type=int, default=20, help="corpus passes per round")
    args = parser.parse_args()
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [row["text"] for row in rows]
    # the clean rows (prose and code without findings) joined: the cost of scanning past text
    clean = "\n".join(row["text"] for row in rows if not row["pii"])
    chars = sum(len(t) for t in texts)
    for t in [*texts, clean]:  # warm-up: compile the patterns
        mask(t)
    corpus_s = _best(args.rounds, args.passes, lambda: [mask(t) for t in texts])
    clean_s = _best(args.rounds, args.passes, lambda: mask(clean))
    out = {
        "rows": len(texts),
        "chars": chars,
        "corpus_pass_ms": round(corpus_s * 1e3, 3),
        "corpus_us_per_row": round(corpus_s / len(texts) * 1e6, 2),
        "corpus_us_per_kb": round(corpus_s / chars * 1024 * 1e6, 1),
        "clean_chars": len(clean),
        "clean_us_per_kb": round(clean_s / len(clean) * 1024 * 1e6, 1),
    }
    print(
        f"corpus: {len(texts)} rows, {chars} chars, {out['corpus_pass_ms']} ms per pass, "
        f"{out['corpus_us_per_row']} us per row, {out['corpus_us_per_kb']} us per KB; "
        f"clean rows joined ({len(clean)} chars): {out['clean_us_per_kb']} us per KB"
    )
    print(json.dumps(out))


def _best(rounds: int, passes: int, run: Callable[[], object]) -> float:
    """The fastest round's time per pass, in seconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(passes):
            run()
        best = min(best, (time.perf_counter() - start) / passes)
    return best


if __name__ == "__main__":
    main()
