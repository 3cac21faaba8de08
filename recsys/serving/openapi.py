"""The OpenAPI document says what the server really answers: every error status of each route
with its body, and LitServe's built-in plain-text routes as plain text.

FastAPI documents only 200 and 422 by itself; the 400/401/404/413/503 answers come from our
handlers, LitServe's middlewares and its auth dependency, so they are added here, once, from
one table (a schemathesis run in the test suite holds the two together).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from recsys.serving.schemas import Detail, Loading

ERRORS = {
    400: "Malformed request (the body could not be read)",
    401: "Missing or wrong X-API-Key (LIT_SERVER_API_KEY is set)",
    403: "Catalog changes are disabled (no serve.admin_token), or the bearer token is wrong",
    404: "Unknown user_id or item_id",
    409: "The item_id is already in the catalog",
    413: "Request body larger than max_payload_bytes",
    422: "Invalid input",
    503: "No inference worker can answer now (loading the bundle, or restarting after a failure); "
    "retry after the Retry-After seconds",
}
# (path, method) -> the error statuses our routes can return (401 is added to all when auth is on)
ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("/health", "get"): (503,),
    ("/recommend/{user_id}", "get"): (404, 422, 503),
    ("/recommend", "post"): (400, 413, 422, 503),
    ("/user/{user_id}/history", "get"): (404, 422, 503),
    ("/items/{item_id}", "get"): (404, 422, 503),
    ("/items", "post"): (400, 401, 403, 409, 413, 422, 503),
    ("/items/{item_id}", "delete"): (401, 403, 404, 422, 503),
}
ADMIN_401 = "Missing bearer token (catalog changes need `Authorization: Bearer <serve.admin_token>`)"
CREATED = {("/items", "post")}  # answered 201, not 200
NO_CONTENT = {("/items/{item_id}", "delete")}  # answered 204 without a body
PLAIN_TEXT = {  # LitServe's own routes that answer text, not JSON
    ("/", "get"): {"200": "litserve running"},
    ("/livez", "get"): {"200": "ok", "503": "not ready"},
}
RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _error_response(status: int, path: str) -> dict[str, Any]:
    if status == 503 and path == "/health":
        return {"description": "The bundle is still loading", "content": _json("Loading")}
    description = ADMIN_401 if status == 401 and path.startswith("/items") else ERRORS[status]
    response: dict[str, Any] = {"description": description, "content": _json("Error")}
    if status == 503:
        response["headers"] = RETRY_AFTER
    return response


def add_error_responses(schema: dict[str, Any], api_key: bool) -> dict[str, Any]:
    """The OpenAPI ``schema`` with every route's error answers and truthful content types."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = Detail.model_json_schema()
    components["Loading"] = Loading.model_json_schema()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status, text in PLAIN_TEXT.get((path, method), {}).items():
                responses[status] = {
                    "description": f"`{text}`",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            if (path, method) in CREATED and "200" in responses:
                responses["201"] = {**responses.pop("200"), "description": "Created"}
            if (path, method) in NO_CONTENT and "200" in responses:
                del responses["200"]
                responses["204"] = {"description": "Deleted: never recommended or listed again"}
            statuses = ROUTE_ERRORS.get((path, method), ())
            for status in (*statuses, *((401,) if api_key else ())):
                if status == 422 and "422" in responses:
                    continue  # FastAPI's own validation-error schema (detail is a list there)
                responses[str(status)] = _error_response(status, path)
    return schema


def add_examples(schema: dict[str, Any], examples: dict[str, str]) -> dict[str, Any]:
    """Real ids as the path parameters' examples: /docs can try a known user, and generated
    tests reach past the 404 of a random id."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") in examples:
                    parameter["example"] = examples[parameter["name"]]
    return schema


def document_responses(app: FastAPI, api_key: bool, examples: dict[str, str] | None = None) -> None:
    """Make ``app.openapi()`` (and /openapi.json, /docs) include ``add_error_responses``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_examples(add_error_responses(build(), api_key), examples or {})
        return app.openapi_schema

    app.openapi = openapi


class _ResponseHeaders:
    """ASGI middleware base: ``headers(scope, status, headers)`` returns a response's headers
    (the list it was given, or a new one) as its start message is sent."""

    def __init__(self, app: Any):
        self.app = app

    def headers(self, scope: dict[str, Any], status: int, headers: list) -> list:
        raise NotImplementedError

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_rewritten(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                rewritten = self.headers(scope, message["status"], headers)
                if rewritten is not headers:
                    message = {**message, "headers": rewritten}
            await send(message)

        await self.app(scope, receive, send_rewritten)


class PlainTextContentType(_ResponseHeaders):
    """LitServe's ``/`` and ``/livez`` answer text with no Content-Type at all; say
    ``text/plain`` (what the OpenAPI document promises) wherever a response names none."""

    def headers(self, scope: dict[str, Any], status: int, headers: list) -> list:
        if any(name.lower() == b"content-type" for name, _ in headers):
            return headers
        return [*headers, (b"content-type", b"text/plain; charset=utf-8")]


class AllowedMethods(_ResponseHeaders):
    """A 405's ``Allow`` header lists every method the path answers. Starlette names only the
    methods of the first route that matched the path, and ``GET`` and ``DELETE
    /items/{item_id}`` are two routes."""

    def headers(self, scope: dict[str, Any], status: int, headers: list) -> list:
        if status != 405:
            return headers
        methods = sorted(
            {
                m
                for route in getattr(scope.get("app"), "routes", [])
                if getattr(route, "methods", None) and route.path_regex.match(scope["path"])
                for m in route.methods
            }
        )
        if not methods:
            return headers
        kept = [(k, v) for k, v in headers if k.lower() != b"allow"]
        return [*kept, (b"allow", ", ".join(methods).encode())]
