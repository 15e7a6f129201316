"""A small REST client for the CLI: finds the server and token, turns errors into messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8765"


class CliError(Exception):
    """An error to print for the user (no traceback) before exiting non-zero."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _home() -> Path:
    return Path(os.environ.get("GRADPILOT_HOME") or Path.home() / ".gradpilot")


def resolve(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The server URL and token: options, then GRADPILOT_URL/GRADPILOT_TOKEN, then the token
    file that an embedded server on this machine writes."""
    url = url or os.environ.get("GRADPILOT_URL") or DEFAULT_URL
    token = token or os.environ.get("GRADPILOT_TOKEN")
    if not token:
        path = _home() / "token"
        if path.exists():
            token = path.read_text().strip()
    return url.rstrip("/"), token


class ApiClient:
    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 30
    ) -> None:
        self.url, self.token = resolve(url, token)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as e:
            raise CliError(
                f"cannot reach the gradpilot server at {self.url}: {e}. Start one with "
                "`gradpilot serve --embedded`, or set GRADPILOT_URL / --url"
            ) from e
        except httpx.HTTPError as e:
            raise CliError(f"request to {self.url}{path} failed: {e}") from e
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            hint = ""
            if response.status_code == 401:
                hint = " (set GRADPILOT_TOKEN or --token)"
            raise CliError(
                f"{response.status_code}: {detail}{hint}",
                exit_code=2 if response.status_code < 500 else 1,
            )
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json).json()

    def get_bytes(self, path: str) -> bytes:
        return self.request("GET", path).content
