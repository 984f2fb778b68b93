"""``python -m bench`` (``make bench``): the standard matrix, Headwater beside Redis Streams
and NATS JetStream and the machine's limits (:mod:`bench.compare`), written to
``bench/results/``; ``BENCH_QUICK=1`` for a smoke run.

``python -m bench micro``: the in-process micro-benchmarks (record codec, partition log).
"""

import logging
import sys

import structlog

from bench import log, records
from bench.compare import matrix

if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if sys.argv[1:] == ["micro"]:
        records.main()
        log.main()
    elif sys.argv[1:]:
        sys.exit("usage: python -m bench [micro]")
    else:
        matrix.main()
