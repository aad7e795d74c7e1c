-- An approval whose run ended before anyone decided is closed, not pending: the run will never
-- use it, and the inbox (status = 'pending') must not list it forever. Its gated tool call is
-- closed with it. A decision made after the run ended is recorded but does not count, as the
-- state machine did not apply it either.

ALTER TABLE approvals DROP CONSTRAINT approvals_status_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_status_check
    CHECK (status IN ('pending', 'granted', 'denied', 'expired', 'closed'));

ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_status_check;
ALTER TABLE tool_calls ADD CONSTRAINT tool_calls_status_check
    CHECK (status IN (
        'requested', 'awaiting_approval', 'completed', 'failed', 'denied', 'expired', 'closed'
    ));

CREATE OR REPLACE FUNCTION tool_call_status(result_status text, approval text, requested boolean)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN result_status IS NOT NULL THEN result_status
        WHEN approval IN ('denied', 'expired', 'closed') THEN approval
        WHEN requested OR approval = 'granted' THEN 'requested'
        ELSE 'awaiting_approval'
    END
$$;
