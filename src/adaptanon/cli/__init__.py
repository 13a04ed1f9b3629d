"""Command line: ``adaptanon anonymize``, ``evaluate``, ``demo`` and ``models``, one module
each; :mod:`.options` holds what they share."""

from __future__ import annotations

import click

from adaptanon.cli.anonymize import anonymize
from adaptanon.cli.demo import demo
from adaptanon.cli.evaluate import evaluate_command
from adaptanon.cli.models import models
from adaptanon.engines.host_memory import reuse_freed_memory


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adaptanon")
def main() -> None:
    """Anonymize image regions so that a classifier keeps its decision on the stored file."""
    reuse_freed_memory()


for _command in (anonymize, evaluate_command, demo, models):
    main.add_command(_command)

__all__ = ["main"]
