"""One partition's storage, as DESIGN.md "Storage" describes: segments, sparse offset and
time indexes, crash recovery, retention, flush policy; the log manager that owns a log
directory (checkpoints, clean-shutdown marker, ``meta.properties``); and the log cleaner
that compacts topics with ``cleanup.policy=compact`` (:mod:`broker.log.cleaner`).

Knows nothing of replication or sockets: the rest of the broker drives it.
"""

from broker.log.config import LogConfig
from broker.log.log import AppendInfo, FetchData, Log

__all__ = ["AppendInfo", "FetchData", "Log", "LogConfig"]
