-- Read models derived from the agent events.
--
-- The projector consumes eight topics and the broker may interleave them in any order, so every
-- column is a merge that does not depend on that order: sums and counts of events applied once,
-- LEAST/GREATEST of times, a terminal status that wins over a running one, and "first one wins"
-- only for values that come from a single topic partition (whose order is fixed). Values that
-- depend on other rows (an agent's status, an approval's decision) are recomputed from those rows
-- at the end of each batch. A live table therefore equals a rebuild from the topics.
--
-- agents, runs and tool_calls rows are updated by many batches: the free space left in each page
-- (fillfactor) lets most of those updates stay on their page without new index entries (HOT).

-- Current state per agent.
CREATE TABLE agents (
    agent_id          text COLLATE "C" PRIMARY KEY,
    tenant_id         text NOT NULL,
    status            text NOT NULL DEFAULT 'idle'
                      CHECK (status IN ('idle', 'running', 'awaiting_approval')),
    active_run_id     text COLLATE "C",
    events            bigint NOT NULL,
    runs_completed    int NOT NULL,
    runs_failed       int NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    total_tokens      bigint GENERATED ALWAYS AS (prompt_tokens + completion_tokens) STORED,
    first_event_at    timestamptz NOT NULL,
    -- event time of the agent's latest event, not the wall clock: a rebuild reproduces it
    updated_at        timestamptz NOT NULL
) WITH (fillfactor = 70);

CREATE INDEX agents_tenant ON agents (tenant_id, agent_id);

-- One row per run. input_event_id is the run's correlation_id: the event id of the input that
-- started it (taken from the state machine's outputs; null until one of them is projected).
CREATE TABLE runs (
    run_id            text COLLATE "C" PRIMARY KEY,
    agent_id          text COLLATE "C" NOT NULL,
    tenant_id         text NOT NULL,
    input_event_id    text COLLATE "C",
    input_text        text,
    status            text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    output            text,
    failure_reason    text,
    error_class       text,
    steps             int NOT NULL,
    tool_calls        int NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    duration_ms       bigint GENERATED ALWAYS AS (
                          (extract(epoch FROM finished_at - started_at) * 1000)::bigint
                      ) STORED
) WITH (fillfactor = 70);

CREATE INDEX runs_by_agent ON runs (agent_id, started_at);
CREATE INDEX runs_by_status ON runs (status, started_at);
CREATE INDEX runs_by_input ON runs (input_event_id);
CREATE INDEX runs_running ON runs (agent_id, started_at) WHERE status = 'running';

-- The status of a tool call from what is known of it; the same rule is mirrored in Python
-- (agentstream.projections.rows.tool_call_status) for rows the batch inserts.
CREATE FUNCTION tool_call_status(result_status text, approval text, requested boolean)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN result_status IS NOT NULL THEN result_status
        WHEN approval IN ('denied', 'expired') THEN approval
        WHEN requested OR approval = 'granted' THEN 'requested'
        ELSE 'awaiting_approval'
    END
$$;

-- The tool call ledger, one row per call id.
CREATE TABLE tool_calls (
    call_id        text COLLATE "C" PRIMARY KEY,
    agent_id       text COLLATE "C" NOT NULL,
    tenant_id      text NOT NULL,
    run_id         text COLLATE "C",
    tool           text NOT NULL,
    arguments      jsonb,
    arguments_hash text,
    status         text NOT NULL CHECK (status IN (
                       'requested', 'awaiting_approval', 'completed', 'failed', 'denied', 'expired'
                   )),
    gated          boolean NOT NULL,
    requested      boolean NOT NULL,
    approval       text,
    result_status  text CHECK (result_status IN ('completed', 'failed')),
    attempts       int,
    latency_ms     int,
    result         jsonb,
    error_class    text,
    error_message  text,
    timeout_ms     int,
    max_attempts   int,
    requested_at   timestamptz,
    finished_at    timestamptz
) WITH (fillfactor = 70);

CREATE INDEX tool_calls_by_run ON tool_calls (run_id);
CREATE INDEX tool_calls_by_status ON tool_calls (status, requested_at);

-- The approvals inbox, one row per gated call. decisions keeps every decision event seen for the
-- call, in topic order; the effective one is the first that the state machine would accept
-- (matching arguments hash, before the deadline, or an expiry at or after it).
CREATE TABLE approvals (
    call_id           text COLLATE "C" PRIMARY KEY,
    agent_id          text COLLATE "C" NOT NULL,
    tenant_id         text NOT NULL,
    run_id            text COLLATE "C",
    tool              text,
    arguments         jsonb,
    arguments_hash    text,
    status            text NOT NULL CHECK (status IN ('pending', 'granted', 'denied', 'expired')),
    approver          text,
    comment           text,
    requested_at      timestamptz,
    deadline          timestamptz,
    decided_at        timestamptz,
    decision_event_id text,
    decisions         jsonb NOT NULL DEFAULT '[]'
);

CREATE INDEX approvals_pending ON approvals (requested_at) WHERE status = 'pending';
CREATE INDEX approvals_pending_by_run ON approvals (run_id) WHERE status = 'pending';
