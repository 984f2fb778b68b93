"""``make bench``: Headwater beside its peers (Redis Streams, NATS JetStream) and beside the
machine's own limits, in one run, as a markdown table and a chart in ``bench/results/``.

- :mod:`~bench.compare.matrix` the standard matrix, its targets, the report (``main``)
- :mod:`~bench.compare.workloads` the metrics, run sizes and the helpers all systems share
- :mod:`~bench.compare.headwater`, :mod:`~bench.compare.redis_streams`,
  :mod:`~bench.compare.nats_jetstream` each system's servers and workloads
- :mod:`~bench.compare.limits` loopback TCP and ``os.write`` to the data disk
- :mod:`~bench.compare.servers` starting and killing the peers' server binaries
- :mod:`~bench.compare.table` rows, ratios, pass/fail, markdown, chart (pure)

Headwater's own workloads are :mod:`bench.perf`'s (``headwater bench``); this package adds
the clusters they run on, the peers, and the comparison.
"""
