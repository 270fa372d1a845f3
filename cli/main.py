"""`gateway`: batches, one-off completions and job checks against a gateway's REST API.

    gateway batch submit prompts.jsonl --wait --output results.jsonl
    gateway batch follow batch_... --output results.jsonl
    gateway complete "Summarise this in one line: ..."
    gateway jobs 0123abcd...

The gateway's address and token come from --url / --token or GATEWAY_URL / GATEWAY_TOKEN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cli import batch
from cli.client import CliError, GatewayClient

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_NOT_COMPLETED = 3


def connection_options(*, with_defaults: bool) -> argparse.ArgumentParser:
    """--url/--token/--timeout, accepted before or after the command. Only the top level has
    defaults: a subcommand's default would overwrite what was given before it."""

    def default(value: Any) -> Any:
        return value if with_defaults else argparse.SUPPRESS

    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url", default=default(os.environ.get("GATEWAY_URL", DEFAULT_URL)), help="the gateway (GATEWAY_URL)"
    )
    options.add_argument("--token", default=default(os.environ.get("GATEWAY_TOKEN")), help="a JWT (GATEWAY_TOKEN)")
    options.add_argument("--timeout", type=float, default=default(120.0), help="seconds to wait for an answer")
    return options


def build_parser() -> argparse.ArgumentParser:
    common = connection_options(with_defaults=False)
    parser = argparse.ArgumentParser(
        prog="gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_options(with_defaults=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    batch_cmd = commands.add_parser("batch", help="submit and follow batches", parents=[common])
    batch_sub = batch_cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = batch_sub.add_parser("submit", help="upload a JSONL (or JSON array) file as a batch", parents=[common])
    submit.add_argument("file")
    submit.add_argument("--wait", action="store_true", help="follow progress until the batch ends")
    submit.add_argument("--output", "-o", help="with --wait: write the results (JSONL) here")
    submit.add_argument("--completion-window", help="e.g. 24h (the default), 90m")
    submit.add_argument("--metadata", help="a JSON object kept with the batch")
    submit.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    follow = batch_sub.add_parser("follow", help="follow a submitted batch until it ends", parents=[common])
    follow.add_argument("batch_id")
    follow.add_argument("--output", "-o", help="write the results (JSONL) here once it ends")
    follow.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    for name, help_text in (("status", "a batch's status, counts and cost"), ("cancel", "cancel a batch")):
        cmd = batch_sub.add_parser(name, help=help_text, parents=[common])
        cmd.add_argument("batch_id")
    results = batch_sub.add_parser("results", help="download a batch's results", parents=[common])
    results.add_argument("batch_id")
    results.add_argument("--output", "-o", required=True)
    batch_sub.add_parser("list", help="your recent batches", parents=[common])

    complete = commands.add_parser("complete", help="one chat completion, printed", parents=[common])
    complete.add_argument("prompt")
    complete.add_argument("--model")
    complete.add_argument("--provider", choices=("openai", "anthropic"))
    complete.add_argument("--system", help="a system message")
    complete.add_argument("--max-tokens", type=int)
    complete.add_argument("--temperature", type=float)
    complete.add_argument("--json", action="store_true", help="print the whole answer as JSON")

    jobs = commands.add_parser("jobs", help="check an asynchronous job", parents=[common])
    jobs.add_argument("job_id")
    jobs.add_argument("--wait", type=float, default=0, help="long-poll up to this many seconds for it to end")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = run(args)
    except CliError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def run(args: argparse.Namespace) -> int:
    client = GatewayClient(args.url, args.token, timeout=args.timeout)
    try:
        if args.command == "batch":
            return run_batch(client, args)
        if args.command == "complete":
            return run_complete(client, args)
        return run_jobs(client, args)
    finally:
        client.close()


def run_batch(client: GatewayClient, args: argparse.Namespace) -> int:
    if args.action == "submit":
        data = batch.submit(client, args.file, window=args.completion_window, metadata=args.metadata)
        print(f"submitted {data['id']}: {data['requestCounts']['total']} requests", file=sys.stderr)
        if not args.wait:
            print(data["id"])
            return 0
        return finish(client, data["id"], args.output, args.quiet)
    if args.action == "follow":
        return finish(client, args.batch_id, args.output, args.quiet)
    if args.action == "results":
        lines = batch.download(client, args.batch_id, args.output)
        print(f"wrote {lines} result lines to {args.output}", file=sys.stderr)
        return 0
    if args.action == "list":
        for item in client.request("GET", batch.BATCHES):
            print(batch.summary(item))
        return 0
    data = batch.cancel(client, args.batch_id) if args.action == "cancel" else batch.status(client, args.batch_id)
    print(json.dumps(data, indent=2))
    return 0


def finish(client: GatewayClient, batch_id: str, output: str | None, quiet: bool) -> int:
    data = batch.follow(client, batch_id, quiet=quiet)
    print(batch.summary(data), file=sys.stderr)
    if output:
        lines = batch.download(client, batch_id, output)
        print(f"wrote {lines} result lines to {output}", file=sys.stderr)
    print(batch_id)
    return 0 if data["status"] == "completed" else EXIT_NOT_COMPLETED


def run_complete(client: GatewayClient, args: argparse.Namespace) -> int:
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    body: dict[str, Any] = {"messages": messages}
    for field, value in (
        ("model", args.model),
        ("provider", args.provider),
        ("maxTokens", args.max_tokens),
        ("temperature", args.temperature),
    ):
        if value is not None:
            body[field] = value
    data = client.request("POST", "/api/v1/llm/chat/completions", json=body)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(data["content"])
        cost = (data.get("cost") or {}).get("totalCost")
        cost_text = f", ${cost:.6f}" if cost is not None else ""
        tokens = data["usage"]["totalTokens"]
        print(f"[{data['provider']} {data['model']}, {tokens} tokens{cost_text}]", file=sys.stderr)
    return 0


def run_jobs(client: GatewayClient, args: argparse.Namespace) -> int:
    params = {"wait": args.wait} if args.wait else None
    data = client.request("GET", f"/api/v1/llm/jobs/{args.job_id}", params=params)
    print(json.dumps(data, indent=2))
    return 0 if data.get("status") != "failed" else 1


if __name__ == "__main__":
    main()
