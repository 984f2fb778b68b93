"""``headwater-broker``: the daemon's command line."""

from __future__ import annotations

import sys

import click

VERSION = "0.1.0"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="headwater-broker")
def main() -> None:
    """Run a Headwater broker."""
    click.echo(
        "headwater-broker: the broker daemon is not built yet (it arrives with issue 4); "
        "nothing was started.",
        err=True,
    )
    sys.exit(2)
