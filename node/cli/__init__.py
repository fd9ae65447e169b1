"""The ``ainode`` command line (typer).  One module per command group; this file only wires them.

Every command: ``--help``; exit 0 on success; on failure one line ``ainode: error: ...`` and exit 2.
"""

from __future__ import annotations

import sys

import typer

from node.errors import AinodeError, ConfigError

app = typer.Typer(
    name="ainode",
    help="An AI node for radiology: receive DICOM, route to models, send standard DICOM results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print ainode's version."""
    from node import __version__

    typer.echo(__version__)


# Command groups register themselves below (one import line each).
from node.cli import echo, send, serve, studies  # noqa: E402, F401, I001 - registers commands
from node.cli import demo  # noqa: E402, F401, I001 - registers ainode demo
from node.cli.rules import app as _rules_app  # noqa: E402

app.add_typer(_rules_app, name="rules")
from node.cli.models import models_app, predict  # noqa: E402

app.add_typer(models_app, name="models")
app.command("predict")(predict)
from node.cli import deliveries, pull  # noqa: E402, F401, I001 - registers deliveries, pull


def main() -> None:
    """Console-script entry point: run the CLI and turn ainode errors into one line + exit 2."""
    try:
        app()
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        sys.exit(2)
    except AinodeError as exc:
        print(f"ainode: error: {exc}", file=sys.stderr)
        sys.exit(2)


__all__ = ["app", "main"]

from node.cli import jobs as _jobs  # noqa: E402

app.add_typer(_jobs.app, name="jobs")
from node.cli import users as _users  # noqa: E402

app.add_typer(_users.app, name="users")
from node.cli import feedback as _feedback  # noqa: E402

app.add_typer(_feedback.app, name="feedback")
from node.cli import results as _results  # noqa: E402
from node.cli import worker as _worker  # noqa: E402,F401  (registers `ainode worker`)

app.add_typer(_results.app, name="results")
