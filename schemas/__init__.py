"""The wire contract: Avro schemas (the source of truth), pydantic models mirroring them, upcasters.

Nothing here imports Kafka, Faust or database code, so the pure core can depend on it.
"""
