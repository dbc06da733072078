"""The HTTP surface of the serving process: a Starlette app over a :class:`Runtime`.

Handlers are `async` but do their (short, CPU-bound) work inline: a thread-pool hop would
cost more than the work. Bodies are serialised with orjson into bytes; errors of every kind
leave as JSON with the status code :func:`serving.errors.http_status` gives them.

Run: `feedflow serve` (uvicorn), or `create_app(build_runtime(settings))` in any ASGI server.
`feedflow serve --processes N` runs N replicas on one port; their `/metrics` then add up
every replica's series (Prometheus' multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kernel.metrics import MULTIPROCESS_ENV
from operators.keys import board_name
from serving import explore, params
from serving.errors import (
    NotReadyError,
    RouteNotFoundError,
    ServingError,
    UnknownItemError,
    http_status,
)
from serving.openapi import openapi_document
from serving.runtime import Runtime

log = logging.getLogger(__name__)
JSON = "application/json"


def json_response(body: Any, status: int = 200) -> Response:
    """Pre-serialised JSON bytes (orjson), no further encoding by the framework."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def _query(request: Request) -> dict[str, str]:
    """The request's parameters, decoded strictly (see :func:`serving.params.query`)."""
    return params.query(request.scope["query_string"])


def _ready(rt: Runtime) -> None:
    if not rt.catalogue.ready:
        raise NotReadyError("the index is not loaded yet; see /readyz")


def feed_endpoint(rt: Runtime) -> Callable[[Request], Any]:
    """The `/api/v1/content/feed` handler (GET and HEAD; HEAD validates, computes nothing)."""

    async def feed(request: Request) -> Response:
        req = params.feed_request(_query(request), rt.limits)
        _ready(rt)
        if request.method == "HEAD":  # validated as a GET would be, but no feed is computed:
            return Response(media_type=JSON)  # a feed publishes an impression
        return json_response(rt.service.feed(req))

    return feed


def similar_endpoint(rt: Runtime) -> Callable[[Request], Any]:
    """The `/api/v1/content/{media_id}/similar` handler: the items nearest to one live item."""

    async def similar(request: Request) -> Response:
        started = time.perf_counter()
        media_id = params.identifier(request.path_params["media_id"], "media_id")
        limit = params.limit(_query(request).get("limit"), rt.limits)
        _ready(rt)
        if rt.catalogue.items([media_id])[0] is None:
            raise UnknownItemError(f"media_id {media_id!r} is not in the served index")
        hits = rt.catalogue.similar(media_id, limit)
        records = rt.catalogue.items([m for m, _ in hits])
        items = [
            _item(r, score) for (_, score), r in zip(hits, records, strict=True) if r is not None
        ]
        return json_response(_listing(rt, items, started, media_id=media_id))

    return similar


def trending_endpoint(rt: Runtime) -> Callable[[Request], Any]:
    """The `/api/v1/trending` handler: one trending board, by content type and category."""

    async def trending(request: Request) -> Response:
        started = time.perf_counter()
        q = _query(request)
        kind = params.content_type(q.get("content_type"))
        category = params.category(q.get("category"))
        limit = params.limit(q.get("limit"), rt.limits)
        _ready(rt)
        name = board_name(category=category, content_type=kind)
        board = rt.trending.board(name)
        records = rt.catalogue.items([m for m, _ in board])
        items = [
            _item(r, score)
            for (_, score), r in zip(board, records, strict=True)
            if r is not None and (kind is None or r.content_type == kind)
        ][:limit]
        body = _listing(rt, items, started, content_type=kind, category=category)
        return json_response(body)

    return trending


def _item(record: Any, score: float) -> dict[str, Any]:
    return {
        "media_id": record.media_id,
        "content_type": record.content_type,
        "category": record.category,
        "creator_id": record.creator_id,
        "score": round(score, 4),
    }


def _listing(rt: Runtime, items: list[dict[str, Any]], started: float, **extra: Any) -> Any:
    return {
        **extra,
        "items": items,
        "index_version": rt.catalogue.version,
        "took_ms": round((time.perf_counter() - started) * 1000, 3),
    }


def probes(rt: Runtime) -> list[Route]:
    """The operational routes: /healthz, /readyz (503 until ready), /metrics, /openapi.json."""

    async def healthz(_: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ready, detail = rt.readiness()
        return json_response({"ready": ready, **detail}, 200 if ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)

    document = orjson.dumps(openapi_document())

    async def openapi(_: Request) -> Response:
        return Response(document, media_type=JSON)

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
    ]


async def on_serving_error(_: Request, exc: Exception) -> Response:
    """Starlette exception handler: a :class:`ServingError` as its JSON body and status."""
    assert isinstance(exc, ServingError)
    return json_response(exc.body(), http_status(exc))


async def on_http_error(_: Request, exc: Exception) -> Response:
    """Starlette exception handler: the framework's HTTP errors (404, 405, …) as JSON bodies."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return json_response(RouteNotFoundError("no such endpoint").body(), 404)
    body = {"error": "http_error", "message": str(exc.detail)}
    response = json_response(body, exc.status_code)
    response.headers.update(exc.headers or {})  # e.g. Allow on a 405
    return response


async def on_unexpected(_: Request, exc: Exception) -> Response:
    """Starlette exception handler: any other exception, logged, as a JSON 500."""
    log.exception("unexpected error answering a request", exc_info=exc)
    return json_response(ServingError("internal error").body(), 500)


def metrics_registry() -> CollectorRegistry:
    """What `/metrics` exports: this process's registry, or, among
    replicas sharing a port, every replica's series from the shared multiprocess directory
    (a scrape reaches any one of them). Gauges then carry a `pid` label per replica.
    """
    if not os.environ.get(MULTIPROCESS_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def create_app(runtime: Runtime) -> Starlette:
    """The ASGI app; its lifespan starts and stops `runtime`."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    routes = [
        Route("/api/v1/content/feed", feed_endpoint(runtime)),
        Route("/api/v1/content/{media_id:path}/similar", similar_endpoint(runtime)),
        Route("/api/v1/trending", trending_endpoint(runtime)),
        *probes(runtime),
    ]
    if runtime.explorer is not None:
        routes += explore.routes(runtime.explorer, lambda: runtime.catalogue.ready, json_response)
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ServingError: on_serving_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
