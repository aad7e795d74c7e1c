"""The durable-execution peers of ``agentstream bench peers``: DBOS, LangGraph, Restate and
Temporal running the same 3-step agent run as agentstream, each driven at the same offered loads.

Every peer's own packages are imported inside its functions, so this package imports without
them and a peer that is missing is reported as not installed.
"""
