"""``python -m broker``: the same as ``headwater-broker``."""

from broker.main import main

main()
