"""A synchronous in-process client for an ASGI app, lifespan included (no socket, no server).

The feed app starts its runtime (index reader, refresher) in its lifespan; `httpx`'s ASGI
transport does not run lifespans, so this client enters it on open and leaves it on close.
Used by `feedflow eval` and the tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


class AsgiClient:
    """A synchronous client for an ASGI app, running its lifespan (start-up and shutdown)."""

    def __init__(self, app: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._lifespan = app.router.lifespan_context(app)
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://serving.test"
        )
        self._loop.run_until_complete(self._lifespan.__aenter__())

    def get(self, url: str, params: Any = None) -> httpx.Response:
        """GET `url` with query `params`."""
        return self._loop.run_until_complete(self._http.get(url, params=params))

    def request(self, method: str, url: str, params: Any = None) -> httpx.Response:
        """Any method on `url` with query `params`."""
        return self._loop.run_until_complete(self._http.request(method, url, params=params))

    def close(self) -> None:
        """Close the client, then leave the app's lifespan (stopping its runtime)."""
        self._loop.run_until_complete(self._http.aclose())
        self._loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self._loop.close()

    def __enter__(self) -> AsgiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
