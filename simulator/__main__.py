"""`python -m simulator --host 127.0.0.1 --port 8900 [--latency-ms 20] [--seed N]`."""

from __future__ import annotations

import argparse

from simulator.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Simulated OpenAI / Anthropic upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="fixed latency of both providers (ms)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for ids, jitter and fault probabilities",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.latency_ms, args.seed, args.log_level)


if __name__ == "__main__":
    main()
