"""Kafka wiring: settings, topics, Avro serde, schema registry, producer/consumer SDK, engine."""
