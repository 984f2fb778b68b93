"""``headwater-broker``: the daemon's command line."""

from __future__ import annotations

import sys

import click

from broker.config import ConfigError, load_config

VERSION = "0.1.0"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A TOML file of settings (Kafka's names).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set one setting; wins over the file and HEADWATER_* variables.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Validate the configuration, print every setting and its source, exit.",
)
@click.version_option(VERSION, prog_name="headwater-broker")
def main(config_file: str | None, overrides: tuple[str, ...], check: bool) -> None:
    """Run a Headwater broker."""
    try:
        config = load_config(file=config_file, overrides=overrides)
    except ConfigError as exc:
        click.echo(f"headwater-broker: {exc}", err=True)
        sys.exit(1)
    if check:
        for name, value in config.items():
            shown = ",".join(value) if isinstance(value, list) else value
            click.echo(f"{name}={shown}  # {config.sources[name]}")
        return
    click.echo(
        f"headwater-broker: configuration of broker {config.broker_id} is valid; the serving "
        f"daemon arrives with issue 4, so nothing was started (use --check to inspect it).",
        err=True,
    )
    sys.exit(2)
