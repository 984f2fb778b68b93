"""``headwater``: the client-side command line."""

from __future__ import annotations

import click

VERSION = "0.1.0"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="headwater")
def main() -> None:
    """Headwater: a distributed, partitioned, replicated commit log."""


if __name__ == "__main__":
    main()
