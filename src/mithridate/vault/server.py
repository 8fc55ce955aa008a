"""The vault as an HTTPS service: FastAPI on uvicorn, TLS (optionally mutual), bearer tokens.

Every route calls the same :class:`~mithridate.vault.core.Vault` method the local CLI does, so roles,
separation of duties and the audit log apply identically. Uploads stream from the socket into the
chunk store (bounded memory, never a plaintext temporary file); downloads stream chunk by chunk, each
authenticated before it is sent. Errors are JSON ``{"error": "...", "kind": "..."}`` with 400 (bad
input), 401 (no valid token), 403 (denied), 404, 409 (state), 413 (too large), 422 (malformed request)
or 500 (stored bytes failed authentication). Request bodies other than uploads are capped at 64 KiB;
uploads at the vault's ``max_upload_bytes``. The OpenAPI description is served at ``/openapi.json``.

    mithridate serve --vault /srv/vault --cert server.pem --key server.key [--client-ca clients.pem]
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import queue
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mithridate.errors import MithridateError
from mithridate.vault.access import CLIENT
from mithridate.vault.core import Vault
from mithridate.vault.errors import AccessDenied, Conflict, IntegrityError, NotFound, Throttled, TooLarge

API = "/v1"
JSON_BODY_LIMIT = 64 << 10
DRAIN_LIMIT = 64 << 20
DEFAULT_UPLOAD_LIMIT = 1 << 30  # when neither the vault nor `serve --max-upload-mb` sets one
STATUS = [(Throttled, 429, "throttled"), (AccessDenied, 403, "denied"), (NotFound, 404, "not_found"),
          (Conflict, 409, "conflict"), (TooLarge, 413, "too_large"), (IntegrityError, 500, "integrity"),
          (MithridateError, 400, "bad_request")]
UNAUTHENTICATED = "invalid, revoked or missing token"

bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer mth_...`")


def token_of(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
    return None if credentials is None else credentials.credentials


# --- request bodies --------------------------------------------------------------------------------------
class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    roles: list[str] = Field(min_length=1, max_length=5)


class Rejection(BaseModel):
    reason: str = Field(default="", max_length=2000)


class CutRequest(BaseModel):
    exclude_sources: list[str] = Field(min_length=1, max_length=100)
    base: int | None = Field(default=None, ge=1)


class ErrorBody(BaseModel):
    error: str
    kind: str


ERRORS = {code: {"model": ErrorBody, "description": text} for code, text in (
    (400, "Bad input (names, formats, not a dataset)"), (401, "No valid token"), (403, "Denied by role or "
    "separation of duties"), (404, "No such dataset, version, upload or user"), (409, "Clashes with the vault's "
    "state"), (413, "Body over the size limit"), (422, "Malformed request"), (429, "Too many failed "
    "authentications from this client or for this token id (see Retry-After)"),
    (500, "Stored bytes failed authentication"))}


class HoldRequest(BaseModel):
    legal_hold: bool | None = None
    retain_until: str | None = Field(default=None, max_length=40)


# --- streaming an upload from the event loop into a worker thread ------------------------------------------
class _QueueReader(io.RawIOBase):
    """A file-like object a worker thread reads while the event loop feeds it request chunks."""

    def __init__(self, maxsize: int = 16):
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.buffer = b""
        self.finished = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while not self.finished and (n < 0 or len(self.buffer) < n):
            item = self.queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                self.finished = True
                break
            self.buffer += item
        if n < 0:
            n = len(self.buffer)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


async def _feed(request: Request, reader: _QueueReader, worker: asyncio.Future) -> None:
    """Pass the request body to ``reader`` in ~1 MiB pieces; stop early if the worker has failed."""
    loop = asyncio.get_running_loop()
    pending = bytearray()

    async def hand_over(item) -> None:
        while not worker.done():
            try:
                reader.queue.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.005)

    try:
        drained = 0
        async for part in request.stream():
            if worker.done():  # the worker failed (denied, bad input): drain a little so the client hears why
                drained += len(part)
                if drained > DRAIN_LIMIT:
                    return
                continue
            pending += part
            if len(pending) >= 1 << 20:
                await hand_over(bytes(pending))
                pending.clear()
        if pending:
            await hand_over(bytes(pending))
        await hand_over(None)
    except BaseException as exc:  # client gone, body too large: make the worker stop, then re-raise
        await loop.run_in_executor(None, _offer, reader.queue, exc if isinstance(exc, Exception) else
                                   ConnectionAbortedError("request aborted"))
        raise


def _offer(q: queue.Queue, item) -> None:
    with contextlib.suppress(queue.Full):
        q.put(item, timeout=5)


# --- body size limits --------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: refuse bodies over the limit (by Content-Length at once, else while reading)."""

    def __init__(self, app, upload_limit: int | None):
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_upload = scope["method"] == "POST" and scope["path"].endswith("/uploads")
        limit = self.upload_limit if is_upload else JSON_BODY_LIMIT
        if limit is None:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            response = JSONResponse({"error": f"request body over the limit of {limit} bytes", "kind": "too_large"},
                                    status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise TooLarge(f"request body over the limit of {limit} bytes")
            return message

        return await self.app(scope, limited, send)


class SecurityHeaders:
    """Strict-Transport-Security and no-sniff on every response; the caller's address noted (``CLIENT``)."""

    def __init__(self, app, tls: bool):
        self.app = app
        self.tls = tls

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        CLIENT.set(client[0] if client else "unknown")  # who is calling, for per-client throttling

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]
                if self.tls:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def _stream(first: bytes | None, parts: Iterator[bytes]) -> Iterator[bytes]:
    if first is not None:
        yield first
    yield from parts


