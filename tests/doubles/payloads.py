"""Doubles for the security suite (issue 8), subclasses of the shared doubles.

* ``TwoAccountCloudDouble``: one Comfy Cloud address that accepts several API keys, i.e. several
  accounts of the same service. The double keeps one queue for all of them (it only has to show
  what the *panel* does with two accounts on one address: whose held jobs, whose gallery, whose key
  goes with which job); ``requests`` records which key every call carried.
"""

from __future__ import annotations

from aiohttp import web

from .cloud import CloudDouble, _error

__all__ = ["TwoAccountCloudDouble"]


class TwoAccountCloudDouble(CloudDouble):
    """``CloudDouble`` that also accepts ``other_keys`` (another account each)."""

    def __init__(self, api_key: str = "test-key", *, other_keys: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(api_key, **kwargs)
        self.keys = {api_key, *other_keys}

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler):
        path = request.path
        if path == "/api/system_stats":
            return await handler(request)
        token = request.headers.get("X-API-Key")
        if path == "/ws":
            token = request.rel_url.query.get("token") or token
        if token not in self.keys:
            return _error(401, "unauthorized", "Invalid or missing API key")
        return await handler(request)
