"""The `sluicegate` command: serve, worker, check, export, report, corpus, replay, canary, calibrate, keys,
mock-upstream, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence

import orjson

__all__ = ["main", "parse_time"]

DEFAULT_STORE = "sqlite:///./sluicegate.db"


def _store_url(value: str | None) -> str:
    return value or os.environ.get("SLUICEGATE_STORE") or DEFAULT_STORE


def parse_time(value: str) -> float:
    """Epoch seconds from `1700000000`, an ISO date/time, or an age such as `30m`, `24h`, `7d`
    (`proxy.times`, the one parser the HTTP endpoints use too: nan, inf, 1e400 and negatives are refused)."""
    from proxy.times import BadTime
    from proxy.times import parse_time as parse

    try:
        return parse(value)
    except BadTime as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load_policy(path: str) -> object | None:
    """The policy, or None after printing why it cannot be used (file, line, field)."""
    from proxy.config import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
    except OSError as exc:
        print(f"{path}: cannot read the policy: {exc.strerror}", file=sys.stderr)
    return None


def _cmd_check(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy)
    if policy is None:
        return 1
    print(policy.summary())  # type: ignore[attr-defined]
    from proxy.reports import judge_family_warnings

    for warning in judge_family_warnings(policy):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.logs import configure_logging
    from proxy.server import Settings, create_app, run_servers
    from proxy.server._app import default_spill_path

    policy = _load_policy(args.policy)
    if policy is None:
        return 1
    if not policy.auth.keys and not _loopback(args.host) and not args.allow_unauthenticated:
        print(f"serve: the policy has no caller keys (auth.keys), so anyone who reaches {args.host}:{args.port} "
              "could call your providers on your account. Add keys (`sluicegate keys hash`), bind to 127.0.0.1, "
              "or pass --allow-unauthenticated if a proxy in front already authenticates callers.", file=sys.stderr)
        return 2
    if not policy.auth.keys and not _loopback(args.host) and policy.server.allowed_hosts is None:
        print("serve: note: an open gateway answers only to Host localhost, 127.0.0.1 or [::1] (DNS rebinding); "
              "list the names clients (or the proxy in front) use in server.allowed_hosts", file=sys.stderr)
    configure_logging(json=None if args.log_format == "auto" else args.log_format == "json", level=args.log_level)
    from proxy.scoring import is_redis_url

    if args.queue != "memory" and not is_redis_url(args.queue):
        print(f"--queue {args.queue}: expected `memory` or a redis://, rediss:// or unix:// URL", file=sys.stderr)
        return 2
    queue_options = {k: v for k, v in (("stream", args.queue_stream), ("group", args.queue_group),
                                       ("maxlen", args.queue_maxlen)) if v is not None}
    store_url = _store_url(args.store)
    app = create_app(Settings(policy_path=args.policy, policy=policy, store_url=store_url,
                              scoring=args.scoring, watch_policy_s=args.watch_policy,
                              spill_path=args.spill_path or default_spill_path(store_url, args.port),
                              recorder_options={"journal_path": args.journal} if args.journal else {},
                              queue_url=args.queue, queue_options=queue_options,
                              report_metrics_every_s=args.report_metrics_every))
    from proxy.server._connections import ConnectionGuard, guarded_http_protocol, policy_limits, raise_open_file_limit

    raise_open_file_limit(2 * policy.server.max_connections)  # the cap keeps half the descriptors for the rest
    config = uvicorn.Config(
        app, host=args.host, port=args.port, loop="uvloop", lifespan="on",
        access_log=False, log_level="warning", timeout_graceful_shutdown=args.graceful_timeout,
        backlog=2048, server_header=False, proxy_headers=False,
        # httptools with idle and header deadlines and a connection cap (server.idle_timeout, header_timeout,
        # max_connections of the current policy)
        http=guarded_http_protocol(ConnectionGuard(policy_limits(app, policy))),
    )
    configs = [config]
    if args.mock_upstream:
        from proxy.mock_upstream import create_app as create_mock

        host, _, port = args.mock_upstream.rpartition(":")
        configs.append(uvicorn.Config(create_mock(), host=host or "127.0.0.1", port=int(port), loop="uvloop",
                                      http="httptools", access_log=False, log_level="warning", lifespan="off"))
    run_servers(configs)
    return 0


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_keys(args: argparse.Namespace) -> int:
    """Reads the key from stdin (or a hidden prompt): a key on the command line ends up in shell history."""
    import getpass

    from proxy.keys import hash_key

    secret = getpass.getpass("key: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not secret:
        print("no key given: pipe it in (`printf %s \"$KEY\" | sluicegate keys hash`) or type it", file=sys.stderr)
        return 2
    print(hash_key(secret))
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from proxy.logs import configure_logging
    from proxy.providers import build_provider
    from proxy.records import open_store
    from proxy.scoring import JudgeBudget, QueueWorker, Scoring, StoreWorker, build_scorers, is_redis_url, open_queue
    from proxy.scoring._trust import judge_spent_today

    configure_logging(json=None, level="info")
    if args.queue != "store" and not is_redis_url(args.queue):
        print(f"--queue {args.queue}: expected `store` or a redis://, rediss:// or unix:// URL", file=sys.stderr)
        return 2
    policy = _load_policy(args.policy)
    if policy is None:
        return 1

    async def run() -> int:
        providers = {}
        for name, config in policy.providers.items():
            try:
                providers[name] = build_provider(name, config)
            except NotImplementedError as exc:  # only a judge on that provider would need it
                print(f"worker: provider '{name}' skipped: {exc}", file=sys.stderr)
        store = open_store(_store_url(args.store))
        await store.open()
        budget = JudgeBudget(policy.budgets.judge_usd_per_day, spent_today=await judge_spent_today(store))
        scorers = build_scorers(policy, providers, budget)
        queue = None
        if args.queue == "store":
            worker: StoreWorker | QueueWorker = StoreWorker(
                lambda sink: Scoring(policy, scorers, sink, budget=budget), store,
                name=args.name, batch_size=args.batch or 200, metrics=policy.metrics)
        else:  # jobs the gateway offered to a Redis stream, shared with the group's other workers
            options = {k: v for k, v in (("stream", args.queue_stream), ("group", args.queue_group)) if v}
            queue = open_queue(args.queue, policy, consumer=args.consumer, max_deliveries=args.max_deliveries,
                               **options)
            await queue.start()
            worker = QueueWorker(lambda sink, flush: Scoring(
                policy, scorers, sink, queue=queue, budget=budget, store=store, flush=flush,
                batch_size=args.batch or 16, visibility_s=args.visibility), store)
        import signal

        import structlog

        structlog.get_logger("sluicegate.worker").info(
            "worker.started", queue=args.queue if queue is None else queue.stats().get("stream"),
            group=None if queue is None else queue.stats().get("group"), consumer=args.consumer)
        if args.metrics_port:
            from proxy.server._metrics import serve_worker_metrics

            serve_worker_metrics(worker.scoring.stats, args.metrics_port, args.metrics_host)
        running = asyncio.create_task(worker.run(once=args.once))
        for sig in (signal.SIGTERM, signal.SIGINT):  # stop between batches: what was claimed comes back later
            asyncio.get_running_loop().add_signal_handler(sig, running.cancel)
        try:
            await running
        except asyncio.CancelledError:
            pass
        finally:
            if queue is not None:
                await queue.close()
            for adapter in providers.values():
                await adapter.close()
            await store.close()
        print(f"scored: {worker.scoring.stats()}", file=sys.stderr)
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 130


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from proxy.records import open_store
    from proxy.scoring._calibration import render_calibration
    from proxy.scoring._trust import judge_calibrations

    policy = _load_policy(args.policy)
    if policy is None:
        return 1
    if args.scorer is not None and getattr(policy.scorers.get(args.scorer), "kind", None) != "llm_judge":
        judges = sorted(n for n, c in policy.scorers.items() if c.kind == "llm_judge") or ["none"]
        print(f"--scorer {args.scorer}: not an llm_judge scorer of the policy; its judges: {', '.join(judges)}",
              file=sys.stderr)
        return 2

    async def run() -> dict:
        store = open_store(_store_url(args.store))
        await store.open()
        try:
            return await judge_calibrations(store, policy, only=args.scorer)
        finally:
            await store.close()

    results = asyncio.run(run())
    if args.json:
        out = {name: (c if isinstance(c, str) else c.to_dict()) for name, c in results.items()}
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        for name, cal in results.items():
            print(f"{name}: {cal}" if isinstance(cal, str) else render_calibration(cal))
            print()
    return 0


def _cmd_canary(args: argparse.Namespace) -> int:
    from proxy.canary._manual import apply_action, plan_action
    from proxy.canary._state import canary_status
    from proxy.records import open_store

    policy = _load_policy(args.policy)
    if policy is None:
        return 1
    route = policy.routes.get(args.route)
    if route is None or route.canary is None:
        canaries = sorted(n for n, r in policy.routes.items() if r.canary is not None) or ["none"]
        print(f"no canary route '{args.route}' in {args.policy}; its canary routes: {', '.join(canaries)}",
              file=sys.stderr)
        return 2
    if args.action != "status" and not args.reason:
        print(f"canary {args.action} needs --reason (it is recorded with the decision)", file=sys.stderr)
        return 2

    async def run() -> int:
        store = open_store(_store_url(args.store))
        await store.open()
        try:
            if args.action == "status":
                from proxy.reports._render_text import canary_lines

                from proxy.canary._render import evaluation_lines

                print("\n".join(canary_lines(await canary_status(store, policy, args.route, limit=50))))
                print("\n".join(await evaluation_lines(store, policy, args.route)))  # now: the rule and the plan
                return 0
            plan = await plan_action(store, policy, args.route, args.action)
            await apply_action(store, plan, args.reason, os.environ.get("USER") or "operator")
            print(f"{args.route}: {args.action}: {plan.from_stage:g}% -> {plan.to_stage:g}%, status "
                  f"{plan.status_after}{' (a new canary run)' if plan.new_run else ''} (serving processes pick it "
                  "up within a few seconds)")
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def _cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the store's schema migrations (serving processes also do it when they open the store; run
    this once before starting replicas, e.g. as an init container)."""
    from proxy.records import open_store
    from proxy.records._migrate import schema_versions

    url = _store_url(args.store)

    async def run() -> int:
        before, target = await schema_versions(url)
        if args.check:
            behind = before is None or before < target
            print(f"{open_store(url).url}: schema {before if before is not None else 'absent'}, this sluicegate "
                  f"needs {target}" + (" — run `sluicegate migrate`" if behind else " (up to date)"))
            return 1 if behind else 0
        store = open_store(url)
        await store.open()  # migrates, under the store's own lock (one process at a time)
        await store.close()
        after, _ = await schema_versions(url)
        print(f"{store.url}: schema {before if before is not None else 'absent'} -> {after}")
        return 0

    return asyncio.run(run())


