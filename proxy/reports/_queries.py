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

from collections.abc import Callable
from typing import Any

from proxy.records._dialect import Dialect

# nearest-rank percentiles: rank = ceil(p·n)
PERCENTILES = {"p50": 50, "p95": 95, "p99": 99}

Expr = Callable[[str], tuple[str, list[Any]]]  # SQL over a row alias, and its parameters

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


def scan_window(alias: str, route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """`window`, written so that no index on route or started_at is used for it (`|| ''`, `+ 0`): the
    per-unit queries read every attempt-1 row of the window, and a covering index (records_request) serves
    them where a route/time index would fetch each whole row."""
    sql, args = "", []
    if route is not None:
        sql += f" AND {alias}.route || '' = ?"
        args.append(route)
    if since is not None:
        sql += f" AND {alias}.started_at + 0 >= ?"
        args.append(since)
    if until is not None:
        sql += f" AND {alias}.started_at + 0 < ?"
        args.append(until)
    return sql, args


def _is(condition: str) -> str:
    """1 where `condition` holds, else 0: a sum of it counts (SQLite sums booleans, PostgreSQL does not)."""
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def create_snapshot(d: Dialect, tag: str, route: str | None, since: float | None, until: float | None,
                    unit: Expr | None = None) -> list[tuple[str, list[Any]]]:
    """Statements (sql, params) that build the temp tables `late_{tag}` and `ep_{tag}` (with each
    episode's sticky `unit`, NULL when its requests had no sticky key)."""
    wa, aa = window("a", route, since, until)
    wr, ar = window("r", route, since, until)
    unit_sql, unit_args = unit("r") if unit is not None else ("NULL", [])
    late = f"late_{tag}"
    ep = f"ep_{tag}"
    return [
        (f"""CREATE TEMP TABLE {late} AS
        SELECT a.route AS route, a.variant AS arm, x.variant AS variant, x.request_id AS request_id,
               x.attempt AS attempt, x.attempt_reason AS reason, x.served AS served, a.started_at AS started_at,
               x.model_served AS model_served, x.prompt_tokens AS pt, x.completion_tokens AS ct,
               x.cost_usd AS cost, x.latency_ms AS lat, x.ttft_ms AS ttft, x.system_fingerprint AS fp,
               x.guard_failures AS guard_failures, x.failed_guards AS failed_guards
        FROM records x{d.indexed_by("records_later")} JOIN records a ON a.request_id = x.request_id AND a.attempt = 1
        WHERE x.attempt > 1{wa} AND coalesce(x.attempt_reason, '') != 'shadow'""", aa),
        (d.temp_index(f"{late}_lat", late, "route, arm, served, lat"), []),
        (d.temp_index(f"{late}_ttft", late, "route, arm, served, ttft"), []),
        (f"""CREATE TEMP TABLE {ep} AS
        SELECT r.route AS route, r.episode_id AS episode_id, min(r.variant) AS arm,
               CASE WHEN min(r.variant) = max(r.variant) THEN 1 ELSE 2 END AS nv, min(r.started_at) AS started_at,
               min({unit_sql}) AS unit
        FROM records r WHERE r.episode_id IS NOT NULL AND r.attempt = 1{wr}
        GROUP BY r.episode_id, r.route""", [*unit_args, *ar]),
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


# --------------------------------------------------------------------------- units of analysis
#
# The unit of analysis is the unit of randomization (DESIGN.md "Decisions you can act on"): a request
# with a sticky key (`bucket` not NULL) belongs to the unit of that key; one without is its own unit.
# The key itself is not stored, but the fields it is read from are: the route's `sticky_by` entries map
# to `episode_id` / `user_id` (the first present one, in the route's order, as `proxy.routing.sticky_key`
# picks it); an entry read from elsewhere (an app header, a body field) falls back to the bucket — a
# coarser unit (several keys can share one of the 10,000 buckets; they always share its variant), which
# keeps variances valid. Unit values carry their kind: `e:` episode, `u:` user, `b:` bucket.

STICKY_COLUMNS = {
    "header:x-sluicegate-episode": ("e", "episode_id"),
    "metadata:x-sluicegate-episode": ("e", "episode_id"),
    "header:x-sluicegate-user": ("u", "user_id"),
    "metadata:x-sluicegate-user": ("u", "user_id"),
    "body:user": ("u", "user_id"),
}
UNIT_KINDS = {"e": "episode", "u": "user", "b": "sticky bucket", "q": "request"}


def sticky_unit_parts(specs: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(kind, column) of the route's sticky entries that map to a record column, in order, up to the
    first that does not (the bucket then stands in for it and everything after it)."""
    parts: list[tuple[str, str]] = []
    for spec in specs:
        mapped = STICKY_COLUMNS.get(spec)
        if mapped is None:
            break
        if mapped not in parts:
            parts.append(mapped)
    return parts


def _sticky_unit(alias: str, specs: list[str] | tuple[str, ...]) -> str:
    terms = [f"'{kind}:' || {alias}.{column}" for kind, column in sticky_unit_parts(specs)]
    terms.append(f"'b:' || CAST({alias}.bucket AS TEXT)")
    return terms[0] if len(terms) == 1 else f"coalesce({', '.join(terms)})"


def unit_expression(alias: str, sticky: dict[str, tuple[str, ...]], default: tuple[str, ...]) -> tuple[str, list[Any]]:
    """The sticky unit of a record row `alias` (NULL when it has no sticky key: its own unit)."""
    by_route = {route: specs for route, specs in sticky.items() if tuple(specs) != tuple(default)}
    inner = _sticky_unit(alias, default)
    params: list[Any] = []
    if by_route:
        whens = ""
        for route, specs in sorted(by_route.items()):
            whens += f" WHEN ? THEN {_sticky_unit(alias, specs)}"
            params.append(route)
        inner = f"CASE {alias}.route{whens} ELSE {inner} END"
    return f"CASE WHEN {alias}.bucket IS NULL THEN NULL ELSE {inner} END", params


def period_expression(alias: str, boundaries: dict[str, list[float]]) -> tuple[str, list[Any]]:
    """The index of the period (of constant allocation) a row's `started_at` falls in, per route:
    period k starts at boundary k − 1 (inclusive). 0 on routes without boundaries."""
    params: list[Any] = []
    whens = ""
    for route, cuts in sorted(boundaries.items()):
        if not cuts:
            continue
        steps = "".join(f" WHEN {alias}.started_at < ? THEN {k}" for k in range(len(cuts)))
        whens += f" WHEN ? THEN CASE{steps} ELSE {len(cuts)} END"
        params += [route, *cuts]
    if not whens:
        return "0", []
    return f"CASE {alias}.route{whens} ELSE 0 END", params


def policy_versions(d: Dialect, route: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """Per (route, policy version): first and last request, requests — where the allocation may have changed."""
    w, a = window("r", route, since, until)
    return (f"""SELECT r.route, r.policy_version, min(r.started_at), max(r.started_at), count(*)
    FROM records r{d.indexed_by("records_versions")} WHERE r.attempt = 1{w} GROUP BY 1, 2""", a)


def canary_changes(route: str | None, until: float | None) -> tuple[str, list[Any]]:
    """Every stored canary decision (each one sets a stage) up to the window's end, oldest first."""
    sql, args = "SELECT route, at, from_stage, to_stage, action FROM canary_decisions WHERE 1 = 1", []
    if route is not None:
        sql += " AND route = ?"
        args.append(route)
    if until is not None:
        sql += " AND at < ?"
        args.append(until)
    return sql + " ORDER BY route, at", args


_HAS_OUTCOME = "EXISTS (SELECT 1 FROM outcomes o WHERE o.level = 'inference' AND o.request_id = r.request_id)"
_CRITICAL = "CAST({col} AS TEXT) LIKE '%\"critical\"]%'"  # failed_guards: [[class, severity], …]

# Per-unit figures: name -> (events column y, trials column m, per-request Σy² column). A lone request
# (no sticky key) is its own unit, so those are summed per arm in one row whose unit is NULL: its
# request-level Σy² is what Σ over units of y² is for units of one request each.
UNIT_FIGURES = {
    "errors": ("err", "m", "err"),
    "guard_failures": ("grd", "m", "grd"),
    "critical_failures": ("crit", "m", "crit"),
    "coverage": ("cov", "m", "cov"),
    "log_latency": ("lat_log", "lat_n", "lat_log2"),
}
# ln(latency ms) is summed in integer thousandths (0.1% of a latency: far below its noise), so every
# sum is exact and the same on every backend in any order; the sums are scaled back when read
LOG_SCALE = 1000


def create_units(d: Dialect, tag: str, unit: Expr, period: Expr, route: str | None, since: float | None,
                 until: float | None) -> list[tuple[str, list[Any]]]:
    """TEMP tables `lreq_{tag}` (later attempts per request) and `unit_{tag}`: per (route, period, arm,
    sticky unit) requests `m`, failed requests `err`, requests with a failed guard `grd` / a critical
    one `crit`, requests with an inference outcome `cov`, served requests with a latency `lat_n` and
    Σ ln(latency) `lat_log` (Σ ln² in `lat_log2`); lone requests summed per (route, period, arm), unit NULL.
    Needs `late_{tag}` (create_snapshot)."""
    w, a = scan_window("r", route, since, until)
    unit_sql, unit_args = unit("r")
    period_sql, period_args = period("r")
    lat = "CASE WHEN r.served = 1 THEN r.latency_ms ELSE l.lat END"
    log_lat = f"CASE WHEN {lat} > 0 THEN CAST(round(ln({lat}) * {LOG_SCALE}) AS INTEGER) END"
    return [
        (f"""CREATE TEMP TABLE lreq_{tag} AS
        SELECT request_id, max(served) AS served, max(guard_failures) AS guard,
               max({_is(_CRITICAL.format(col="failed_guards"))}) AS crit,
               max(CASE WHEN served = 1 THEN lat END) AS lat
        FROM late_{tag} GROUP BY request_id""", []),
        (d.temp_index(f"lreq_{tag}_id", f"lreq_{tag}", "request_id"), []),
        (f"""CREATE TEMP TABLE unit_{tag} AS
        SELECT r.route AS route, {period_sql} AS period, r.variant AS arm, {unit_sql} AS unit,
               count(*) AS m,
               sum(CASE WHEN r.served = 1 OR l.served = 1 THEN 0 ELSE 1 END) AS err,
               sum({_is("r.guard_failures > 0 OR l.guard > 0")}) AS grd,
               sum({_is(_CRITICAL.format(col="r.failed_guards") + " OR l.crit > 0")}) AS crit,
               sum({_is(_HAS_OUTCOME)}) AS cov,
               sum({_is(f"{lat} > 0")}) AS lat_n,
               coalesce(sum({log_lat}), 0) AS lat_log,
               coalesce(sum(({log_lat}) * ({log_lat})), 0) AS lat_log2
        FROM records r{d.indexed_by("records_request")}
        LEFT JOIN lreq_{tag} l ON l.request_id = r.request_id
        WHERE r.attempt = 1{w}
        GROUP BY 1, 2, 3, 4""", [*period_args, *unit_args, *a]),
        (d.temp_index(f"unit_{tag}_unit", f"unit_{tag}", "route, unit"), []),
    ]


def unit_outcomes(d: Dialect, tag: str, unit: Expr, period: Expr, route: str | None, since: float | None,
                  until: float | None) -> list[tuple[str, list[Any]]]:
    """TEMP table `uo_{tag}`: the latest outcome per (subject, metric), per (route, period, arm, unit,
    metric, level): outcomes `n`, Σ value `s`, Σ value² `ss` (lone requests and episodes without a
    sticky key: one row per (route, period, arm, metric, level), unit NULL). An episode counts in the
    period it started in, in the unit of its requests (`ep_{tag}`); mixed episodes are left out."""
    w, a = window("r", route, since, until)
    unit_sql, unit_args = unit("r")
    period_sql, period_args = period("r")
    period_e, period_e_args = period("e")
    return [
        (f"""CREATE TEMP TABLE uo_{tag} AS
    WITH lo AS ({_LATEST.format(key='request_id')}), le AS ({_LATEST.format(key='episode_id')})
    SELECT route, period, arm, unit, metric, level, count(*) AS n, sum(value) AS s, sum(value * value) AS ss FROM (
        SELECT r.route AS route, {period_sql} AS period, r.variant AS arm, {unit_sql} AS unit, lo.metric AS metric,
               'inference' AS level, lo.value AS value
        FROM lo CROSS JOIN records r WHERE r.request_id = lo.request_id AND r.attempt = 1{w}
        UNION ALL
        SELECT e.route, {period_e}, e.arm, e.unit, le.metric, 'episode', le.value
        FROM le JOIN ep_{tag} e ON e.episode_id = le.episode_id WHERE e.nv = 1) AS x
    GROUP BY 1, 2, 3, 4, 5, 6""", ["inference", "episode", *period_args, *unit_args, *a, *period_e_args]),
        (d.temp_index(f"uo_{tag}_unit", f"uo_{tag}", "route, unit, metric, level"), []),
    ]


def _x(a: str, b: str) -> str:
    """a·b as a double: products of per-unit sums may exceed a 64-bit integer (exact below 2^53)."""
    return f"CAST({a} AS DOUBLE PRECISION) * {b}"


def _diag_terms(y: str, m: str, yq: str) -> str:
    """units, Σy, Σm, Σy², Σm², Σym over units; a NULL-unit row is lone requests (m, y per request ≤ 1
    trial each), whose Σ over units of y² is its request-level Σy² column `yq`."""
    lone = "unit IS NULL"
    return (f"sum(CASE WHEN {lone} THEN {m} WHEN {m} > 0 THEN 1 ELSE 0 END), sum({y}), sum({m}), "
            f"sum(CASE WHEN {lone} THEN {yq} ELSE {_x(y, y)} END), sum(CASE WHEN {lone} THEN {m} ELSE {_x(m, m)} END), "
            f"sum(CASE WHEN {lone} THEN {y} ELSE {_x(y, m)} END)")


def unit_sums_query(tag: str) -> str:
    """Per (route, period, arm): for each of UNIT_FIGURES the six unit sums, in that order."""
    terms = ", ".join(_diag_terms(*cols) for cols in UNIT_FIGURES.values())
    return f"SELECT route, period, arm, {terms} FROM unit_{tag} GROUP BY 1, 2, 3"


def outcome_sums_query(tag: str) -> str:
    """Per (route, period, arm, metric, level): the six unit sums of the metric (y = Σ value, m = outcomes)
    and Σ value² over outcomes."""
    return (f"SELECT route, period, arm, metric, level, {_diag_terms('s', 'n', 'ss')}, sum(ss) FROM uo_{tag} "
            "GROUP BY 1, 2, 3, 4, 5")


_PAIR = "(a.period < b.period OR (a.period = b.period AND a.arm < b.arm))"


def unit_cross_query(tag: str) -> str:
    """Units seen in two (period, arm) cells: per pair of cells, for each figure Σ yₐy_b, yₐm_b, mₐy_b, mₐm_b
    — the covariances between the cells' ratios that a stratified estimate must not drop."""
    terms = ", ".join(f"sum({_x('a.' + y, 'b.' + y)}), sum({_x('a.' + y, 'b.' + m)}), sum({_x('a.' + m, 'b.' + y)}), "
                      f"sum({_x('a.' + m, 'b.' + m)})" for y, m, _ in UNIT_FIGURES.values())
    return f"""SELECT a.route, a.period, a.arm, b.period, b.arm, {terms}
    FROM unit_{tag} a JOIN unit_{tag} b ON b.route = a.route AND b.unit = a.unit AND {_PAIR}
    WHERE a.unit IS NOT NULL GROUP BY 1, 2, 3, 4, 5"""


def outcome_cross_query(tag: str) -> str:
    return f"""SELECT a.route, a.metric, a.level, a.period, a.arm, b.period, b.arm,
        sum(a.s * b.s), sum(a.s * b.n), sum(a.n * b.s), sum(a.n * b.n)
    FROM uo_{tag} a JOIN uo_{tag} b ON b.route = a.route AND b.unit = a.unit AND b.metric = a.metric
        AND b.level = a.level AND {_PAIR}
    WHERE a.unit IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6, 7"""


def unit_counts_query(tag: str) -> str:
    """Per (route, arm, unit kind): distinct units over the window (lone requests: their count) and those
    with a latency."""
    return f"""SELECT route, arm, CASE WHEN unit IS NULL THEN 'q' ELSE substr(unit, 1, 1) END,
        sum(CASE WHEN unit IS NULL THEN m ELSE 0 END) + count(DISTINCT unit),
        sum(CASE WHEN unit IS NULL THEN lat_n ELSE 0 END) + count(DISTINCT CASE WHEN lat_n > 0 THEN unit END)
    FROM unit_{tag} GROUP BY 1, 2, 3"""


def outcome_unit_counts_query(tag: str) -> str:
    """Per (route, arm, metric, level): distinct units with an outcome over the window."""
    return f"""SELECT route, arm, metric, level, sum(CASE WHEN unit IS NULL THEN n ELSE 0 END) + count(DISTINCT unit)
    FROM uo_{tag} GROUP BY 1, 2, 3, 4"""


def mixed_units_query(tag: str) -> str:
    """Per (route, period): sticky units whose requests went to more than one arm within one period."""
    return f"""SELECT route, period, count(*) FROM (
        SELECT route, period, unit FROM unit_{tag} WHERE unit IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1) AS x
    GROUP BY 1, 2"""


def drop_units(d: Dialect, tag: str) -> list[str]:
    return [f"DROP TABLE IF EXISTS {d.temp(f'{name}_{tag}')}" for name in ("lreq", "unit", "uo")]


def episode_coverage_periods(tag: str, period: Expr) -> tuple[str, list[Any]]:
    """Per (route, period the episode started in, arm): episodes (not mixed) and those with an outcome."""
    period_sql, args = period("e")
    # an uncorrelated IN list is built once (SQLite: an ephemeral index; PostgreSQL: a hashed subplan)
    return (f"""SELECT e.route, {period_sql}, e.arm, count(*),
        sum(CASE WHEN e.episode_id IN (SELECT episode_id FROM outcomes WHERE level = 'episode') THEN 1 ELSE 0 END)
    FROM ep_{tag} e WHERE e.nv = 1 GROUP BY 1, 2, 3""", args)
