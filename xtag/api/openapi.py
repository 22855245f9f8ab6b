"""The OpenAPI 3.1 document, built from the same schemas that validate requests."""

from __future__ import annotations

from xtag.services.preview import PREVIEW

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}


REFUSED = {
    "type": "object",
    "required": ["count", "items"],
    "properties": {
        "count": {"type": "integer"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "at": {"type": "string"},
                    "status": {"type": "integer"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
COLLECTOR_ERROR = {
    "type": "object",
    "required": ["error", "code", "message"],
    "properties": {
        "error": {"type": "string"},
        "code": {
            "type": "string",
            "enum": [
                "invalid",
                "unauthorized",
                "forbidden_origin",
                "too_large",
                "unsupported_encoding",
                "rate_limited",
                "unavailable",
                "not_found",
            ],
        },
        "message": {"type": "string"},
    },
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def errors(*codes: int) -> dict:
    """Error answers; any authenticated operation may also be rate limited."""
    if 401 in codes:
        codes = (*codes, 429)
    return {str(code): {"description": "error", **json_content(_ref("Error"))} for code in codes}


def _page_of(name: str) -> dict:
    return {
        "type": "object",
        "required": ["items", "total", "limit", "offset"],
        "properties": {
            "items": {"type": "array", "items": _ref(name)},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    }


PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]
ROW_ID = {
    "name": "row_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def _resource_paths(resource) -> dict:
    name = resource.kind.schema.name
    filters = [
        {"name": f, "in": "query", "schema": {"type": "integer" if cast is int else "string"}}
        for f, (_, cast) in resource.filters.items()
    ]
    base, item = f"/api/v1/{resource.path}", f"/api/v1/{resource.path}/{{row_id}}"
    return {
        base: {
            "get": {
                "summary": f"List {resource.path}",
                "parameters": PAGING + filters,
                "responses": {
                    "200": {"description": "a page", **json_content(_page_of(name))},
                    **errors(400, 401),
                },
            },
            "post": {
                "summary": f"Create a {resource.kind.name}",
                "requestBody": {"required": True, **json_content(_ref(f"{name}Input"))},
                "responses": {
                    "201": {"description": "created", **json_content(_ref(name))},
                    **errors(400, 401, 403, 409, 422),
                },
            },
        },
        item: {
            "parameters": [ROW_ID],
            "get": {
                "summary": f"Read a {resource.kind.name}",
                "responses": {
                    "200": {"description": "found", **json_content(_ref(name))},
                    **errors(401, 404),
                },
            },
            "patch": {
                "summary": f"Change a {resource.kind.name}",
                "requestBody": {"required": True, **json_content(_ref(f"{name}Patch"))},
                "responses": {
                    "200": {"description": "changed", **json_content(_ref(name))},
                    **errors(400, 401, 403, 404, 409, 422),
                },
            },
            "delete": {
                "summary": f"Delete a {resource.kind.name}",
                "responses": {"204": {"description": "deleted"}, **errors(401, 403, 404)},
            },
        },
    }


def _collector_paths() -> dict:
    message = {"type": "object", "description": "a Segment message (track, page, identify, ...)"}
    answers = {
        "200": {
            "description": "queued (a batch lists the messages it refused, by index)",
            **json_content(
                {
                    "type": "object",
                    "properties": {
                        "success": {"type": "boolean"},
                        "refused": {"type": "array", "items": {"type": "object"}},
                    },
                }
            ),
        },
        **{
            str(code): {"description": text, **json_content(COLLECTOR_ERROR)}
            for code, text in (
                (400, "bad input, named"),
                (401, "missing or unknown write key"),
                (403, "origin not allowed for the site"),
                (413, "over 32 KB per message or 500 KB per request"),
                (415, "unsupported Content-Encoding"),
                (429, "the site's events-per-second limit is reached; see Retry-After"),
                (503, "cannot queue now; see Retry-After"),
            )
        },
    }
    paths = {}
    for route in ("track", "page", "identify", "batch"):
        body = (
            {"type": "object", "properties": {"batch": {"type": "array", "items": message}}}
            if route == "batch"
            else message
        )
        paths[f"/v1/{route}"] = {
            "post": {
                "summary": f"Collector: {route} (Segment HTTP Tracking API)",
                "security": [{"writeKey": []}, {}],
                "requestBody": {
                    "content": {
                        "application/json": {"schema": body},
                        "text/plain": {"schema": {"type": "string"}},
                    }
                },
                "responses": answers,
            }
        }
    return paths


# paths declared by the API's other route modules (insights, alerts) at import
DECLARED: dict[str, dict] = {}


def declare(path: str, doc: dict) -> None:
    DECLARED[path] = doc


def document(resources) -> dict:
    schemas = {"Error": ERROR}
    paths: dict = dict(DECLARED)
    for resource in resources:
        schema = resource.kind.schema
        schemas[schema.name] = schema.openapi_output()
        schemas[f"{schema.name}Input"] = schema.openapi_input()
        schemas[f"{schema.name}Patch"] = schema.openapi_input(partial=True)
        paths.update(_resource_paths(resource))
    schemas["PreviewRequest"] = PREVIEW.openapi_input()
    paths["/api/v1/mappings/preview"] = {
        "post": {
            "summary": "The conversions a message would produce (sends nothing)",
            "requestBody": {"required": True, **json_content(_ref("PreviewRequest"))},
            "responses": {
                "200": {"description": "preview", **json_content({"type": "object"})},
                **errors(400, 401, 404),
            },
        }
    }
    listing = {
        "200": {"description": "a page", **json_content({"type": "object"})},
        **errors(400, 401),
    }
    paths["/api/v1/deliveries"] = {
        "get": {
            "summary": "List deliveries",
            "parameters": PAGING
            + [
                {"name": "status", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "pixel",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "X pixel id",
                },
                {
                    "name": "since",
                    "in": "query",
                    "schema": {"type": "string", "format": "date-time"},
                },
            ],
            "responses": listing,
        }
    }
    paths["/api/v1/deliveries/{row_id}"] = {
        "parameters": [ROW_ID],
        "get": {
            "summary": "A delivery with its attempts and conversions",
            "responses": {
                "200": {"description": "found", **json_content({"type": "object"})},
                **errors(401, 404),
            },
        },
    }
    paths["/api/v1/deliveries/{row_id}/retry"] = {
        "parameters": [ROW_ID],
        "post": {
            "summary": "Retry a failed delivery (admin)",
            "responses": {
                "200": {"description": "queued", **json_content({"type": "object"})},
                **errors(401, 403, 404, 409),
            },
        },
    }
    paths["/api/v1/deliveries/retry"] = {
        "post": {
            "summary": "Retry every failed delivery matching ?pixel= and ?since= (admin)",
            "parameters": [
                {"name": "pixel", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "since",
                    "in": "query",
                    "schema": {"type": "string", "format": "date-time"},
                },
            ],
            "responses": {
                "200": {"description": "queued", **json_content({"type": "object"})},
                **errors(400, 401, 403),
            },
        }
    }
    paths["/api/v1/sites/{row_id}/rotate-write-key"] = {
        "parameters": [ROW_ID],
        "post": {
            "summary": "A new write key; the old one accepted for XTAG_WRITE_KEY_GRACE_HOURS "
            "unless revoke_previous (admin)",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"revoke_previous": {"type": "boolean"}},
                        }
                    }
                }
            },
            "responses": {
                "200": {
                    "description": "rotated",
                    **json_content(
                        {
                            "type": "object",
                            "properties": {
                                "write_key": {"type": "string"},
                                "previous_valid_until": {"type": "string"},
                            },
                        }
                    ),
                },
                **errors(400, 401, 403, 404),
            },
        },
    }
    paths["/api/v1/sites/{row_id}/refused"] = {
        "parameters": [ROW_ID],
        "get": {
            "summary": "The site's latest refused collector requests, and how many in all",
            "responses": {
                "200": {"description": "refused requests", **json_content(REFUSED)},
                **errors(401, 404),
            },
        },
    }
    paths["/api/v1/events"] = {
        "get": {
            "summary": "Recent received events and their outcome",
            "parameters": PAGING
            + [
                {"name": n, "in": "query", "schema": {"type": t}}
                for n, t in (
                    ("site_id", "integer"),
                    ("event_name", "string"),
                    ("outcome", "string"),
                )
            ],
            "responses": listing,
        }
    }
    paths["/api/v1/audit"] = {
        "get": {
            "summary": "Configuration changes (admin)",
            "parameters": PAGING,
            "responses": {**listing, **errors(403)},
        }
    }
    paths.update(_collector_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "xtag",
            "version": "1",
            "description": "Management API and collector of xtag.",
        },
        "security": [{"bearer": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "write key as the username",
                },
            },
        },
        "paths": paths,
    }
