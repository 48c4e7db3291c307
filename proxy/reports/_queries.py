"""The report's SQL, one text for SQLite and PostgreSQL: the portable subset (CASE instead of
boolean sums, aliased subqueries), with the few spellings that differ (JSON, temp tables,
bucketing) taken from the store's `Dialect` (`d`).

Plan (schema v3): the report never parses `records.data`. Everything it aggregates is a real column
of `records` (`attempt_reason`, `latency_ms`, `ttft_ms`, `prompt_tokens`, `completion_tokens`,
`cost_usd`, `system_fingerprint`, `guard_failures`, `failed_guards`), and the indexes of schema v3
make each figure a GROUP BY over a covering index:

* attempt 1 of each request (≈95% of rows, the arm is its own `variant`) is aggregated straight from
  `records` (`records_arm_latency`, `records_arm_ttft`, `records_arm_drift`, `records_episode`);
* later non-shadow attempts (fallbacks, retries: a few %) whose attempt 1 is in the window go to a
  small per-report TEMP table `late_{tag}` carrying the arm, route, episode and start time of their
  attempt 1 (intention-to-treat); each figure adds the two parts;
* TEMP table `ep_{tag}`: each episode's arm (its requests' attempt-1 variants).

Temp tables live on the store's read connection; names carry a per-report suffix and are dropped
at the end. Percentiles are exact nearest-rank: the value at an offset of an index-ordered merge of
the two parts, walked from whichever end is nearer.
"""

from __future__ import annotations

from typing import Any

from proxy.records._dialect import Dialect

# nearest-rank percentiles: rank = ceil(p·n)
PERCENTILES = {"p50": 50, "p95": 95, "p99": 99}

# value column of the percentile figures: (records column, late_{tag} column)
PERCENTILE_COLUMNS = {"lat": ("latency_ms", "lat"), "ttft": ("ttft_ms", "ttft")}


