"""The report's SQL. Every JSON-function expression (SQLite JSON1) lives in this module, so the
PostgreSQL port (jsonb operators, jsonb_array_elements) replaces this file only.

Plan: ONE pass over `records` (the only pass that reads `data`) fills a per-report TEMP table
`snapshot` — one row per non-shadow attempt of each request whose attempt 1 is in the window,
with the request's intention-to-treat arm and the few JSON fields the report needs; a TEMP table
`episodes` holds each episode's arm. Every figure is then a GROUP BY over these small tables (and
the `outcomes` table). Temp tables are private to the store's connection; names carry a per-report
suffix and are dropped at the end.
"""

from __future__ import annotations

from typing import Any

# nearest-rank percentiles: rank = ceil(p·n)
PERCENTILES = {"p50": 50, "p95": 95, "p99": 99}


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


_JSON_FIELDS = ("'$.usage.prompt_tokens'", "'$.usage.completion_tokens'", "'$.cost_usd'", "'$.latency_ms'",
                "'$.ttft_ms'", "'$.system_fingerprint'", "'$.guards'")


def create_snapshot(tag: str, route: str | None, since: float | None, until: float | None) -> list[tuple[str, list[Any]]]:
    """Statements (sql, params) that build the temp tables `snap_{tag}` and `ep_{tag}`."""
    wr, ar = window("r", route, since, until)
    wa, aa = window("a", route, since, until)
    multi = ", ".join(_JSON_FIELDS)  # one parse of `data` per row: json_extract with many paths → array
    snap = f"snap_{tag}"
    ep = f"ep_{tag}"
    return [
        (f"""CREATE TEMP TABLE {snap} AS
        WITH raw AS MATERIALIZED (
            SELECT r.route AS route, r.variant AS arm, r.variant AS variant, r.request_id AS request_id,
                   r.episode_id AS episode_id, 1 AS attempt, 'primary' AS reason, r.served AS served,
                   r.started_at AS started_at, r.model_served AS model_served,
                   json_extract(r.data, {multi}) AS j
            FROM records r WHERE r.attempt = 1{wr}
            UNION ALL
            SELECT a.route, a.variant, x.variant, x.request_id, a.episode_id, x.attempt,
                   json_extract(x.data, '$.attempt_reason'), x.served, a.started_at, x.model_served,
                   json_extract(x.data, {multi})
            FROM records x JOIN records a ON a.request_id = x.request_id AND a.attempt = 1
            WHERE x.attempt > 1{wa} AND coalesce(json_extract(x.data, '$.attempt_reason'), '') != 'shadow'
        )
        SELECT route, arm, variant, request_id, episode_id, attempt, reason, served, started_at, model_served,
               json_extract(j, '$[0]') AS pt, json_extract(j, '$[1]') AS ct, json_extract(j, '$[2]') AS cost,
               json_extract(j, '$[3]') AS lat, json_extract(j, '$[4]') AS ttft, json_extract(j, '$[5]') AS fp,
               CASE WHEN json_array_length(j, '$[6]') > 0 THEN json_extract(j, '$[6]') END AS guards
        FROM raw""", [*ar, *aa]),
        (f"CREATE INDEX temp.{snap}_req ON {snap} (request_id, attempt)", []),
        (f"CREATE INDEX temp.{snap}_lat ON {snap} (route, arm, served, lat)", []),
        (f"CREATE INDEX temp.{snap}_ttft ON {snap} (route, arm, served, ttft)", []),
        (f"""CREATE TEMP TABLE {ep} AS
        SELECT route, episode_id, min(arm) AS arm, count(DISTINCT arm) AS nv, min(started_at) AS started_at
        FROM {snap} WHERE attempt = 1 AND episode_id IS NOT NULL GROUP BY route, episode_id""", []),
        (f"CREATE INDEX temp.{ep}_id ON {ep} (episode_id)", []),
    ]


def drop_snapshot(tag: str) -> list[str]:
    return [f"DROP TABLE IF EXISTS temp.snap_{tag}", f"DROP TABLE IF EXISTS temp.ep_{tag}"]


def arms(tag: str) -> str:
    return f"""SELECT route, arm,
        sum(attempt = 1), count(DISTINCT CASE WHEN attempt = 1 THEN episode_id END), count(*),
        sum(served = 1), sum(reason = 'fallback'), sum(reason = 'retry'),
        sum(pt), sum(ct), sum(cost), count(cost), min(started_at), max(started_at),
        count(CASE WHEN served = 1 THEN lat END), count(CASE WHEN served = 1 THEN ttft END)
    FROM snap_{tag} GROUP BY route, arm"""


