"""The SQL of one projector batch. Every statement is set-based: one per table per batch.

Audit rows are COPYed (straight into ``agent_events``; into a staging table when the batch may
hold events stored before). The deltas of the other tables are COPYed into per-connection
staging tables (temporary, emptied at commit), and each table gets one
``INSERT ... SELECT ... ON CONFLICT`` from its staging table, all sent in one pipeline. Each upsert
merges a batch's delta into the stored row with the same rule as the ``merge`` method of its delta
class in :mod:`agentstream.projections.rows`.
"""

from __future__ import annotations

from agentstream.projections.audit import AUDIT_COLUMNS
from agentstream.projections.rows import (
    AGENT_COLUMNS,
    APPROVAL_COLUMNS,
    FACT_COLUMNS,
    INPUT_COLUMNS,
    RUN_COLUMNS,
    TIMER_COLUMNS,
    TOOL_CALL_COLUMNS,
    WAIT_COLUMNS,
)

__all__ = [
    "CLEAR_STAGING",
    "COPY",
    "COPY_EVENTS",
    "CREATE_OFFSETS",
    "CREATE_STAGING",
    "DECIDE_APPROVALS",
    "ERASE_FACTS",
    "FILL_LATE_RUN_INPUTS",
    "FILL_NEW_RUN_INPUTS",
    "INSERT_STAGED_EVENTS",
    "LOCK_OFFSETS",
    "READ_OFFSETS",
    "REFRESH_AGENTS",
    "REFRESH_WAITS",
    "SET_PAUSED",
    "STAGING",
    "STORE_OFFSETS",
    "SYNC_TOOL_CALL_APPROVALS",
    "UPSERT_AGENTS",
    "UPSERT_APPROVALS",
    "UPSERT_FACTS",
    "UPSERT_INPUTS",
    "UPSERT_RUNS",
    "UPSERT_TIMERS",
    "UPSERT_TOOL_CALLS",
    "UPSERT_WAITS",
]

#: The SQL type of every staged column (a name has the same type in every table). JSON columns
#: are staged as text and cast on the way in: a bad one fails the upsert, not the COPY.
_TYPES = {
    "event_id": "text",
    "type": "text",
    "agent_id": "text",
    "tenant_id": "text",
    "run_id": "text",
    "call_id": "text",
    "correlation_id": "text",
    "causation_id": "text",
    "occurred_at": "timestamptz",
    "source": "text",
    "schema_version": "int",
    "topic": "text",
    "partition": "int",
    "offset": "bigint",
    "payload": "jsonb",
    "sanitized": "boolean",
    "events": "bigint",
    "runs_completed": "int",
    "runs_failed": "int",
    "prompt_tokens": "bigint",
    "completion_tokens": "bigint",
    "first_event_at": "timestamptz",
    "updated_at": "timestamptz",
    "input_event_id": "text",
    "status": "text",
    "output": "text",
    "failure_reason": "text",
    "error_class": "text",
    "steps": "int",
    "tool_calls": "int",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "tool": "text",
    "arguments": "text",
    "arguments_hash": "text",
    "gated": "boolean",
    "requested": "boolean",
    "result_status": "text",
    "attempts": "int",
    "latency_ms": "int",
    "result": "text",
    "error_message": "text",
    "timeout_ms": "int",
    "max_attempts": "int",
    "requested_at": "timestamptz",
    "deadline": "timestamptz",
    "decisions": "text",
    "runs_cancelled": "int",
    "paused": "boolean",
    "cancelled_by": "text",
    "cancel_reason": "text",
    "spec_version": "int",
    "spec_hash": "text",
    "callback_id": "text",
    "expires_at": "timestamptz",
    "waiting_at": "timestamptz",
    "timer_id": "text",
    "purpose": "text",
    "fire_at": "timestamptz",
    "set_at": "timestamptz",
    "fired_at": "timestamptz",
    "key": "text",
    "value": "text",
    "recorded_at": "timestamptz",
    "recorded_by": "text",
    "runs_handed_off": "int",
    "handoff_kind": "text",
    "handoff_agent_id": "text",
    "handoff_run_id": "text",
    "handoff_note": "text",
    "kind": "text",
    "origin_relation": "text",
    "parent_agent_id": "text",
    "parent_run_id": "text",
    "depth": "int",
}
_JSONB = {"arguments", "result", "decisions"}

