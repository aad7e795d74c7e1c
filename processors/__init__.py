"""The pure agent state machine and the workers that run its side effects."""
