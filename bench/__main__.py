"""``python -m bench`` (``make bench``): the standard matrix, Headwater beside Redis Streams
and NATS JetStream and the machine's limits (:mod:`bench.compare`), written to
``bench/results/``; ``BENCH_QUICK=1`` for a smoke run.

``python -m bench micro``: the in-process micro-benchmarks (record codec, partition log).

``python -m bench profile`` (``make bench-profile``): the matrix's Headwater workloads
under py-spy, flame graphs in ``bench/results/profiles/`` (:mod:`bench.compare.profiles`).
"""

import logging
import sys

import structlog

from bench import log, records
from bench.compare import matrix, profiles

if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if sys.argv[1:] == ["micro"]:
        records.main()
        log.main()
    elif sys.argv[1:] == ["profile"]:
        profiles.main()
    elif sys.argv[1:]:
        sys.exit("usage: python -m bench [micro | profile]")
    else:
        matrix.main()
