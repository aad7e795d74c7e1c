"""The ``agentstream`` command line and the embedded development stack."""