#: staging table -> its columns, in the order the rows module builds rows
STAGING: dict[str, tuple[str, ...]] = {
    "incoming_events": AUDIT_COLUMNS,
    "incoming_agents": AGENT_COLUMNS,
    "incoming_runs": RUN_COLUMNS,
    "incoming_tool_calls": TOOL_CALL_COLUMNS,
    "incoming_approvals": APPROVAL_COLUMNS,
    "incoming_waits": WAIT_COLUMNS,
    "incoming_timers": TIMER_COLUMNS,
    "incoming_facts": FACT_COLUMNS,
    "incoming_inputs": INPUT_COLUMNS,
    "incoming_refresh": ("agent_id",),
}


def _quoted(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _selected(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"::jsonb' if c in _JSONB else f'"{c}"' for c in columns)


def _create_staging(table: str, columns: tuple[str, ...]) -> str:
    definitions = ", ".join(f'"{c}" {_TYPES[c]}' for c in columns)
    return f"CREATE TEMP TABLE IF NOT EXISTS {table} ({definitions}) ON COMMIT DELETE ROWS"


CREATE_STAGING = "; ".join(_create_staging(t, c) for t, c in STAGING.items())
# Needed when one transaction writes several sub-batches (isolating refused rows).
CLEAR_STAGING = "; ".join(f"DELETE FROM {t}" for t in STAGING)
COPY = {t: f"COPY {t} ({_quoted(c)}) FROM STDIN" for t, c in STAGING.items()}
COPY_EVENTS = f"COPY agent_events ({_quoted(AUDIT_COLUMNS)}) FROM STDIN"
INSERT_STAGED_EVENTS = f"""
INSERT INTO agent_events ({_quoted(AUDIT_COLUMNS)})
SELECT {_quoted(AUDIT_COLUMNS)} FROM incoming_events
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

# Rows are created before they are locked, so that two projectors racing for a new partition
# serialize on its row; sorted input keeps their lock order the same.
CREATE_OFFSETS = """
INSERT INTO projection_offsets (projection, topic, "partition", next_offset)
SELECT %s, t, p, 0 FROM unnest(%s::text[], %s::int[]) AS u(t, p)
ON CONFLICT DO NOTHING
"""
LOCK_OFFSETS = """
SELECT topic, "partition", next_offset FROM projection_offsets
WHERE projection = %s AND (topic, "partition") IN (SELECT * FROM unnest(%s::text[], %s::int[]))
ORDER BY topic, "partition"
FOR UPDATE
"""
READ_OFFSETS = """
SELECT topic, "partition", next_offset FROM projection_offsets WHERE projection = %s
"""
STORE_OFFSETS = """
UPDATE projection_offsets o SET next_offset = u.n, updated_at = now()
FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS u(t, p, n)
WHERE o.projection = %s AND o.topic = u.t AND o."partition" = u.p
"""

# paused is staged as null when the batch neither paused nor resumed the agent: SET_PAUSED copies
# the batch's last word, which EXCLUDED (false for "no word" as for "resumed") cannot tell apart.
_AGENT_VALUES = _quoted(AGENT_COLUMNS).replace('"paused"', 'coalesce("paused", false)')
UPSERT_AGENTS = f"""
INSERT INTO agents AS a ({_quoted(AGENT_COLUMNS)})
SELECT {_AGENT_VALUES} FROM incoming_agents
ON CONFLICT (agent_id) DO UPDATE SET
    events = a.events + EXCLUDED.events,
    runs_completed = a.runs_completed + EXCLUDED.runs_completed,
    runs_failed = a.runs_failed + EXCLUDED.runs_failed,
    runs_cancelled = a.runs_cancelled + EXCLUDED.runs_cancelled,
    runs_handed_off = a.runs_handed_off + EXCLUDED.runs_handed_off,
    prompt_tokens = a.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = a.completion_tokens + EXCLUDED.completion_tokens,
    first_event_at = LEAST(a.first_event_at, EXCLUDED.first_event_at),
    updated_at = GREATEST(a.updated_at, EXCLUDED.updated_at)
"""
SET_PAUSED = """
UPDATE agents a SET paused = i.paused
FROM incoming_agents i
WHERE a.agent_id = i.agent_id AND i.paused IS NOT NULL AND a.paused <> i.paused
"""

# A finished run keeps its outcome; a delta that finishes it replaces the running tallies.
_KEEP = "CASE WHEN r.status <> 'running' THEN r.{c} ELSE EXCLUDED.{c} END"
_TALLY = (
    "CASE WHEN r.status <> 'running' THEN r.{c} WHEN EXCLUDED.status <> 'running' "
    "THEN EXCLUDED.{c} ELSE {running} END"
)
_RUN_SUMS = {
    c: _TALLY.format(c=c, running=f"r.{c} + EXCLUDED.{c}")
    for c in ("tool_calls", "prompt_tokens", "completion_tokens")
}
# Runs that are new (their input not known yet) or finished may change their agent's status:
# their agents are noted for REFRESH_AGENTS, so it need not look at every agent of the batch.
UPSERT_RUNS = f"""
WITH upserted AS (
    INSERT INTO runs AS r ({_quoted(RUN_COLUMNS)})
    SELECT * FROM incoming_runs
    ON CONFLICT (run_id) DO UPDATE SET
        correlation_id = LEAST(r.correlation_id, EXCLUDED.correlation_id),
        status = {_KEEP.format(c="status")},
        output = {_KEEP.format(c="output")},
        failure_reason = {_KEEP.format(c="failure_reason")},
        error_class = {_KEEP.format(c="error_class")},
        finished_at = {_KEEP.format(c="finished_at")},
        cancelled_by = {_KEEP.format(c="cancelled_by")},
        cancel_reason = {_KEEP.format(c="cancel_reason")},
        handoff_kind = {_KEEP.format(c="handoff_kind")},
        handoff_agent_id = {_KEEP.format(c="handoff_agent_id")},
        handoff_run_id = {_KEEP.format(c="handoff_run_id")},
        handoff_note = {_KEEP.format(c="handoff_note")},
        spec_version = COALESCE(r.spec_version, EXCLUDED.spec_version),
        spec_hash = COALESCE(r.spec_hash, EXCLUDED.spec_hash),
        steps = {_TALLY.format(c="steps", running="GREATEST(r.steps, EXCLUDED.steps)")},
        tool_calls = {_RUN_SUMS["tool_calls"]},
        prompt_tokens = {_RUN_SUMS["prompt_tokens"]},
        completion_tokens = {_RUN_SUMS["completion_tokens"]},
        started_at = LEAST(r.started_at, EXCLUDED.started_at)
    RETURNING agent_id, input_event_id IS NULL OR status <> 'running' AS changed
)
INSERT INTO incoming_refresh (agent_id) SELECT agent_id FROM upserted WHERE changed
"""

# An input's row is one event: the first stays (a re-delivery is the same event).
UPSERT_INPUTS = f"""
INSERT INTO run_inputs ({_quoted(INPUT_COLUMNS)})
SELECT {_quoted(INPUT_COLUMNS)} FROM incoming_inputs
ON CONFLICT (run_id) DO NOTHING
"""

# A run learns its input (text, kind, origin) from its run_inputs row, whichever of the two is
# projected first, and its agent learns its kind. Every accepted input of an agent names its
# kind or none (the processor refuses another), so LEAST only keeps the merge order-free.
_FILL_RUNS = """
WITH filled AS (
    UPDATE runs r SET
        input_event_id = i.input_event_id,
        input_text = e.payload->>'text',
        kind = i.kind,
        origin_relation = i.origin_relation,
        parent_agent_id = i.parent_agent_id,
        parent_run_id = i.parent_run_id,
        call_id = i.call_id,
        depth = i.depth
    FROM {source} JOIN run_inputs i ON i.run_id = n.run_id
    LEFT JOIN agent_events e ON e.event_id = i.input_event_id
    WHERE r.run_id = n.run_id AND r.input_event_id IS NULL
    RETURNING r.agent_id, r.kind
)
UPDATE agents a SET kind = LEAST(a.kind, f.kind)
FROM (SELECT agent_id, min(kind) AS kind FROM filled GROUP BY agent_id) f
WHERE a.agent_id = f.agent_id AND f.kind IS NOT NULL
  AND a.kind IS DISTINCT FROM LEAST(a.kind, f.kind)
"""
FILL_NEW_RUN_INPUTS = _FILL_RUNS.format(source="incoming_runs n")
FILL_LATE_RUN_INPUTS = _FILL_RUNS.format(source="incoming_inputs n")

# The first result wins: results of one call share the tool-results partition.
_FIRST_RESULT = "CASE WHEN t.result_status IS NOT NULL THEN t.{c} ELSE EXCLUDED.{c} END"
UPSERT_TOOL_CALLS = f"""
INSERT INTO tool_calls AS t ({_quoted(TOOL_CALL_COLUMNS)})
SELECT {_selected(TOOL_CALL_COLUMNS)} FROM incoming_tool_calls
ON CONFLICT (call_id) DO UPDATE SET
    run_id = COALESCE(t.run_id, EXCLUDED.run_id),
    arguments = COALESCE(t.arguments, EXCLUDED.arguments),
    arguments_hash = COALESCE(t.arguments_hash, EXCLUDED.arguments_hash),
    gated = t.gated OR EXCLUDED.gated,
    requested = t.requested OR EXCLUDED.requested,
    result_status = COALESCE(t.result_status, EXCLUDED.result_status),
    attempts = {_FIRST_RESULT.format(c="attempts")},
    latency_ms = {_FIRST_RESULT.format(c="latency_ms")},
    result = {_FIRST_RESULT.format(c="result")},
    error_class = {_FIRST_RESULT.format(c="error_class")},
    error_message = {_FIRST_RESULT.format(c="error_message")},
    finished_at = {_FIRST_RESULT.format(c="finished_at")},
    timeout_ms = COALESCE(t.timeout_ms, EXCLUDED.timeout_ms),
    max_attempts = COALESCE(t.max_attempts, EXCLUDED.max_attempts),
    requested_at = LEAST(t.requested_at, EXCLUDED.requested_at),
    status = tool_call_status(
        COALESCE(t.result_status, EXCLUDED.result_status),
        t.approval,
        t.requested OR EXCLUDED.requested
    )
"""

# The request comes from one event; decisions append in topic order. 'pending' is provisional:
# DECIDE_APPROVALS sets the effective status in the same transaction.
UPSERT_APPROVALS = f"""
INSERT INTO approvals AS a ({_quoted(APPROVAL_COLUMNS)}, status)
SELECT {_selected(APPROVAL_COLUMNS)}, 'pending' FROM incoming_approvals
ON CONFLICT (call_id) DO UPDATE SET
    run_id = COALESCE(a.run_id, EXCLUDED.run_id),
    tool = CASE WHEN a.arguments_hash IS NULL THEN EXCLUDED.tool ELSE a.tool END,
    arguments = CASE WHEN a.arguments_hash IS NULL THEN EXCLUDED.arguments ELSE a.arguments END,
    requested_at = CASE WHEN a.arguments_hash IS NULL
                   THEN EXCLUDED.requested_at ELSE a.requested_at END,
    deadline = CASE WHEN a.arguments_hash IS NULL THEN EXCLUDED.deadline ELSE a.deadline END,
    arguments_hash = COALESCE(a.arguments_hash, EXCLUDED.arguments_hash),
    decisions = a.decisions || EXCLUDED.decisions
"""

# The effective decision is the first one the state machine would accept: the arguments hash
# matches, a grant or denial comes no later than the deadline, an expiry no earlier, and none
# after its run ended. Undecided when its run ended: closed. Looked at again when a decision
# arrives or when its run ends (in either order).
DECIDE_APPROVALS = """
UPDATE approvals a SET
    status = COALESCE(d.kind, CASE WHEN d.run_ended IS NULL THEN 'pending' ELSE 'closed' END),
    approver = d.approver,
    comment = d.comment,
    decided_at = d.decided_at,
    decision_event_id = d.event_id
FROM (
    SELECT x.call_id, r.finished_at AS run_ended, first.*
    FROM approvals x
    LEFT JOIN runs r ON r.run_id = x.run_id AND r.status <> 'running'
    LEFT JOIN LATERAL (
        SELECT e->>'kind' AS kind, e->>'approver' AS approver, e->>'comment' AS comment,
               (e->>'occurred_at')::timestamptz AS decided_at, e->>'event_id' AS event_id
        FROM jsonb_array_elements(x.decisions) WITH ORDINALITY AS d(e, n)
        WHERE (x.arguments_hash IS NULL OR e->>'arguments_hash' = x.arguments_hash)
          AND (x.deadline IS NULL OR CASE WHEN e->>'kind' = 'expired'
                   THEN (e->>'occurred_at')::timestamptz >= x.deadline
                   ELSE (e->>'occurred_at')::timestamptz <= x.deadline END)
          AND (r.finished_at IS NULL OR (e->>'occurred_at')::timestamptz <= r.finished_at)
        ORDER BY n
        LIMIT 1
    ) first ON true
    WHERE x.call_id IN (SELECT call_id FROM incoming_approvals)
       OR x.run_id IN (SELECT run_id FROM incoming_runs)
) d
WHERE a.call_id = d.call_id
"""

SYNC_TOOL_CALL_APPROVALS = """
UPDATE tool_calls t SET
    approval = a.status,
    status = tool_call_status(t.result_status, a.status, t.requested)
FROM approvals a
WHERE a.call_id = t.call_id
  AND (t.call_id IN (
      SELECT call_id FROM incoming_tool_calls UNION SELECT call_id FROM incoming_approvals
  ) OR a.run_id IN (SELECT run_id FROM incoming_runs))
  AND (t.approval IS DISTINCT FROM a.status
       OR t.status <> tool_call_status(t.result_status, a.status, t.requested))
"""

# The first ToolCallWaiting of a call wins (they share the tool-results partition).
UPSERT_WAITS = f"""
INSERT INTO waits AS w ({_quoted(WAIT_COLUMNS)})
SELECT {_quoted(WAIT_COLUMNS)} FROM incoming_waits
ON CONFLICT (call_id) DO NOTHING
"""

# Set once (the timers partition), fired on the control partition: the latest firing is kept.
UPSERT_TIMERS = f"""
INSERT INTO timers AS t ({_quoted(TIMER_COLUMNS)})
SELECT {_quoted(TIMER_COLUMNS)} FROM incoming_timers
ON CONFLICT (timer_id) DO UPDATE SET
    run_id = COALESCE(t.run_id, EXCLUDED.run_id),
    fire_at = CASE WHEN t.fire_at IS NULL THEN EXCLUDED.fire_at ELSE t.fire_at END,
    set_at = CASE WHEN t.fire_at IS NULL THEN EXCLUDED.set_at ELSE t.set_at END,
    fired_at = GREATEST(t.fired_at, EXCLUDED.fired_at)
"""

# A wait completed when the first CallbackCompleted of its callback (in the audit log, whichever
# of the two is projected first) came before its timer fired and before its run ended; timed out
# when its timer fired when due; closed when its run ended otherwise. Completion and firing share
# the control partition; their event times stand for that order here.
REFRESH_WAITS = """
UPDATE waits w SET
    completed_at = s.completed_at,
    completed_by = s.completed_by,
    timed_out_at = s.timed_out_at,
    status = CASE
        WHEN s.completed_at IS NOT NULL
             AND (s.timed_out_at IS NULL OR s.completed_at < s.timed_out_at)
             AND (s.run_ended IS NULL OR s.completed_at <= s.run_ended) THEN 'completed'
        WHEN s.timed_out_at IS NOT NULL THEN 'timed_out'
        WHEN s.run_ended IS NOT NULL THEN 'closed'
        ELSE 'waiting'
    END
FROM (
    SELECT x.call_id, r.finished_at AS run_ended, c.occurred_at AS completed_at,
           c.payload->>'completed_by' AS completed_by, f.fired_at AS timed_out_at
    FROM waits x
    LEFT JOIN runs r ON r.run_id = x.run_id AND r.status <> 'running'
    LEFT JOIN LATERAL (
        SELECT e.occurred_at, e.payload FROM agent_events e
        WHERE e.agent_id = x.agent_id AND e.type = 'CallbackCompleted'
          AND e.payload->>'callback_id' = x.callback_id
        ORDER BY e."offset"
        LIMIT 1
    ) c ON true
    LEFT JOIN LATERAL (
        SELECT t.fired_at FROM timers t
        WHERE t.call_id = x.call_id AND t.purpose = 'callback' AND t.fired_at >= t.fire_at
        ORDER BY t.timer_id
        LIMIT 1
    ) f ON true
    WHERE x.call_id IN (SELECT call_id FROM incoming_waits)
       OR x.agent_id IN (SELECT agent_id FROM incoming_refresh)
) s
WHERE w.call_id = s.call_id
"""

# Facts share the control partition: the batch's newest of a key replaces the stored one.
UPSERT_FACTS = f"""
INSERT INTO agent_memory AS m ({_quoted(FACT_COLUMNS)})
SELECT {_quoted(FACT_COLUMNS)} FROM incoming_facts
ON CONFLICT (agent_id, key) DO UPDATE SET
    tenant_id = EXCLUDED.tenant_id,
    value = EXCLUDED.value,
    recorded_at = EXCLUDED.recorded_at,
    recorded_by = EXCLUDED.recorded_by
"""

# One erasure's stored facts, returning what they said (to scrub it from the agent's rows).
ERASE_FACTS = """
DELETE FROM agent_memory
WHERE agent_id = %(agent_id)s
  AND CASE WHEN %(keys)s::text[] IS NULL THEN NOT key = ANY(%(keeps)s::text[])
           ELSE key = ANY(%(keys)s::text[]) END
RETURNING value
"""

# The agent's status as the state machine has it (AgentState.status): paused, else idle without
# an unfinished run, else awaiting approval while that run has a pending approval, waiting while
# it waits for a callback, sleeping while a sleep is all it waits for, delegating while a run it
# delegated to has not answered (no DelegationReturned, its timer not fired), running otherwise.
# Only agents whose runs, approvals, waits, timers or pause changed are looked at.
REFRESH_AGENTS = """
UPDATE agents a SET
    status = CASE WHEN a.paused THEN 'paused' ELSE s.status END,
    active_run_id = s.run_id
FROM (
    SELECT u.agent_id, r.run_id,
           CASE WHEN r.run_id IS NULL THEN 'idle'
                WHEN EXISTS (
                    SELECT 1 FROM approvals p WHERE p.run_id = r.run_id AND p.status = 'pending'
                ) THEN 'awaiting_approval'
                WHEN EXISTS (
                    SELECT 1 FROM waits w WHERE w.run_id = r.run_id AND w.status = 'waiting'
                ) THEN 'waiting'
                WHEN EXISTS (
                    SELECT 1 FROM timers t
                    WHERE t.run_id = r.run_id AND t.purpose = 'sleep' AND t.fire_at IS NOT NULL
                      AND (t.fired_at IS NULL OR t.fired_at < t.fire_at)
                ) AND NOT EXISTS (
                    SELECT 1 FROM tool_calls c
                    WHERE c.run_id = r.run_id AND c.status IN ('requested', 'awaiting_approval')
                      AND NOT EXISTS (SELECT 1 FROM waits w WHERE w.call_id = c.call_id)
                ) AND NOT d.delegating THEN 'sleeping'
                WHEN d.delegating THEN 'delegating'
                ELSE 'running'
           END AS status
    FROM (
        SELECT agent_id FROM incoming_refresh UNION SELECT agent_id FROM incoming_approvals
    ) u
    LEFT JOIN LATERAL (
        SELECT run_id FROM runs
        WHERE runs.agent_id = u.agent_id AND runs.status = 'running'
        ORDER BY started_at DESC, run_id DESC
        LIMIT 1
    ) r ON true
    CROSS JOIN LATERAL (
        SELECT EXISTS (
            SELECT 1 FROM timers t
            WHERE t.run_id = r.run_id AND t.purpose = 'delegation' AND t.fire_at IS NOT NULL
              AND (t.fired_at IS NULL OR t.fired_at < t.fire_at)
              AND NOT EXISTS (
                  SELECT 1 FROM agent_events e
                  WHERE e.call_id = t.call_id AND e.type = 'DelegationReturned'
                    AND e.agent_id = u.agent_id
              )
        ) AS delegating
    ) d
) s
WHERE a.agent_id = s.agent_id
  AND (a.status <> CASE WHEN a.paused THEN 'paused' ELSE s.status END
       OR a.active_run_id IS DISTINCT FROM s.run_id)
"""
