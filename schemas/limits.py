"""The size limits of the contract, one place for every entrance to enforce.

Kafka refuses records over ``message.max.bytes`` (about 1 MB by default, on the broker and in
librdkafka). The processor's state snapshot holds an agent's inputs and conversation, and its
outbox holds the next model call, which carries the conversation again: an input must stay far
below the record limit for its run to be storable at all."""

from __future__ import annotations

__all__ = ["MAX_INPUT_TEXT_BYTES", "MAX_RECORD_BYTES", "MAX_RESULT_BYTES", "utf8_size"]

#: a record's value, as librdkafka and the broker accept it by default
MAX_RECORD_BYTES = 1_000_000
#: an input's text, UTF-8 encoded (128 KiB: some 30,000 tokens of prose)
MAX_INPUT_TEXT_BYTES = 128 * 1024
#: a tool's result or a model's answer, UTF-8 encoded: it joins the conversation as inputs do
MAX_RESULT_BYTES = 128 * 1024


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (lone surrogates counted as the escapes they become)."""
    return len(text.encode("utf-8", "surrogatepass"))
