-- Agent kinds, and conversations across agents: a run started by another agent's run (delegated
-- to, or handed off to) knows that run, and every run of one conversation shares its
-- correlation id, so the tree of a conversation is one query on runs.
--
-- The merge rules of 0002 hold: a column is a sum, a LEAST/GREATEST, a first value of one topic
-- partition, or recomputed from other rows at the end of each batch.

-- One row per AgentInput, under the id of the run it starts once the processor accepts it (the
-- run id derives from the input's event id; the projector computes it). Its kind and origin are
-- copied into that run's row, whichever of the input and the run is projected first. An input
-- the processor refused has a row here and no run.
CREATE TABLE run_inputs (
    run_id          text COLLATE "C" PRIMARY KEY,
    input_event_id  text COLLATE "C" NOT NULL,
    agent_id        text COLLATE "C" NOT NULL,
    kind            text,
    origin_relation text CHECK (origin_relation IN ('delegated', 'handed_off')),
    parent_agent_id text COLLATE "C",
    parent_run_id   text COLLATE "C",
    call_id         text COLLATE "C",
    depth           int NOT NULL
);

-- A run ends handed off, too (RunHandedOff): it names the run that continues its conversation.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'handed_off'));
ALTER TABLE runs
    -- the conversation: the event id of the input that started its first run
    ADD COLUMN correlation_id   text COLLATE "C",
    -- null: the default kind of the processor that served it (the projector cannot name it)
    ADD COLUMN kind             text,
    ADD COLUMN origin_relation  text CHECK (origin_relation IN ('delegated', 'handed_off')),
    ADD COLUMN parent_agent_id  text COLLATE "C",
    ADD COLUMN parent_run_id    text COLLATE "C",
    -- the delegating call a delegated run answers
    ADD COLUMN call_id          text COLLATE "C",
    -- 0 for a run nobody started, else one more than the run that started it
    ADD COLUMN depth            int NOT NULL DEFAULT 0,
    ADD COLUMN handoff_kind     text,
    ADD COLUMN handoff_agent_id text COLLATE "C",
    ADD COLUMN handoff_run_id   text COLLATE "C",
    ADD COLUMN handoff_note     text;

-- Before kinds every run's conversation was its own input. A run whose input was not projected
-- yet (no input text) learns it from its run_inputs row once it is: it forgets the id it took
-- from its correlation id meanwhile.
UPDATE runs SET correlation_id = input_event_id;
UPDATE runs SET input_event_id = NULL WHERE input_text IS NULL;
-- The inputs of the runs projected before: their run's input_event_id says which they are. An
-- input projected before this migration whose run starts after it (queued at the time) is not
-- known here; `agentstream projections rebuild` fills it in.
INSERT INTO run_inputs (run_id, input_event_id, agent_id, depth)
SELECT run_id, input_event_id, agent_id, 0 FROM runs WHERE input_event_id IS NOT NULL
ON CONFLICT DO NOTHING;

CREATE INDEX runs_by_conversation ON runs (correlation_id, started_at);

-- delegating: the agent's run waits for a run it delegated to (AgentState.status).
ALTER TABLE agents DROP CONSTRAINT agents_status_check;
ALTER TABLE agents ADD CONSTRAINT agents_status_check
    CHECK (status IN (
        'idle', 'running', 'awaiting_approval', 'waiting', 'sleeping', 'delegating', 'paused'
    ));
ALTER TABLE agents
    -- the agent kind its runs' inputs named; null: the default kind
    ADD COLUMN kind            text,
    ADD COLUMN runs_handed_off int NOT NULL DEFAULT 0;

-- A delegated call's deadline is a timer too.
ALTER TABLE timers DROP CONSTRAINT timers_purpose_check;
ALTER TABLE timers ADD CONSTRAINT timers_purpose_check
    CHECK (purpose IN ('sleep', 'callback', 'delegation'));

-- The answers of delegated runs, looked up by call when an agent's status is recomputed.
CREATE INDEX agent_events_by_call ON agent_events (call_id) WHERE type = 'DelegationReturned';
-- What an agent's processor sent other agents (a task, a handoff, a cancel, an answer), looked
-- up by the input that caused it when an agent's state is folded at a point in time.
CREATE INDEX agent_events_sent_to_others ON agent_events (causation_id)
    WHERE type IN ('AgentInput', 'DelegationReturned', 'RunCancelRequested')
      AND source = 'processor';