def _cmd_prune(args: argparse.Namespace) -> int:
    from proxy.records import open_store
    from proxy.records._retention import prune

    try:
        older_than = time.time() - parse_time(args.older_than)
    except argparse.ArgumentTypeError as exc:
        print(f"--older-than: {exc}", file=sys.stderr)
        return 2
    if older_than <= 0:
        print("--older-than: give an age such as 90d or 12h", file=sys.stderr)
        return 2

    def progress(table: str, total: int) -> None:
        print(f"\rprune: {table}: {total:,} deleted", end="", file=sys.stderr, flush=True)

    async def run() -> dict[str, int]:
        store = open_store(_store_url(args.store))
        await store.open()
        try:
            return await prune(store, older_than, batch=args.batch, progress=progress)
        finally:
            await store.close()

    deleted = asyncio.run(run())
    print(file=sys.stderr)
    print("pruned " + ", ".join(f"{table} {n:,}" for table, n in deleted.items())
          + f" (older than {args.older_than}; expired cache entries)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from proxy.records import open_store

    async def run() -> int:
        store = open_store(_store_url(args.store))
        await store.open()
        try:
            rows = await store.query_records(since=args.since, until=args.until, route=args.route, limit=args.limit)
        finally:
            await store.close()
        out = sys.stdout.buffer
        for row in rows:
            out.write(orjson.dumps(row) + b"\n")
        out.flush()
        print(f"exported {len(rows)} records", file=sys.stderr)
        return 0

    return asyncio.run(run())


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from proxy.records import open_store
    from proxy.reports import build_report, policy_sections, render_html, render_text, report_inputs

    inputs: dict = {}
    policy = None
    if args.policy:
        policy = _load_policy(args.policy)
        if policy is None:
            return 1
        inputs = report_inputs(policy)

    async def run() -> dict:
        store = open_store(_store_url(args.store))
        await store.open()
        try:
            report = await build_report(store, route=args.route, since=args.since, until=args.until,
                                        mde=args.mde, **inputs)
            report.update(await policy_sections(store, policy, route=args.route, since=args.since,
                                                until=args.until))
            return report
        finally:
            await store.close()

    report = asyncio.run(run())
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    elif args.html:
        path = Path(args.html)
        path.write_text(render_html(report), encoding="utf-8")
        print(path.resolve())
    else:
        print(render_text(report))
    return 0


def _cmd_corpus_build(args: argparse.Namespace) -> int:
    from proxy.corpus import BuildOptions, CorpusHeader, CorpusPolicy, build_corpus
    from proxy.records import open_store

    policy = None
    if args.policy:
        policy = _load_policy(args.policy)
        if policy is None:
            return 1
        if args.route not in policy.routes:  # type: ignore[attr-defined]
            print(f"--route {args.route}: not a route of {args.policy} (its capture mode decides what a "
                  f"corpus may hold)", file=sys.stderr)
            return 2
    if args.size < 0 or args.per_class_quota < 0:
        print("--size and --per-class-quota must be >= 0", file=sys.stderr)
        return 2
    options = BuildOptions(route=args.route, size=args.size, since=args.since, until=args.until,
                           per_class_quota=args.per_class_quota, include_failures=args.include_failures,
                           seed=args.seed, policy=CorpusPolicy.from_policy(policy))
    tty = sys.stderr.isatty()
    shown = [0]

    def progress(scanned: int, total: int) -> None:  # a live count on a terminal, else a line per 10%
        tenth = scanned * 10 // max(total, 1)
        line = f"corpus: scanned {scanned:,} of {total:,} records"
        if tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif tenth > shown[0]:
            shown[0] = tenth
            print(line, file=sys.stderr, flush=True)

    async def run() -> CorpusHeader:
        store = open_store(_store_url(args.store))
        await store.open()
        try:
            return await build_corpus(store, options, args.out, progress=progress)
        finally:
            await store.close()

    try:
        header = asyncio.run(run())
    finally:
        if tty:
            print(file=sys.stderr)
    c = header.counts
    failures = sum(s.selected for key, s in c.strata.items() if not key.endswith("|ok"))
    where = "standard output" if args.out == "-" else args.out
    print(f"corpus: {c.selected:,} items ({failures:,} from failure strata) in {len(c.strata):,} strata "
          f"from {c.records_scanned:,} records ({c.refs_only_skipped:,} refs_only skipped, "
          f"{c.duplicates:,} duplicates, {c.near_duplicates:,} near-duplicates) -> {where}", file=sys.stderr)
    return 0


def _cmd_corpus_show(args: argparse.Namespace) -> int:
    from proxy.corpus import CorpusFormatError, count_items, read_header, render_summary

    try:
        header = read_header(args.file)
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(header.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
            return 0
        print(render_summary(header, name=args.file, items_in_file=count_items(args.file)))
    except CorpusFormatError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.file}: cannot read the corpus: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    """Exit 0 (gate passed), 1 (a --fail-on rule is met), 2 (cannot run as asked), 130 (interrupted)."""
    from proxy.replay import cli_replay

    return cli_replay(args)


def _cmd_mock_upstream(args: argparse.Namespace) -> int:
    from proxy.mock_upstream import MockConfig, load_config, serve

    config = load_config(args.config) if args.config else MockConfig()
    if args.latency_ms is not None:
        config = config.model_copy(update={"default": config.default.model_copy(update={"latency_ms": args.latency_ms})})
    print(f"mock upstream on http://{args.host}:{args.port}/v1", file=sys.stderr)
    asyncio.run(serve(args.host, args.port, config))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo
    from proxy.logs import configure_logging

    configure_logging(json=False, level="warning")
    report = asyncio.run(run_demo(users=args.users, seed=args.seed, store=args.store))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if report["demo"]["recovered"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluicegate", description="OpenAI-compatible evaluation gateway.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--policy", required=True, help="policy YAML file")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    serve.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                       help="auto: readable on a terminal, JSON otherwise")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--graceful-timeout", type=float, default=30.0,
                       help="seconds in-flight requests get to finish on SIGTERM")
    serve.add_argument("--mock-upstream", metavar="HOST:PORT",
                       help="also run the built-in mock upstream here (demo; no provider keys needed)")
    serve.add_argument("--scoring", choices=("inprocess", "external"), default="inprocess",
                       help="inprocess: sampled answers are scored by a background task of this server; "
                            "external: by `sluicegate worker` processes (reading the store, or the --queue)")
    serve.add_argument("--queue", default="memory", metavar="URL",
                       help="where sampled jobs go: `memory` (bounded, in this process; the default) or "
                            "redis://HOST:PORT/DB (a Redis stream that `sluicegate worker --queue` processes share; "
                            "with --scoring inprocess this server consumes it too)")
    serve.add_argument("--queue-stream", metavar="NAME", help="the Redis stream (default sluicegate:scoring)")
    serve.add_argument("--queue-group", metavar="NAME",
                       help="the consumer group created with the stream (default: scorers:<hash of the scorer names>)")
    serve.add_argument("--queue-maxlen", type=int, metavar="N",
                       help="XADD MAXLEN ~ N (default 100000): a longer backlog loses its oldest jobs, counted")
    serve.add_argument("--report-metrics-every", type=float, default=60.0, metavar="SECONDS",
                       help="how often one replica computes the report for the success-rate gauges of /metrics "
                            "(default 60; 0: never — the report reads the whole store)")
    serve.add_argument("--spill-path", metavar="FILE",
                       help="where records go while the store is down (default: next to an SQLite store, else "
                            "./sluicegate-PORT.spill.jsonl); replayed into the store when it answers again. Put it "
                            "on another disk than an SQLite store, so that one full disk does not stop both")
    serve.add_argument("--journal", metavar="PATH",
                       help="append each record to PATH.N (one write(2), before the response is sent) so that "
                            "kill -9 loses no answered request's record; replayed into the store at the next start. "
                            "Survives a process crash, not a power cut (no fsync). Off by default: the record's capture "
                            "moves onto the request path (~30 µs for a 2 KB record)")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="serve on a non-loopback address although the policy has no caller keys")
    serve.add_argument("--watch-policy", type=float, nargs="?", const=1.0, default=None, metavar="SECONDS",
                       help="reload the policy when its file changes (checked every SECONDS, default 1); "
                            "SIGHUP and POST /admin/reload always work")
    serve.set_defaults(func=_cmd_serve)

    keys = commands.add_parser("keys", help="caller keys: print the hash a policy holds instead of the key")
    keys.add_argument("action", choices=("hash",))
    keys.set_defaults(func=_cmd_keys)

    worker = commands.add_parser("worker", help="score recorded answers (rule, LLM judge, review queue) from the store")
    worker.add_argument("--policy", required=True, help="policy YAML file (routes' sampling and scorers)")
    worker.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    worker.add_argument("--queue", default="store", metavar="SOURCE",
                        help="where work comes from: `store` (records after this worker's cursor; the default) or "
                             "redis://HOST:PORT/DB (jobs `serve --queue redis://…` offered; workers share them)")
    worker.add_argument("--queue-stream", metavar="NAME", help="the Redis stream (default sluicegate:scoring)")
    worker.add_argument("--queue-group", metavar="NAME",
                        help="the consumer group (default: scorers:<hash of the scorer names>, as the gateway's)")
    worker.add_argument("--consumer", metavar="NAME", help="this worker's name in the group (default HOST:PID)")
    worker.add_argument("--visibility", type=float, default=120.0, metavar="SECONDS",
                        help="redis: a claimed job not acked within this long is taken over by another worker")
    worker.add_argument("--max-deliveries", type=int, default=5, metavar="K",
                        help="redis: a job delivered K times without success goes to the <stream>:dead stream")
    worker.add_argument("--name", default="default", help="the worker's cursor name (--queue store)")
    worker.add_argument("--batch", type=int, default=None,
                        help="records read per batch (store; default 200) or jobs claimed per batch (redis; 16)")
    worker.add_argument("--once", action="store_true", help="score what is recorded now, then exit")
    worker.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                        help="serve this worker's scoring metrics (Prometheus) on PORT (default: off)")
    worker.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (0.0.0.0 in a container)")
    worker.set_defaults(func=_cmd_worker)

    canary = commands.add_parser("canary", help="a canary route's stage and decisions; manual promote / rollback")
    canary.add_argument("action", choices=("status", "promote", "rollback", "pause", "resume", "restart"))
    canary.add_argument("route")
    canary.add_argument("--policy", required=True, help="policy YAML file")
    canary.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    canary.add_argument("--reason", help="why (required except for status; recorded with the decision)")
    canary.set_defaults(func=_cmd_canary)

    calib = commands.add_parser("calibrate", help="agreement of each LLM judge with human labels, and trust")
    calib.add_argument("--policy", required=True, help="policy YAML file (the judges and their trust_after)")
    calib.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    calib.add_argument("--scorer", help="one judge scorer (default: every llm_judge scorer)")
    calib.add_argument("--json", action="store_true", help="print JSON")
    calib.set_defaults(func=_cmd_calibrate)

    check = commands.add_parser("check", help="validate a policy file without serving")
    check.add_argument("policy")
    check.set_defaults(func=_cmd_check)

    migrate = commands.add_parser("migrate", help="create or upgrade the store's schema, then exit")
    migrate.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    migrate.add_argument("--check", action="store_true", help="only say whether a migration is needed (exit 1 if so)")
    migrate.set_defaults(func=_cmd_migrate)

    prune_ = commands.add_parser("prune", help="delete records, outcomes and scores older than an age, in batches")
    prune_.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h")
    prune_.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    prune_.add_argument("--batch", type=int, default=5000, help="rows deleted per transaction (default 5000)")
    prune_.set_defaults(func=_cmd_prune)

    export = commands.add_parser("export", help="print records as JSON lines, newest last")
    export.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    export.add_argument("--since", type=parse_time, help="epoch, ISO time, or age like 24h")
    export.add_argument("--until", type=parse_time)
    export.add_argument("--route")
    export.add_argument("--limit", type=int)
    export.add_argument("--format", choices=("jsonl",), default="jsonl")
    export.set_defaults(func=_cmd_export)

    report = commands.add_parser("report", help="per-variant outcomes, verdicts and health: table, JSON or HTML")
    report.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    report.add_argument("--policy", help="policy file: metric types and goals, controls, split weights")
    report.add_argument("--route")
    report.add_argument("--since", type=parse_time, help="epoch, ISO time, or age like 24h")
    report.add_argument("--until", type=parse_time)
    report.add_argument("--mde", type=float, help="minimum detectable difference for boolean metrics (default 0.02)")
    out = report.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the JSON with every figure")
    out.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    report.set_defaults(func=_cmd_report)

    corpus = commands.add_parser("corpus", help="build or show a regression corpus from recorded traffic")
    corpus_commands = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    build = corpus_commands.add_parser(
        "build", help="a stratified, deduplicated sample of a route's served requests with their baseline")
    build.add_argument("--store", help=f"store URL (default: $SLUICEGATE_STORE or {DEFAULT_STORE})")
    build.add_argument("--route", required=True, help="the route whose traffic to sample")
    build.add_argument("--since", type=parse_time, default="30d",
                       help="epoch, ISO time, or age like 30d (default 30d)")
    build.add_argument("--until", type=parse_time)
    build.add_argument("--size", type=int, required=True, help="items in the corpus at most")
    build.add_argument("--per-class-quota", type=int, default=50, metavar="K",
                       help="items at most per failure stratum (default 50)")
    build.add_argument("--include-failures", action=argparse.BooleanOptionalAction, default=True,
                       help="take failure strata by quota (default); --no-include-failures: routine traffic only")
    build.add_argument("--seed", type=int, default=0, help="seed of the random draw (same seed, same corpus)")
    build.add_argument("--out", default="-", metavar="FILE", help="the corpus file (default: standard output)")
    build.add_argument("--policy", help="policy file: the route's capture mode now, scorers' pass labels, "
                                        "metric goals")
    build.set_defaults(func=_cmd_corpus_build)
    show = corpus_commands.add_parser("show", help="a corpus file's make-up: strata, counts, filters")
    show.add_argument("file")
    show.add_argument("--json", action="store_true", help="print the header as JSON")
    show.set_defaults(func=_cmd_corpus_show)

    replay = commands.add_parser(
        "replay", help="re-send a corpus (or one logged request) to a candidate model and compare with a baseline")
    replay.add_argument("corpus", nargs="?", metavar="CORPUS", help="a corpus file from `sluicegate corpus build`")
    replay.add_argument("--policy", required=True, help="policy YAML file (models, the routes' guards and scorers)")
    replay.add_argument("--variant", metavar="MODEL", help="the candidate: a model of the policy")
    replay.add_argument("--baseline", default="recorded", metavar="recorded|MODEL",
                        help="compare with the answers as recorded (default) or send to this model too")
    replay.add_argument("--concurrency", type=int, default=4, help="items in flight at once (default 4)")
    replay.add_argument("--rate", type=float, help="upstream requests per second at most (default: no limit)")
    replay.add_argument("--judge", action="store_true", help="also run the routes' llm_judge scorers (cost shown)")
    replay.add_argument("--out", metavar="FILE", help="results JSON lines, resumable "
                                                      "(default: <corpus>.replay-<variant>.jsonl)")
    replay.add_argument("--junit", metavar="FILE", help="also write JUnit XML (one test case per item)")
    replay.add_argument("--fail-on", metavar="RULES",
                        help="exit 1 when met, comma-separated: new_critical, pass_rate_drop>X[@P], regressions>N, "
                             "errors>N (quote them: '>' is a shell redirection)")
    replay.add_argument("--json", action="store_true", help="print the summary (or the record replay) as JSON")
    replay.add_argument("--record", metavar="ID", help="replay one logged request (attempt or request id) instead")
    replay.add_argument("--store", help=f"with --record or --cache: store URL (default: $SLUICEGATE_STORE or "
                                        f"{DEFAULT_STORE})")
    replay.add_argument("--cache", action="store_true",
                        help="with --baseline MODEL: keep (and reuse) its answers in the store's output cache, so "
                             "reruns compare with the same baseline")
    replay.add_argument("--cache-ttl", type=float, default=30 * 86400, metavar="SECONDS",
                        help="how long --cache keeps a baseline answer (default 30 days)")
    replay.set_defaults(func=_cmd_replay)

    mock = commands.add_parser("mock-upstream", help="run the OpenAI-compatible mock upstream")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8081)
    mock.add_argument("--config", help="YAML file of per-model behaviour")
    mock.add_argument("--latency-ms", type=float, help="latency of every answer")
    mock.set_defaults(func=_cmd_mock_upstream)
    demo = commands.add_parser("demo", help="run the whole loop with simulated users and print the report")
    demo.add_argument("--users", type=int, default=3000, help="simulated users (one episode each)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--store", help="store URL (default: a new SQLite file in a temporary folder)")
    demo.add_argument("--json", action="store_true", help="also print the report as JSON on stdout")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from proxy.records import StoreURLError

    parser = build_parser()
    args = parser.parse_args(argv)
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since > until:  # as the HTTP endpoints: an empty window
        parser.error(f"--since is after --until ({since:.0f} > {until:.0f}): the window would be empty")
    try:
        return int(args.func(args) or 0)
    except StoreURLError as exc:
        print(f"sluicegate {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
