-- Memory and run control: cancelled runs, paused agents, the facts an agent keeps, tool calls
-- that wait for another system, durable timers, and erasure.
--
-- The same merge rules as 0002 hold: a column is a sum, a LEAST/GREATEST, a first value of one
-- topic partition, or recomputed from other rows at the end of each batch.

-- A cancelled run is finished like a completed or failed one: it keeps its outcome, and its
-- undecided approvals are closed (DECIDE_APPROVALS looks at every run that is not running).
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'cancelled'));
ALTER TABLE runs
    ADD COLUMN cancelled_by  text,
    ADD COLUMN cancel_reason text,
    -- the spec version the run was pinned to, from its model requests or its outcome
    ADD COLUMN spec_version  int,
    ADD COLUMN spec_hash     text;

-- paused: the last AgentPaused/AgentResumed of the control partition wins. The status mirrors
-- the state machine's (AgentState.status), recomputed after each batch.
ALTER TABLE agents DROP CONSTRAINT agents_status_check;
ALTER TABLE agents ADD CONSTRAINT agents_status_check
    CHECK (status IN ('idle', 'running', 'awaiting_approval', 'waiting', 'sleeping', 'paused'));
ALTER TABLE agents
    ADD COLUMN paused         boolean NOT NULL DEFAULT false,
    ADD COLUMN runs_cancelled int NOT NULL DEFAULT 0;

-- The facts an agent keeps (MemoryRecorded, the newest per key), until a MemoryErased removes
-- them. Every fact recorded and not erased: the processor may keep fewer (it drops the oldest
-- past the spec's max_facts, and refuses facts of an agent that keeps none).
CREATE TABLE agent_memory (
    agent_id    text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    tenant_id   text NOT NULL,
    value       text NOT NULL,
    recorded_at timestamptz NOT NULL,
    recorded_by text NOT NULL,
    PRIMARY KEY (agent_id, key)
);

-- Tool calls that wait for another system (ToolCallWaiting), one row per call. completed_at
-- comes from the first CallbackCompleted of its callback id in the audit log, timed_out_at from
-- its callback timer; status is recomputed after each batch.
CREATE TABLE waits (
    call_id      text COLLATE "C" PRIMARY KEY,
    agent_id     text COLLATE "C" NOT NULL,
    tenant_id    text NOT NULL,
    run_id       text COLLATE "C",
    tool         text,
    callback_id  text COLLATE "C",
    expires_at   timestamptz,
    waiting_at   timestamptz,
    timed_out_at timestamptz,
    completed_at timestamptz,
    completed_by text,
    status       text NOT NULL DEFAULT 'waiting'
                 CHECK (status IN ('waiting', 'completed', 'timed_out', 'closed'))
);

CREATE INDEX waits_by_run ON waits (run_id);
CREATE INDEX waits_by_callback ON waits (agent_id, callback_id);

-- Durable timers (TimerSet), one row per timer: a sleep's wake time or a callback's deadline.
-- fired_at is the latest firing seen; the timer is due once it is at or after fire_at (the
-- processor ignores a firing before it).
CREATE TABLE timers (
    timer_id  text COLLATE "C" PRIMARY KEY,
    agent_id  text COLLATE "C" NOT NULL,
    tenant_id text NOT NULL,
    run_id    text COLLATE "C",
    call_id   text COLLATE "C",
    purpose   text CHECK (purpose IN ('sleep', 'callback')),
    fire_at   timestamptz,
    set_at    timestamptz,
    fired_at  timestamptz
);

CREATE INDEX timers_by_run ON timers (run_id);

-- Erasure: a MemoryErased replaces the erased text with "[erased]" in the agent's audit rows too.
-- That is the one change the audit log accepts, and only from a transaction that declared it
-- (agentstream.redacting) and only of the payload and the redacted flag.
ALTER TABLE agent_events ADD COLUMN redacted boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION agent_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('agentstream.redacting', true) = 'on'
       AND (to_jsonb(NEW) - 'payload' - 'redacted') = (to_jsonb(OLD) - 'payload' - 'redacted')
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'agent_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
