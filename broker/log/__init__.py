"""One partition's storage, as DESIGN.md "Storage" describes: segments, sparse offset and
time indexes, crash recovery, retention, flush policy; and the log manager that owns a
log directory (checkpoints, clean-shutdown marker, ``meta.properties``).

Knows nothing of replication or sockets: the rest of the broker drives it.
"""

from broker.log.config import LogConfig
from broker.log.log import AppendInfo, FetchData, Log

__all__ = ["AppendInfo", "FetchData", "Log", "LogConfig"]
