"""``gradpilot tokens``: create, list and revoke user tokens (an admin's token is needed)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from service.cli import render
from service.cli.client import ApiClient, CliError

tokens_app = typer.Typer(
    help="Manage user tokens (admin): who may use this server, and as whom.",
    no_args_is_help=True,
)
console = Console()

UrlOpt = Annotated[str | None, typer.Option("--url", help="Server URL (GRADPILOT_URL).")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="An admin's bearer token (GRADPILOT_TOKEN).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _client(url: str | None, token: str | None) -> ApiClient:
    return ApiClient(url, token)


def _when(value: Any) -> str:
    return str(value or "")[:19].replace("T", " ")


def tokens_table(tokens: list[dict[str, Any]]) -> Table:
    table = Table(title="gradpilot tokens", header_style="bold")
    for col in ("id", "user", "role", "name", "created", "revoked"):
        table.add_column(col)
    for t in tokens:
        who = t.get("user") or (f"job {t['job_id'][:12]}" if t.get("job_id") else "—")
        table.add_row(
            t["id"],
            who,
            t.get("role") or "",
            t.get("name") or "",
            _when(t.get("created_at")),
            _when(t.get("revoked_at")) or "—",
        )
    return table


@tokens_app.command("create")
def create(
    user: Annotated[str, typer.Argument(help="The user's name; a new name makes the user.")],
    role: Annotated[
        str | None, typer.Option(help="Role of a new user: user (default) or admin.")
    ] = None,
    name: Annotated[str, typer.Option(help="What the token is for, e.g. 'laptop'.")] = "",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token for a user and print it: it is shown this once, the server keeps only
    its hash."""
    if role is not None and role not in ("user", "admin"):
        raise CliError(f"--role must be 'user' or 'admin', not {role!r}", 2)
    body: dict[str, Any] = {"user": user, "name": name}
    if role is not None:
        body["role"] = role
    created = _client(url, token).post("/v1/tokens", body)
    if as_json:
        render.print_json(console, created)
        return
    console.print(
        f"token [bold]{created['id']}[/] for {created['user']} ({created['role']}); "
        "copy it now, it is not shown again:"
    )
    console.print(created["token"], markup=False, highlight=False, soft_wrap=True)


@tokens_app.command("list")
def list_tokens(
    include_jobs: Annotated[
        bool, typer.Option("--jobs", help="Also list the tokens of jobs.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tokens (never their values), revoked ones marked."""
    params = {"include_jobs": "true"} if include_jobs else None
    data = _client(url, token).get("/v1/tokens", params=params)
    if as_json:
        render.print_json(console, data)
        return
    console.print(tokens_table(data["data"]))


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `gradpilot tokens list`).")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: it stops working, and the dashboard sessions it opened end."""
    revoked = _client(url, token).request("DELETE", f"/v1/tokens/{token_id}").json()
    if as_json:
        render.print_json(console, revoked)
        return
    console.print(f"revoked token {revoked['id']} ({revoked.get('user') or revoked['kind']})")
