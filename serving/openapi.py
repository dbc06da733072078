"""The OpenAPI 3.1 document of the serving process, written by hand (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from serving.params import MAX_ID

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID}
# What the server enforces of an identifier it is given (ids it returns come from events).
_PARAM_ID = {**_ID, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
_OPTIONAL_ID = {**_PARAM_ID, "minLength": 0, "description": "empty: as if absent"}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "description": "Items wanted; values above the configured maximum are capped.",
    "schema": {"type": "integer", "minimum": 1, "default": 20},
}
_REASON = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {
            "type": "string",
            "enum": [
                "because_you_watched",
                "continue_watching",
                "trending",
                "new",
                "popular",
                "explore",
            ],
        },
        "anchor_media_id": {**_ID, "description": "the watched item (because_you_watched)"},
    },
}
_ITEM = {
    "type": "object",
    "required": ["media_id", "content_type", "category", "creator_id", "score"],
    "properties": {
        "media_id": _ID,
        "content_type": {"type": "string"},
        "category": {"type": "string"},
        "creator_id": {"type": "string"},
        "score": {"type": "number"},
    },
}
_FEED_ITEM = {
    **_ITEM,
    "required": [*_ITEM["required"], "source", "reason"],
    "properties": {
        **_ITEM["properties"],  # type: ignore[dict-item]
        "source": {
            "type": "string",
            "enum": [
                "continue_watching",
                "co_engagement",
                "ann",
                "fresh",
                "trending",
                "popular",
                "explore",
                "cohort",
                "behaviour",
            ],
        },
        "reason": {"$ref": "#/components/schemas/Reason"},
    },
}
_FEED = {
    "type": "object",
    "required": ["request_id", "user_id", "items", "model_version", "index_version", "arm",
                 "fallback", "took_ms"],
    "properties": {
        "request_id": {"type": "string"},
        "user_id": _ID,
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/FeedItem"}},
        "model_version": {"type": "string"},
        "index_version": {"type": ["string", "null"]},
        "arm": {"type": "string"},
        "fallback": {
            "type": ["string", "null"],
            "enum": ["trending", "cached_features", "retrieval_order", "cold_start", None],
            "description": "The rung of the degradation ladder that answered; null if none.",
        },
        "took_ms": {"type": "number"},
    },
}  # fmt: skip
_LISTING = {
    "type": "object",
    "required": ["items", "index_version", "took_ms"],
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
        "index_version": {"type": ["string", "null"]},
        "took_ms": {"type": "number"},
    },
}
_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
    },
}


def _json(schema: str, description: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


_ERRORS = {
    "422": _json("Error", "Invalid parameter"),
    "503": _json("Error", "Not ready (index not loaded yet)"),
}


def _get(summary: str, parameters: list[Any], ok: dict[str, Any], **more: Any) -> Any:
    return {"get": {"summary": summary, "parameters": parameters,
                    "responses": {"200": ok, **_ERRORS, **more}}}  # fmt: skip


def _paths() -> dict[str, Any]:
    feed_params = [
        {"name": "user_id", "in": "query", "required": True, "schema": _PARAM_ID},
        _LIMIT,
        {"name": "content_type", "in": "query",
         "schema": {"type": "string", "enum": ["VIDEO", "AUDIO", "MIXED"]}},
        {"name": "diversity", "in": "query",
         "description": "0..1: share of cross-type discovery (default from settings)",
         "schema": {"type": "number", "minimum": 0, "maximum": 1}},
        {"name": "device", "in": "query",
         "description": "the client's device class (a new user's cohort, for cold start)",
         "schema": _OPTIONAL_ID},
    ]  # fmt: skip
    media = {"name": "media_id", "in": "path", "required": True, "schema": _PARAM_ID}
    trending = [
        {
            "name": "content_type",
            "in": "query",
            "schema": {"type": "string", "enum": ["VIDEO", "AUDIO", "MIXED"]},
        },
        {"name": "category", "in": "query", "schema": _OPTIONAL_ID},
        _LIMIT,
    ]
    probe = {"description": "JSON status", "content": {"application/json": {}}}
    return {
        "/api/v1/content/feed": _get("A personalised feed", feed_params, _json("Feed", "The feed")),
        "/api/v1/content/{media_id}/similar": _get(
            "More like this",
            [media, _LIMIT],
            _json("Listing", "Similar items"),
            **{"404": _json("Error", "Unknown or removed item")},
        ),
        "/api/v1/trending": _get("Trending items", trending, _json("Listing", "Trending items")),
        "/healthz": {"get": {"summary": "Alive", "responses": {"200": probe}}},
        "/readyz": {
            "get": {
                "summary": "Index loaded, boards read, Redis reachable",
                "responses": {"200": probe, "503": probe},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Feedflow serving", "version": "1"},
        "paths": _paths(),
        "components": {
            "schemas": {
                "Feed": _FEED,
                "FeedItem": _FEED_ITEM,
                "Item": _ITEM,
                "Reason": _REASON,
                "Listing": _LISTING,
                "Error": _ERROR,
            }
        },
    }
