#!/usr/bin/env bash
# Creates agentstream's topics on the compose stack. Every agent topic is keyed by agent_id and
# co-partitioned (same partition count), so one processor instance owns all of an agent's events.
# Keep in step with the topic registry in streams/ (`agentstream topics describe` prints it).
set -euo pipefail
bootstrap="$1"
partitions="${AGENTSTREAM_PARTITIONS:-6}"
kt=/opt/kafka/bin/kafka-topics.sh

create() {
  "$kt" --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$1" \
    --partitions "$partitions" --replication-factor 1 "${@:2}"
}

for topic in agent.inputs agent.model-calls agent.model-results agent.tool-calls \
             agent.tool-results agent.approval-requests agent.approval-decisions agent.outcomes; do
  create "$topic" --config retention.ms=-1
done
create agent.state --config cleanup.policy=compact --config min.compaction.lag.ms=60000
create agent.dlq --config retention.ms=2592000000
"$kt" --bootstrap-server "$bootstrap" --list
