"""``ainode users hash-password`` — make the ``password_hash`` of an ``auth.users`` entry.

The password is read from standard input when it is not a terminal (one line), else asked for
twice without echo.  Only the argon2id hash is printed; the password is never echoed or logged.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(help="Local console/API users (config auth.users).", no_args_is_help=True)

_MIN_LENGTH = 8


@app.command("hash-password")
def hash_password_cmd(
    role: str = typer.Option(
        "",
        help="Also print a config snippet with this role (viewer, reviewer, operator or admin).",
    ),
    user: str = typer.Option("USER", help="User name for the snippet."),
) -> None:
    """Read a password (stdin or prompt) and print its argon2id hash for auth.users."""
    if sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < _MIN_LENGTH:
        typer.echo(f"ainode: error: the password needs at least {_MIN_LENGTH} characters", err=True)
        raise typer.Exit(2)
    if role and role not in ("viewer", "reviewer", "operator", "admin"):
        typer.echo("ainode: error: --role must be viewer, reviewer, operator or admin", err=True)
        raise typer.Exit(2)
    from node.api.auth import hash_password  # the HTTP face's own scheme; imported when used

    digest = hash_password(password)
    if role:
        typer.echo(f'auth:\n  users:\n    {user}: {{password_hash: "{digest}", role: {role}}}')
    else:
        typer.echo(digest)
