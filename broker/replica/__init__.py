"""Partitions hosted on this broker: their roles (from the controller's LeaderAndIsr), the
produce, fetch and list-offsets paths, and fetches parked until data arrives.

Follower fetchers, the ISR and the high watermark over followers arrive with replication.
"""
