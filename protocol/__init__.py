"""Headwater's wire protocol: bytes in, typed objects out.

Pure: no sockets, no asyncio, no disk (an import-linter contract checks it). Both the
broker and the client build on it.

- :mod:`protocol.framing`: length-prefixed frames, request/response headers, the
  incremental frame decoder.
- :mod:`protocol.apis`: API keys (Kafka's numbering), version ranges, message schemas,
  and whole request/response encoding.
- :mod:`protocol.schema`: the declarative schema machinery the APIs are written in.
- :mod:`protocol.errors`: Kafka's error codes as exception classes.
- :mod:`protocol.records`: Kafka's RecordBatch v2, compression, CRC32C.
"""
