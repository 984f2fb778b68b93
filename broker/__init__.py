"""The Headwater broker daemon (``headwater-broker``).

Owns storage (``broker.log``), replication (``broker.replica``), the controller, the group
coordinator and the ZooKeeper bridge. Speaks to clients and other brokers only through
:mod:`protocol`; never imports :mod:`client`.
"""
