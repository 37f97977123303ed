"""Access commands and checks of the ``rubot`` command line: personal API tokens, and how ``rubot web`` says at
start who may decide (refusing development mode off loopback)."""

from __future__ import annotations

import os
from typing import Any

import click

from pipeline.errors import ConfigurationError
from rubot_app.scripts import output
from rubot_app.scripts.clikit import cli_runtime, echo_lines


def _db() -> Any:
    return cli_runtime().db


@click.group()
def tokens() -> None:
    """Personal API tokens for the JSON API (only a hash is stored; the token is shown once)."""


@tokens.command("create")
@click.option("--user", required=True, help="The owner: the principal id decisions made with it are recorded as.")
@click.option("--role", "roles", multiple=True, metavar="ROLE", help="A role the owner holds (repeatable).")
@click.option("--name", default="", help="What the token is for (shown by `rubot tokens list`).")
@click.option("--display-name", default="", help="The owner's name as people read it (default: --user).")
def tokens_create(user: str, roles: tuple[str, ...], name: str, display_name: str) -> None:
    """Create a token and print it once; store it where the program using it keeps secrets."""
    from pipeline.auth import tokens as api_tokens

    token_id, token = api_tokens.create(_db(), user=user, roles=roles, name=name, display_name=display_name)
    click.echo(f"Created API token {token_id} for {user} (roles: {', '.join(sorted(set(roles))) or 'none'}).")
    click.echo("It is shown only this once:")
    click.echo(token)


@tokens.command("list")
def tokens_list() -> None:
    """List tokens: id, owner, roles, created, last used, revoked (never the secret)."""
    from pipeline.auth import tokens as api_tokens

    found = api_tokens.list_tokens(_db())
    if not found:
        click.echo("No API tokens. Create one with `rubot tokens create --user ID --role ROLE`.")
        return
    echo_lines(output.token_table(found))


@tokens.command("revoke")
@click.argument("token_id")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token: the next request with it is refused."""
    from pipeline.auth import tokens as api_tokens

    info = api_tokens.revoke(_db(), token_id)
    click.echo(f"Revoked API token {info.id} of {info.user_id}.")


def announce_web_auth(host: str, *, loopback: frozenset[str]) -> None:
    """Say at start how decisions are authenticated; refuse development mode off loopback."""
    from pipeline.auth.dev import BANNER
    from pipeline.auth.proxy import parse_networks
    from pipeline.web.auth import MODES, NO_AUTHENTICATOR

    mode = (os.environ.get("RUBOT_WEB_AUTH") or "none").strip().lower()
    if mode not in MODES:
        raise ConfigurationError(f"RUBOT_WEB_AUTH={mode!r} is not one of {', '.join(MODES)}")
    if mode == "dev":
        if host not in loopback:
            raise ConfigurationError(
                f"refusing RUBOT_WEB_AUTH=dev on {host}: development mode serves only a loopback address "
                "(--host 127.0.0.1)"
            )
        who = os.environ.get("RUBOT_WEB_DEV_USER") or "dev@localhost"
        click.echo("!" * 100, err=True)
        click.echo(BANNER.format(who=who, roles=os.environ.get("RUBOT_WEB_DEV_ROLES") or "none"), err=True)
        click.echo("!" * 100, err=True)
    elif mode == "proxy":
        networks = parse_networks(os.environ.get("RUBOT_WEB_TRUSTED_PROXIES", ""))
        if not networks:
            raise ConfigurationError("RUBOT_WEB_AUTH=proxy needs RUBOT_WEB_TRUSTED_PROXIES (the proxy's addresses)")
        click.echo(
            "rubot web: decisions by principals from X-Forwarded-User/-Email/-Groups, trusted only from "
            + ", ".join(str(n) for n in networks),
            err=True,
        )
    else:
        click.echo(f"rubot web: {NO_AUTHENTICATOR}", err=True)
    click.echo("rubot web: the JSON API accepts personal API tokens (`rubot tokens create`).", err=True)
