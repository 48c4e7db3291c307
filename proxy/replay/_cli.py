"""`sluicegate replay`, behind the argument parser: exit codes, output streams, Ctrl-C.

Exit codes: 0 the replay ran and no `--fail-on` rule is met; 1 a rule is met (each is printed);
2 it could not run as asked (unreadable corpus, unknown variant, policy errors, a results file of
another comparison, bad `--fail-on`) — kept apart from 1 so a CI gate never mistakes a typo for a
regression; 130 interrupted (the results so far are kept: run the same command again to resume).

Output: the summary on stdout (text, or JSON with `--json`); the progress line and the one-line
verdict on stderr. `transports` (provider name -> httpx transport) is for tests, as in the server.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from proxy.replay._gate import parse_fail_on
from proxy.replay._junit import write_junit
from proxy.replay._model import RECORDED
from proxy.replay._record import load_record, render_side_by_side, replay_record
from proxy.replay._render import one_line, render_summary
from proxy.replay._run import ReplayOptions, ReplayRun, ReplayUsageError, run_replay

__all__ = ["cli_replay"]


def _policy(path: str, err: TextIO) -> Any | None:
    from proxy.config import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        print(str(exc), file=err)
    except OSError as exc:
        print(f"{path}: cannot read the policy: {exc.strerror}", file=err)
    return None


def cli_replay(args: argparse.Namespace, *, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
               stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if args.record is not None:
        if args.corpus is not None:
            print("replay: give a CORPUS or --record ID, not both", file=err)
            return 2
        return _one_record(args, transports, out, err)
    if args.corpus is None:
        print("replay: give a CORPUS file (from `sluicegate corpus build`) or --record ID", file=err)
        return 2
    if not args.variant:
        print("replay: --variant MODEL is required with a corpus (the policy model to replay it against)", file=err)
        return 2
    try:
        rules = tuple(parse_fail_on(args.fail_on))
    except ValueError as exc:
        print(str(exc), file=err)
        return 2
    policy = _policy(args.policy, err)
    if policy is None:
        return 2
    options = ReplayOptions(corpus=Path(args.corpus), variant=args.variant, baseline=args.baseline or RECORDED,
                            concurrency=args.concurrency, rate=args.rate, judge=args.judge,
                            out=Path(args.out) if args.out else None, fail_on=rules,
                            cache_ttl_s=args.cache_ttl)

    async def replay() -> ReplayRun:
        if not args.cache:
            return await run_replay(policy, options, transports=transports, progress=err)
        from proxy.cli import _store_url
        from proxy.replay._cache import baseline_cache

        async with baseline_cache(_store_url(args.store)) as cache:
            return await run_replay(policy, dataclasses.replace(options, cache=cache), transports=transports,
                                    progress=err)

    try:
        run: ReplayRun = asyncio.run(replay())
    except ReplayUsageError as exc:
        print(f"replay: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print(f"\nreplay: interrupted; the items finished so far are in {options.out_path} — run the same "
              "command again to resume", file=err)
        return 130
    from proxy.server._gateway import effective_taxonomy

    text = render_summary(run.summary)
    if args.junit:
        write_junit(args.junit, run.results, run.summary, taxonomy=effective_taxonomy(policy), summary_text=text,
                    duration_s=run.duration_s)
    if args.json:
        out.write(orjson.dumps(run.summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(text + "\n")
    out.flush()
    for why in run.gate_met:
        print(f"replay: --fail-on {why}", file=err)
    print(one_line(run.summary) + f" (results: {run.out})", file=err)
    return run.exit_code


def _one_record(args: argparse.Namespace, transports: Mapping[str, httpx.AsyncBaseTransport] | None,
                out: TextIO, err: TextIO) -> int:
    from proxy.cli import _store_url
    from proxy.records import open_store

    policy = _policy(args.policy, err)
    if policy is None:
        return 2

    async def run() -> Any:
        store = open_store(_store_url(args.store))
        await store.open()
        try:
            row = await load_record(store, args.record)
        finally:
            await store.close()
        return await replay_record(policy, row, variant=args.variant, transports=transports)

    try:
        result = asyncio.run(run())
    except ReplayUsageError as exc:
        print(f"replay: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        out.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(render_side_by_side(result) + "\n")
    out.flush()
    return 0