def _content(body: dict, parts: Iterator[bytes], name: str) -> StreamingResponse:
    first = next(parts, None)  # fail before the status line is sent if the first chunk does not authenticate
    filename = body["file"]["name"]
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")  # HTTP headers are Latin-1
    headers = {"content-length": str(body["file"]["size"]), "x-mithridate-root": body["file"]["root"],
               "x-mithridate-ref": name,
               "content-disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"}
    return StreamingResponse(_stream(first, parts), media_type="application/octet-stream", headers=headers)


def reject_unknown_query(request: Request) -> None:
    """A query parameter the operation does not declare is a mistake (a typo): refuse it, never ignore it."""
    from fastapi.dependencies.utils import get_flat_dependant

    route = request.scope.get("route")
    known = {p.alias for p in get_flat_dependant(route.dependant).query_params} if route is not None else set()
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise MithridateError(f"unknown query parameter {unknown[0][:40]!r}"
                              + (f" (this operation takes {', '.join(sorted(known))})" if known else ""))


def create_app(vault: Vault, tls: bool = True) -> FastAPI:
    """The ASGI application serving ``vault``."""
    api = FastAPI(title="mithridate vault", version="1", docs_url=None, redoc_url=None, responses=ERRORS,
                  dependencies=[Depends(reject_unknown_query)],
                  description="Write-once, encrypted, audited storage for training data. Every call "
                  "needs a bearer token except /v1/info; every call is authorised by role and audited.")

    for cls, status, kind in STATUS:
        def handler(request, exc, status=status, kind=kind):
            code = 401 if isinstance(exc, AccessDenied) and str(exc) == UNAUTHENTICATED else status
            headers = {"www-authenticate": "Bearer"} if code == 401 else None
            if isinstance(exc, Throttled):
                headers = {"retry-after": str(int(exc.retry_after + 0.999))}
            return JSONResponse({"error": str(exc), "kind": kind}, status_code=code, headers=headers)

        api.add_exception_handler(cls, handler)

    def http_error(request, exc: StarletteHTTPException):
        kinds = {400: "bad_request", 401: "denied", 403: "denied", 404: "not_found", 405: "bad_request",
                 413: "too_large"}
        return JSONResponse({"error": str(exc.detail), "kind": kinds.get(exc.status_code, "bad_request")},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    api.add_exception_handler(StarletteHTTPException, http_error)

    def invalid_request(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"[:300], "kind": "bad_request"},
                            status_code=422)

    api.add_exception_handler(RequestValidationError, invalid_request)

    @api.get(f"{API}/info", summary="The vault's id, public signing key and ingest policy (no token needed)")
    def info() -> dict:
        return vault.info()

    @api.get(f"{API}/whoami")
    def whoami(token: str | None = Depends(token_of)) -> dict:
        return vault.whoami(token)

    @api.post(f"{API}/users", status_code=201, summary="Add a user; returns their token (shown once)")
    def add_user(user: NewUser, token: str | None = Depends(token_of)) -> dict:
        return {"token": vault.add_user(token, user.name, user.roles)}

    @api.get(f"{API}/users")
    def users(token: str | None = Depends(token_of)) -> list[dict]:
        return vault.users(token)

    @api.post(f"{API}/users/{{name}}/revoke")
    def revoke(name: str, token: str | None = Depends(token_of)) -> dict:
        vault.revoke_user(token, name)
        return {"revoked": name}

    @api.post(f"{API}/datasets/{{dataset}}/uploads", status_code=201,
              summary="Upload a file (the raw bytes as the body) into quarantine",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put(request: Request, dataset: str, source: str = Query(min_length=1, max_length=255),
                  filename: str = Query(min_length=1, max_length=255), label: str | None = Query(None, max_length=255),
                  token: str | None = Depends(token_of)) -> dict:
        loop = asyncio.get_running_loop()
        reader = _QueueReader()
        context = contextvars.copy_context()  # the caller's address travels to the worker thread
        worker = loop.run_in_executor(None, lambda: context.run(vault.put, token, dataset, reader, filename,
                                                                source, label))
        try:
            await _feed(request, reader, worker)
        except BaseException:
            worker.cancel()
            raise
        return await worker

    @api.get(f"{API}/uploads")
    def list_uploads(status: str | None = Query(None, max_length=16), dataset: str | None = Query(None, max_length=64),
                     token: str | None = Depends(token_of)) -> list[dict]:
        return vault.uploads(token, status=status, dataset=dataset)

    @api.get(f"{API}/uploads/{{upload_id}}")
    def upload_info(upload_id: str, token: str | None = Depends(token_of)) -> dict:
        return vault.upload(token, upload_id)

    @api.get(f"{API}/uploads/{{upload_id}}/content", response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}}}})
    def upload_content(upload_id: str, token: str | None = Depends(token_of)):
        body, parts = vault.read_upload(token, upload_id)
        return _content(body, parts, upload_id)

    @api.post(f"{API}/uploads/{{upload_id}}/approve")
    def approve(upload_id: str, force: bool = False, token: str | None = Depends(token_of)) -> dict:
        return {"version": vault.approve(token, upload_id, force=force)}

    @api.post(f"{API}/uploads/{{upload_id}}/reject")
    def reject(upload_id: str, body: Rejection, token: str | None = Depends(token_of)) -> dict:
        vault.reject(token, upload_id, body.reason)
        return {"rejected": upload_id}

    @api.get(f"{API}/datasets")
    def datasets(token: str | None = Depends(token_of)) -> list[dict]:
        return vault.datasets(token)

    @api.get(f"{API}/datasets/{{dataset}}/versions")
    def versions(dataset: str, token: str | None = Depends(token_of)) -> list[dict]:
        return vault.versions(token, dataset)

    @api.post(f"{API}/datasets/{{dataset}}/cut", status_code=201)
    def cut(dataset: str, body: CutRequest, token: str | None = Depends(token_of)) -> dict:
        return {"version": vault.cut(token, dataset, body.exclude_sources, base=body.base)}

    @api.get(f"{API}/versions/{{ref}}/manifest", summary="The signed manifest, exactly as stored")
    def manifest(ref: str, token: str | None = Depends(token_of)) -> Response:
        return Response(vault.signed_manifest(token, ref), media_type="application/json")

    @api.get(f"{API}/versions/{{ref}}/content", response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}}}})
    def content(ref: str, token: str | None = Depends(token_of)):
        body, parts = vault.read(token, ref)
        return _content(body, parts, f"{body['dataset']}@{body['version']}")

    @api.post(f"{API}/versions/{{ref}}/hold")
    def hold(ref: str, body: HoldRequest, token: str | None = Depends(token_of)) -> dict:
        return vault.hold(token, ref, legal_hold=body.legal_hold, retain_until=body.retain_until)

    @api.get(f"{API}/trace")
    def trace(source: str = Query(min_length=1, max_length=255), token: str | None = Depends(token_of)) -> dict:
        return vault.trace(token, source)

    @api.get(f"{API}/audit")
    def audit_log(after: int = Query(0, ge=0), limit: int | None = Query(None, ge=1, le=100_000),
                  action: str | None = Query(None, max_length=40), token: str | None = Depends(token_of)) -> list[dict]:
        return vault.log(token, after=after, limit=limit, action=action)

    @api.post(f"{API}/verify")
    def verify(token: str | None = Depends(token_of)) -> dict:
        return vault.verify(token)

    @api.get(f"{API}/audit/head", summary="The audit log's signed head, for an auditor to keep (a witness)")
    def audit_head(token: str | None = Depends(token_of)) -> dict:
        return vault.head(token)

    @api.post(f"{API}/keys/rotate", summary="Re-wrap every data key under a new master key file")
    def rotate(token: str | None = Depends(token_of)) -> dict:
        return vault.rotate_key(token)

    from mithridate.vault.registry_routes import add_routes

    add_routes(api, vault)  # the model registry
    return SecurityHeaders(BodyLimit(api, vault.config.max_upload_bytes), tls)  # type: ignore[return-value]


