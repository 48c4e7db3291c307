"""The PostgreSQL schema, as versioned migrations.

Version numbers are shared with the SQLite store (`proxy.records._store._MIGRATIONS`): PostgreSQL
support arrived at schema 7, so its first migration creates the whole version-7 schema at once, and
every later version adds one entry to both lists. The tables and columns are the SQLite ones with
types (`data`, `failed_guards` and `figures` as JSONB), plus `seq` (insertion order) and `txid` (the
writing transaction) on `records` and `outcomes`, so a worker can tail them in commit order.
"""

from __future__ import annotations

__all__ = ["PG_MIGRATIONS", "PG_SCHEMA_VERSION"]

PG_SCHEMA_VERSION = 10

_TXID = "txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)"

PG_MIGRATIONS: dict[int, tuple[str, ...]] = {
    7: (
        f"""CREATE TABLE IF NOT EXISTS records (
            id TEXT PRIMARY KEY, request_id TEXT, attempt INTEGER, served INTEGER, started_at DOUBLE PRECISION,
            route TEXT, variant TEXT, experiment TEXT, episode_id TEXT, correlation_id TEXT, user_id TEXT,
            provider TEXT, model_requested TEXT, model_served TEXT, status INTEGER, outcome TEXT,
            request_hash TEXT, attempt_reason TEXT, latency_ms DOUBLE PRECISION, ttft_ms DOUBLE PRECISION,
            prompt_tokens DOUBLE PRECISION, completion_tokens DOUBLE PRECISION, cost_usd DOUBLE PRECISION,
            system_fingerprint TEXT, guard_failures INTEGER, failed_guards JSONB, cache_hit INTEGER NOT NULL DEFAULT 0,
            data JSONB NOT NULL, seq BIGSERIAL, {_TXID})""",
        "CREATE INDEX IF NOT EXISTS records_route_started ON records (route, started_at)",
        "CREATE INDEX IF NOT EXISTS records_started_at ON records (started_at)",
        "CREATE INDEX IF NOT EXISTS records_route_served ON records (route, served, started_at)",
        """CREATE INDEX IF NOT EXISTS records_arm_latency ON records
            (route, variant, attempt, served, latency_ms, started_at)
            INCLUDE (ttft_ms, prompt_tokens, completion_tokens, cost_usd)""",
        "CREATE INDEX IF NOT EXISTS records_arm_ttft ON records (route, variant, attempt, served, ttft_ms, started_at)",
        """CREATE INDEX IF NOT EXISTS records_arm_drift ON records
            (route, variant, model_served, system_fingerprint, attempt, started_at)""",
        "CREATE INDEX IF NOT EXISTS records_request ON records (request_id, attempt, route, variant, started_at)",
        "CREATE INDEX IF NOT EXISTS records_episode ON records (episode_id, route, variant, attempt, started_at)",
        "CREATE INDEX IF NOT EXISTS records_later ON records (request_id) WHERE attempt > 1",
        "CREATE INDEX IF NOT EXISTS records_guard_failed ON records (route, started_at) WHERE guard_failures > 0",
        "CREATE INDEX IF NOT EXISTS records_tail ON records (txid, seq)",
        f"""CREATE TABLE IF NOT EXISTS outcomes (
            id TEXT PRIMARY KEY, metric TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, level TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL, request_id TEXT, episode_id TEXT, source TEXT,
            data JSONB NOT NULL, seq BIGSERIAL, {_TXID})""",
        "CREATE INDEX IF NOT EXISTS outcomes_level_request ON outcomes (level, request_id)",
        """CREATE INDEX IF NOT EXISTS outcomes_latest_request ON outcomes
            (level, metric, request_id, received_at DESC, id DESC) INCLUDE (value)""",
        """CREATE INDEX IF NOT EXISTS outcomes_latest_episode ON outcomes
            (level, metric, episode_id, received_at DESC, id DESC) INCLUDE (value)""",
        "CREATE INDEX IF NOT EXISTS outcomes_received ON outcomes (received_at)",
        "CREATE INDEX IF NOT EXISTS outcomes_tail ON outcomes (txid, seq)",
        """CREATE TABLE IF NOT EXISTS scores (
            id TEXT PRIMARY KEY, record_id TEXT NOT NULL, request_id TEXT, scorer TEXT NOT NULL, kind TEXT NOT NULL,
            label TEXT NOT NULL, score DOUBLE PRECISION, taxonomy TEXT, confidence DOUBLE PRECISION,
            weight DOUBLE PRECISION, cost_usd DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL,
            data JSONB NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS scores_scorer ON scores (scorer, record_id)",
        "CREATE INDEX IF NOT EXISTS scores_record ON scores (record_id)",
        "CREATE INDEX IF NOT EXISTS scores_created ON scores (created_at)",
        """CREATE TABLE IF NOT EXISTS reviews (
            id TEXT PRIMARY KEY, record_id TEXT NOT NULL, request_id TEXT, route TEXT, variant TEXT,
            scorer TEXT NOT NULL, reason TEXT NOT NULL, entered_at DOUBLE PRECISION NOT NULL, note TEXT)""",
        "CREATE INDEX IF NOT EXISTS reviews_entered ON reviews (entered_at)",
        """CREATE TABLE IF NOT EXISTS scoring_cursors (
            id TEXT PRIMARY KEY, value BIGINT NOT NULL, updated_at DOUBLE PRECISION)""",
        """CREATE TABLE IF NOT EXISTS canary_state (
            route TEXT PRIMARY KEY, stage DOUBLE PRECISION NOT NULL, status TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, reason TEXT)""",
        """CREATE TABLE IF NOT EXISTS canary_decisions (
            id TEXT PRIMARY KEY, route TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, action TEXT NOT NULL,
            from_stage DOUBLE PRECISION, to_stage DOUBLE PRECISION, rule TEXT, reason TEXT, figures JSONB,
            actor TEXT)""",
        "CREATE INDEX IF NOT EXISTS canary_decisions_route ON canary_decisions (route, at)",
        """CREATE TABLE IF NOT EXISTS response_cache (
            key TEXT PRIMARY KEY, route TEXT, variant TEXT, model TEXT, created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL, answer TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS response_cache_expires ON response_cache (expires_at)",
    ),
    8: (
        # feedback idempotency scoped to (caller, subject, metric): see proxy.records._conflicts
        "ALTER TABLE outcomes ADD COLUMN IF NOT EXISTS digest TEXT",
        """CREATE TABLE IF NOT EXISTS outcome_conflicts (
            id TEXT PRIMARY KEY, outcome_id TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
            detected_at DOUBLE PRECISION NOT NULL, data JSONB NOT NULL)""",
    ),
    9: (
        # the report's unit of analysis and allocation periods (see the SQLite migration 9)
        "ALTER TABLE records ADD COLUMN IF NOT EXISTS bucket INTEGER",
        "ALTER TABLE records ADD COLUMN IF NOT EXISTS policy_version TEXT",
        """UPDATE records SET bucket = (data->>'bucket')::integer, policy_version = data->>'policy_version'
            WHERE data->>'bucket' IS NOT NULL OR data->>'policy_version' IS NOT NULL""",
        "DROP INDEX IF EXISTS records_request",
        """CREATE INDEX IF NOT EXISTS records_request ON records (request_id, attempt, route, variant, started_at)
            INCLUDE (bucket, user_id, episode_id, policy_version, served, latency_ms, guard_failures, failed_guards)""",
        "DROP INDEX IF EXISTS records_episode",
        """CREATE INDEX IF NOT EXISTS records_episode ON records (episode_id, route, variant, attempt, started_at)
            INCLUDE (bucket, user_id)""",
        "CREATE INDEX IF NOT EXISTS records_versions ON records (route, policy_version, started_at) WHERE attempt = 1",
    ),
    10: (
        # canary runs (see the SQLite migration 10)
        "ALTER TABLE canary_state ADD COLUMN IF NOT EXISTS run_id TEXT",
        "ALTER TABLE canary_state ADD COLUMN IF NOT EXISTS run_started_at DOUBLE PRECISION",
        "ALTER TABLE canary_state ADD COLUMN IF NOT EXISTS stage_started_at DOUBLE PRECISION",
        "ALTER TABLE canary_state ADD COLUMN IF NOT EXISTS fingerprint TEXT",
        "ALTER TABLE canary_decisions ADD COLUMN IF NOT EXISTS run_id TEXT",
    ),
}
