"""Consumer groups: the coordinator of each group, and its committed offsets, kept as
records of the replicated internal topic ``__consumer_offsets`` (DESIGN.md "Consumer
groups")."""