def value_at(tag: str, column: str) -> str:
    """The value at a 0-based offset of an arm's sorted served attempts (walks the temp index)."""
    return f"""SELECT {column} FROM snap_{tag} WHERE route = ? AND arm = ? AND served = 1 AND {column} IS NOT NULL
    ORDER BY {column} LIMIT 1 OFFSET ?"""


def guard_classes(tag: str) -> str:
    return f"""SELECT s.route, s.arm, json_extract(g.value, '$.taxonomy'), json_extract(g.value, '$.severity'),
        count(*), count(DISTINCT s.request_id)
    FROM snap_{tag} s, json_each(s.guards) g
    WHERE s.guards IS NOT NULL AND coalesce(json_extract(g.value, '$.passed'), 0) = 0
    GROUP BY 1, 2, 3, 4"""


def guard_requests(tag: str) -> str:
    return f"""SELECT s.route, s.arm, count(DISTINCT s.request_id)
    FROM snap_{tag} s, json_each(s.guards) g
    WHERE s.guards IS NOT NULL AND coalesce(json_extract(g.value, '$.passed'), 0) = 0
    GROUP BY 1, 2"""


def drift(tag: str) -> str:
    return f"""SELECT route, variant, model_served, fp, min(started_at), max(started_at), count(*)
    FROM snap_{tag} WHERE model_served IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 5"""


def episodes(tag: str) -> str:
    return f"SELECT route, CASE WHEN nv > 1 THEN NULL ELSE arm END, count(*) FROM ep_{tag} GROUP BY 1, 2"


def metric_kinds() -> str:
    return "SELECT metric, level, count(*), sum(value NOT IN (0, 1)) FROM outcomes GROUP BY metric, level"


_LATEST = """SELECT {key}, metric, value FROM (
    SELECT {key}, metric, value,
           row_number() OVER (PARTITION BY metric, {key} ORDER BY received_at DESC, id DESC) AS rn
    FROM outcomes WHERE level = ? AND {key} IS NOT NULL) WHERE rn = 1"""


def inference_outcomes(tag: str, bucket: float) -> tuple[str, list[Any]]:
    """Latest inference outcome per (request, metric), joined to the request's arm; per time bucket."""
    return (f"""WITH lo AS ({_LATEST.format(key='request_id')})
    SELECT s.route, s.arm, lo.metric, CAST(s.started_at / ? AS INTEGER), count(*), sum(lo.value),
           sum(lo.value * lo.value), sum(lo.value NOT IN (0, 1))
    FROM lo JOIN snap_{tag} s ON s.request_id = lo.request_id AND s.attempt = 1
    GROUP BY 1, 2, 3, 4""", ["inference", bucket])


def episode_outcomes(tag: str, bucket: float) -> tuple[str, list[Any]]:
    """Latest episode outcome per (episode, metric); mixed episodes come back with arm NULL."""
    return (f"""WITH lo AS ({_LATEST.format(key='episode_id')})
    SELECT e.route, CASE WHEN e.nv > 1 THEN NULL ELSE e.arm END, lo.metric, CAST(e.started_at / ? AS INTEGER),
           count(*), sum(lo.value), sum(lo.value * lo.value), sum(lo.value NOT IN (0, 1))
    FROM lo JOIN ep_{tag} e ON e.episode_id = lo.episode_id
    GROUP BY 1, 2, 3, 4""", ["episode", bucket])


def coverage(tag: str) -> str:
    """Per arm: outcome rows received (inference + episode, corrections included), requests with an
    inference outcome, episodes (not mixed) with an episode outcome."""
    return f"""
    SELECT s.route, s.arm, 'requests', count(*), count(DISTINCT s.request_id)
    FROM outcomes o JOIN snap_{tag} s ON s.request_id = o.request_id AND s.attempt = 1
    WHERE o.level = 'inference' GROUP BY 1, 2
    UNION ALL
    SELECT e.route, e.arm, 'episodes', count(*), count(DISTINCT e.episode_id)
    FROM outcomes o JOIN ep_{tag} e ON e.episode_id = o.episode_id
    WHERE o.level = 'episode' AND e.nv = 1 GROUP BY 1, 2"""
