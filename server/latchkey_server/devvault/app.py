"""HTTP layer (aiohttp): maps requests to logical operations and renders Vault's envelopes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_parser import HttpRequestParserPy

from latchkey_server.devvault import ids
from latchkey_server.devvault.coerce import parse_bool
from latchkey_server.devvault.core import Core, Outcome
from latchkey_server.devvault.errors import VaultError, multierror
from latchkey_server.devvault.logical import Operation
from latchkey_server.devvault.system import LEADER_BODY, health_body, seal_status_body

log = logging.getLogger("latchkey_server.devvault.access")
errlog = logging.getLogger(__name__)

JSON = "application/json"
MAX_BODY = 32 * 1024 * 1024
_HEALTH_CODES = {
    "activecode": 200,
    "standbycode": 429,
    "drsecondarycode": 472,
    "performancestandbycode": 473,
    "sealedcode": 503,
    "uninitcode": 501,
    "removedcode": 530,
    "haunhealthycode": 474,
}
_METHOD_OPS = {
    "GET": Operation.READ,
    "LIST": Operation.LIST,
    "POST": Operation.UPDATE,
    "PUT": Operation.UPDATE,
    "DELETE": Operation.DELETE,
    "PATCH": Operation.PATCH,
}


def _headers() -> dict[str, str]:
    return {"Content-Type": JSON, "Cache-Control": "no-store"}


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, headers=_headers())


def empty_response(status: int) -> web.Response:
    return web.Response(status=status, headers=_headers())


def error_response(
    status: int, errors: list[str], body: dict[str, Any] | None = None
) -> web.Response:
    return json_response(body if body is not None else {"errors": errors}, status)


def safe_path(path: str) -> str:
    """The request path for logs, with anything token-shaped blanked out."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.startswith(("hvs.", "s.", "hvb.", "b.")) or (
            i > 0 and parts[i - 1] in ("lookup", "renew", "revoke") and "token" in parts
        ):
            parts[i] = "<redacted>"
    return "/".join(parts)


@web.middleware
async def access_log(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        elapsed = (time.monotonic() - started) * 1000
        log.info("%s %s %d %.1fms", request.method, safe_path(request.path), status, elapsed)


def use_token_method_parser() -> None:
    """Let aiohttp accept Vault's custom ``LIST`` verb.

    aiohttp's C parser (llhttp) only knows the registered HTTP methods and rejects ``LIST``
    with 400; its pure-Python parser accepts any RFC 9110 token. This swaps the parser the
    server-side protocol uses, for every aiohttp server in this process (vault-dev runs in
    its own process, so that is only itself).
    """
    setattr(web_protocol, "HttpRequestParser", HttpRequestParserPy)  # noqa: B010


class VaultHTTP:
    """The aiohttp handler bound to one Core."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def application(self) -> web.Application:
        use_token_method_parser()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[access_log])
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except VaultError as exc:
            return error_response(exc.status, exc.errors, exc.body)
        except Exception as exc:
            errlog.error("request failed with %s", type(exc).__name__, exc_info=exc)
            return error_response(500, [multierror("internal error")])

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/v1/"):
            return error_response(404, [])
        logical = path[len("/v1/") :]
        while "//" in logical:
            logical = logical.replace("//", "/")
        logical = logical.lstrip("/")
        bare = self._bare(request, logical.rstrip("/"))
        if bare is not None:
            return bare
        method = request.method.upper()
        operation = _METHOD_OPS.get(method)
        if operation is None:
            return error_response(405, [])
        if operation is Operation.PATCH and request.content_type != "application/merge-patch+json":
            return error_response(415, [])
        data: dict[str, Any] = {}
        if method in ("GET", "DELETE", "LIST"):
            for key in request.query:
                if key != "list":
                    data[key] = request.query.get(key)
            if "list" in request.query:
                flag = parse_bool(request.query.get("list", ""))
                if flag is None:
                    return error_response(400, [])
                if flag and method == "GET":
                    operation = Operation.LIST
        if method in ("POST", "PUT", "PATCH") or (method == "DELETE" and request.can_read_body):
            body = await self._body(request)
            data.update({k: v for k, v in body.items() if v is not None})
        if operation is Operation.LIST and not logical.endswith("/"):
            logical += "/"
        token = request.headers.get("X-Vault-Token", "")
        if not token:
            auth = request.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                token = auth[len("bearer ") :].strip()
        outcome = await self.core.handle(operation, logical, data, token or None)
        return self._render(outcome)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise VaultError(400, [f"failed to parse JSON input: {exc}"]) from None
        if not isinstance(parsed, dict):
            raise VaultError(400, ["failed to parse JSON input: expected a JSON object"])
        return parsed

    def _bare(self, request: web.Request, logical: str) -> web.StreamResponse | None:
        method = request.method.upper()
        if logical == "sys/health":
            if method not in ("GET", "HEAD"):
                return error_response(405, [])
            status = 200
            for key, default in _HEALTH_CODES.items():
                raw = request.query.get(key)
                if raw is None:
                    continue
                try:
                    code = int(raw)
                except ValueError:
                    return error_response(400, [f"unable to parse {key} value"])
                if key == "activecode":
                    status = code
                del default
            if method == "HEAD":
                return empty_response(status)
            return json_response(health_body(self.core), status)
        bodies: dict[str, Callable[[], dict[str, Any]]] = {
            "sys/seal-status": lambda: seal_status_body(self.core),
            "sys/init": lambda: {"initialized": True},
            "sys/leader": lambda: dict(LEADER_BODY),
        }
        if logical in bodies:
            if method != "GET":
                return error_response(405, [])
            return json_response(bodies[logical]())
        return None

    @staticmethod
    def _render(outcome: Outcome) -> web.StreamResponse:
        resp = outcome.response
        if resp is None:
            return empty_response(204)
        if resp.status == 202:
            return empty_response(202)
        has_body = (
            resp.data is not None
            or resp.auth is not None
            or bool(resp.warnings)
            or bool(resp.lease_id)
            or resp.status is not None
        )
        if not has_body:
            return empty_response(204)
        body: dict[str, Any] = {
            "request_id": ids.new_uuid(),
            "lease_id": resp.lease_id,
            "renewable": resp.renewable,
            "lease_duration": resp.lease_duration,
            "data": resp.data,
            "wrap_info": None,
            "warnings": list(resp.warnings) or None,
            "auth": resp.auth,
            "mount_type": outcome.mount_type,
        }
        if resp.inject_top_level and resp.data:
            for key, value in resp.data.items():
                body.setdefault(key, value)
        return json_response(body, resp.status or 200)