def server_config(app, host: str, port: int, cert: Path | None, key: Path | None, client_ca: Path | None):
    """A uvicorn configuration: TLS when ``cert``/``key`` are given, client certificates with ``client_ca``."""
    import uvicorn

    kw: dict = {}
    if cert is not None:
        kw = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        if client_ca is not None:
            kw.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, ws="none", lifespan="off",
                          h11_max_incomplete_event_size=64 << 10, timeout_keep_alive=5, **kw)


def run(location: str | Path, host: str = "127.0.0.1", port: int = 8443, cert: Path | None = None,
        key: Path | None = None, client_ca: Path | None = None, db_url: str | None = None,
        max_upload_bytes: int | None = None) -> None:
    """Open the vault (upgrading its catalog schema) and serve it until interrupted."""
    import uvicorn

    vault = Vault.open(location, db_url=db_url, migrate=True)
    try:
        vault.serving()  # key rotation from another process is refused while this runs
    except Exception:
        vault.close()
        raise
    if max_upload_bytes is not None:
        vault.config.max_upload_bytes = max_upload_bytes
    elif vault.config.max_upload_bytes is None:  # a service never takes unbounded uploads
        vault.config.max_upload_bytes = DEFAULT_UPLOAD_LIMIT
    try:
        uvicorn.Server(server_config(create_app(vault, tls=cert is not None), host, port, cert, key, client_ca)).run()
    finally:
        vault.close()