def window(alias: str, route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    sql, args = "", []
    if route is not None:
        sql += f" AND {alias}.route = ?"
        args.append(route)
    if since is not None:
        sql += f" AND {alias}.started_at >= ?"
        args.append(since)
    if until is not None:
        sql += f" AND {alias}.started_at < ?"
        args.append(until)
    return sql, args


def _is(condition: str) -> str:
    """1 where `condition` holds, else 0: a sum of it counts (SQLite sums booleans, PostgreSQL does not)."""
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def create_snapshot(d: Dialect, tag: str, route: str | None, since: float | None, until: float | None) -> list[tuple[str, list[Any]]]:
    """Statements (sql, params) that build the temp tables `late_{tag}` and `ep_{tag}`."""
    wa, aa = window("a", route, since, until)
    wr, ar = window("r", route, since, until)
    late = f"late_{tag}"
    ep = f"ep_{tag}"
    return [
        (f"""CREATE TEMP TABLE {late} AS
        SELECT a.route AS route, a.variant AS arm, x.variant AS variant, x.request_id AS request_id,
               x.attempt AS attempt, x.attempt_reason AS reason, x.served AS served, a.started_at AS started_at,
               x.model_served AS model_served, x.prompt_tokens AS pt, x.completion_tokens AS ct,
               x.cost_usd AS cost, x.latency_ms AS lat, x.ttft_ms AS ttft, x.system_fingerprint AS fp,
               x.guard_failures AS guard_failures, x.failed_guards AS failed_guards
        FROM records x JOIN records a ON a.request_id = x.request_id AND a.attempt = 1
        WHERE x.attempt > 1{wa} AND coalesce(x.attempt_reason, '') != 'shadow'""", aa),
        (d.temp_index(f"{late}_lat", late, "route, arm, served, lat"), []),
        (d.temp_index(f"{late}_ttft", late, "route, arm, served, ttft"), []),
        (f"""CREATE TEMP TABLE {ep} AS
        SELECT r.route AS route, r.episode_id AS episode_id, min(r.variant) AS arm,
               CASE WHEN min(r.variant) = max(r.variant) THEN 1 ELSE 2 END AS nv, min(r.started_at) AS started_at
        FROM records r WHERE r.episode_id IS NOT NULL AND r.attempt = 1{wr}
        GROUP BY r.episode_id, r.route""", ar),
        (d.temp_index(f"{ep}_id", ep, "episode_id"), []),
    ]


def drop_snapshot(d: Dialect, tag: str) -> list[str]:
    return [f"DROP TABLE IF EXISTS {d.temp(f'late_{tag}')}", f"DROP TABLE IF EXISTS {d.temp(f'ep_{tag}')}"]


def arms_first(route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """Attempt-1 part per (route, arm): requests, served, prompt, completion, cost, cost_n,
    first, last, n latency, n ttft (covering index records_arm_latency)."""
    w, a = window("r", route, since, until)
    return (f"""SELECT r.route, r.variant, count(*), sum({_is("r.served = 1")}),
        sum(r.prompt_tokens), sum(r.completion_tokens), sum(r.cost_usd), count(r.cost_usd),
        min(r.started_at), max(r.started_at),
        count(CASE WHEN r.served = 1 THEN r.latency_ms END), count(CASE WHEN r.served = 1 THEN r.ttft_ms END)
    FROM records r WHERE r.attempt = 1{w} GROUP BY r.route, r.variant""", a)


def arms_late(tag: str) -> str:
    """Later-attempt part per (route, arm): attempts, served, fallbacks, retries, prompt,
    completion, cost, cost_n, n latency, n ttft."""
    return f"""SELECT route, arm, count(*), sum({_is("served = 1")}), sum({_is("reason = 'fallback'")}),
        sum({_is("reason = 'retry'")}),
        sum(pt), sum(ct), sum(cost), count(cost),
        count(CASE WHEN served = 1 THEN lat END), count(CASE WHEN served = 1 THEN ttft END)
    FROM late_{tag} GROUP BY route, arm"""


def episodes_mixed_arms(tag: str, route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """Per (route, arm): mixed episodes (more than one variant) the arm's requests belong to. With the
    single-variant episodes of `episodes` this makes each arm's distinct episodes."""
    w, a = window("r", route, since, until)
    return (f"""SELECT e.route, r.variant, count(DISTINCT e.episode_id)
    FROM ep_{tag} e CROSS JOIN records r
    WHERE e.nv > 1 AND r.episode_id = e.episode_id AND r.route = e.route AND r.attempt = 1{w}
    GROUP BY 1, 2""", a)


def value_at(tag: str, column: str, route: str | None, since: float | None, until: float | None,
             descending: bool) -> tuple[str, list[Any]]:
    """The value at a 0-based offset (params: route, arm, route, arm, offset) of an arm's sorted served
    attempts: merge of two index-ordered streams (attempt 1 from records, later ones from late_{tag})."""
    rcol, lcol = PERCENTILE_COLUMNS[column]
    _, since_until = window("r", None, since, until)
    w, _ = window("r", None, since, until)
    order = " DESC" if descending else ""
    return (f"""SELECT r.{rcol} FROM records r
        WHERE r.route = ? AND r.variant = ? AND r.attempt = 1 AND r.served = 1 AND r.{rcol} IS NOT NULL{w}
    UNION ALL
    SELECT {lcol} FROM late_{tag} WHERE route = ? AND arm = ? AND served = 1 AND {lcol} IS NOT NULL
    ORDER BY 1{order} LIMIT 1 OFFSET ?""", since_until)


def _failed(tag: str, route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    w, a = window("r", route, since, until)
    return (f"""WITH g AS (
        SELECT r.route AS route, r.variant AS arm, r.request_id AS request_id, r.failed_guards AS failed_guards
        FROM records r WHERE r.guard_failures > 0 AND r.attempt = 1{w}
        UNION ALL
        SELECT route, arm, request_id, failed_guards FROM late_{tag} WHERE guard_failures > 0)""", a)


def guard_classes(d: Dialect, tag: str, route: str | None, since: float | None,
                  until: float | None) -> tuple[str, list[Any]]:
    with_, a = _failed(tag, route, since, until)
    return (f"""{with_}
    SELECT g.route, g.arm, {d.json_item("j.value", 0)}, {d.json_item("j.value", 1)},
        count(*), count(DISTINCT g.request_id)
    FROM g, {d.json_elements("g.failed_guards")} j
    GROUP BY 1, 2, 3, 4""", a)


def guard_requests(tag: str, route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    with_, a = _failed(tag, route, since, until)
    return (f"""{with_}
    SELECT route, arm, count(DISTINCT request_id) FROM g GROUP BY 1, 2""", a)


def drift(tag: str, route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """Per (route, variant that answered, model_served, fingerprint): first and last start, attempts.
    Later attempts count at their attempt 1's start (as in the arm figures)."""
    w, a = window("r", route, since, until)
    return (f"""SELECT route, variant, model_served, fp, min(f0), max(f1), sum(n) FROM (
        SELECT r.route AS route, r.variant AS variant, r.model_served AS model_served, r.system_fingerprint AS fp,
               min(r.started_at) AS f0, max(r.started_at) AS f1, count(*) AS n
        FROM records r WHERE r.attempt = 1 AND r.model_served IS NOT NULL{w} GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT route, variant, model_served, fp, min(started_at), max(started_at), count(*)
        FROM late_{tag} WHERE model_served IS NOT NULL GROUP BY 1, 2, 3, 4) AS both_parts
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 5""", a)


def episodes(tag: str) -> str:
    return f"SELECT route, CASE WHEN nv > 1 THEN NULL ELSE arm END, count(*) FROM ep_{tag} GROUP BY 1, 2"


def metric_kinds() -> str:
    return f"SELECT metric, level, count(*), sum({_is('value NOT IN (0, 1)')}) FROM outcomes GROUP BY level, metric"


_LATEST = """SELECT {key}, metric, value FROM (
    SELECT {key}, metric, value,
           row_number() OVER (PARTITION BY metric, {key} ORDER BY received_at DESC, id DESC) AS rn
    FROM outcomes WHERE level = ? AND {key} IS NOT NULL) AS ranked WHERE rn = 1"""


def inference_outcomes(d: Dialect, route: str | None, since: float | None, until: float | None,
                       bucket: float) -> tuple[str, list[Any]]:
    """Latest inference outcome per (request, metric), joined to the request's arm; per time bucket."""
    w, a = window("s", route, since, until)
    return (f"""WITH lo AS ({_LATEST.format(key='request_id')})
    SELECT s.route, s.variant, lo.metric, {d.bucket("s.started_at / ?")}, count(*), sum(lo.value),
           sum(lo.value * lo.value), sum({_is("lo.value NOT IN (0, 1)")})
    FROM lo CROSS JOIN records s
    WHERE s.request_id = lo.request_id AND s.attempt = 1{w}
    GROUP BY 1, 2, 3, 4""", ["inference", bucket, *a])


def episode_outcomes(d: Dialect, tag: str, bucket: float) -> tuple[str, list[Any]]:
    """Latest episode outcome per (episode, metric); mixed episodes come back with arm NULL."""
    return (f"""WITH lo AS ({_LATEST.format(key='episode_id')})
    SELECT e.route, CASE WHEN e.nv > 1 THEN NULL ELSE e.arm END, lo.metric, {d.bucket("e.started_at / ?")},
           count(*), sum(lo.value), sum(lo.value * lo.value), sum({_is("lo.value NOT IN (0, 1)")})
    FROM lo JOIN ep_{tag} e ON e.episode_id = lo.episode_id
    GROUP BY 1, 2, 3, 4""", ["episode", bucket])


def coverage_requests(route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """Per arm: inference outcome rows received (corrections included) and requests with one.
    Needs no temp table, so it runs on the second read lane."""
    w, a = window("s", route, since, until)
    return (f"""
    SELECT s.route, s.variant, 'requests', sum(o.n), count(*)
    FROM (SELECT request_id, count(*) AS n FROM outcomes WHERE level = 'inference' AND request_id IS NOT NULL
          GROUP BY request_id) o
    CROSS JOIN records s
    WHERE s.request_id = o.request_id AND s.attempt = 1{w} GROUP BY 1, 2""", a)


def coverage_episodes(tag: str) -> str:
    """Per arm: episode outcome rows received and episodes (not mixed) with one."""
    return f"""SELECT e.route, e.arm, 'episodes', count(*), count(DISTINCT e.episode_id)
    FROM outcomes o JOIN ep_{tag} e ON e.episode_id = o.episode_id
    WHERE o.level = 'episode' AND e.nv = 1 GROUP BY 1, 2"""
