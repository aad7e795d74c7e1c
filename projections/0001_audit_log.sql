-- The audit log and the projector's positions.
--
-- agent_events holds every agent event exactly once (keyed by event_id: the processor re-emits
-- identical events after a crash, and those must not become a second row). It is append-only,
-- enforced below, so the log can be trusted as the record of what happened.

CREATE TABLE agent_events (
    event_id       text COLLATE "C" PRIMARY KEY,
    type           text NOT NULL,
    agent_id       text COLLATE "C" NOT NULL,
    tenant_id      text NOT NULL,
    run_id         text COLLATE "C",
    call_id        text COLLATE "C",
    correlation_id text NOT NULL,
    causation_id   text,
    occurred_at    timestamptz NOT NULL,
    source         text NOT NULL,
    schema_version int NOT NULL,
    topic          text NOT NULL,
    "partition"    int NOT NULL,
    "offset"       bigint NOT NULL,
    payload        jsonb NOT NULL,
    -- true when NUL characters had to be replaced (PostgreSQL text and jsonb cannot hold them)
    sanitized      boolean NOT NULL DEFAULT false,
    projected_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX agent_events_timeline ON agent_events (agent_id, occurred_at);

CREATE FUNCTION agent_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agent_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER agent_events_no_update BEFORE UPDATE OR DELETE ON agent_events
    FOR EACH ROW EXECUTE FUNCTION agent_events_append_only();
CREATE TRIGGER agent_events_no_truncate BEFORE TRUNCATE ON agent_events
    FOR EACH STATEMENT EXECUTE FUNCTION agent_events_append_only();

-- The next offset to apply per topic partition, written in the same transaction as the rows it
-- covers: a restart resumes exactly there, and nothing is applied twice.
CREATE TABLE projection_offsets (
    projection  text NOT NULL,
    topic       text NOT NULL,
    "partition" int NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, "partition")
);
