"""The model registry on the vault's HTTPS service: the routes :class:`~mithridate.vault.client.RemoteVault`
calls, each the same :class:`~mithridate.vault.models.ModelOps` method the local CLI calls (errors, limits
and authentication as in :mod:`.server`). Weights upload as the body of ``POST /v1/models/{name}/uploads``
(the upload size limit applies) and download with their signed record, which the client checks."""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints

from mithridate.errors import MithridateError
from mithridate.vault.server import API, _content, _feed, _QueueReader, token_of

Ref = Annotated[str, StringConstraints(min_length=3, max_length=80)]  # DATASET@N or MODEL@N


class Promotion(BaseModel):
    reason: str = Field("", max_length=2000)


class AliasMove(BaseModel):
    number: int = Field(ge=1)


class Derivation(BaseModel):
    child: str = Field(min_length=3, max_length=80)
    parents: list[Ref] = Field(min_length=1, max_length=1000)


class Quarantine(BaseModel):
    refs: list[Ref] | None = Field(None, max_length=1000)
    source: str | None = Field(None, max_length=255)
    reason: str = Field("", max_length=2000)
    dry_run: bool = False


class Rollback(BaseModel):
    model: str = Field(min_length=3, max_length=80)
    reason: str = Field("", max_length=2000)
    dry_run: bool = False


def add_routes(api: FastAPI, vault) -> None:
    @api.post(f"{API}/models/{{name}}/uploads", status_code=201,
              summary="Register a model: its weights (safetensors, ONNX or JSON) as the body",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def add_model(request: Request, name: str, filename: str = Query(min_length=1, max_length=255),
                        dataset: list[Ref] = Query(min_length=1, max_length=50),
                        parent: str | None = Query(None, max_length=80),
                        metrics: str | None = Query(None, max_length=4000),
                        token: str | None = Depends(token_of)) -> dict:
        try:
            scores = None if metrics is None else json.loads(metrics)
        except ValueError:
            raise MithridateError("metrics: not JSON") from None
        loop = asyncio.get_running_loop()
        reader = _QueueReader()
        context = contextvars.copy_context()
        worker = loop.run_in_executor(None, lambda: context.run(vault.add_model, token, name, reader, filename,
                                                                dataset, parent, scores))
        try:
            await _feed(request, reader, worker)
        except BaseException:
            worker.cancel()
            raise
        return {"model": await worker}

    @api.get(f"{API}/models")
    def models(name: str | None = Query(None, max_length=64), token: str | None = Depends(token_of)) -> list[dict]:
        return vault.models(token, name)

    @api.get(f"{API}/models/{{ref}}/record", summary="The model's signed record, exactly as stored")
    def record(ref: str, token: str | None = Depends(token_of)) -> Response:
        return Response(vault.signed_model(token, ref), media_type="application/json")

    @api.get(f"{API}/models/{{ref}}/content", response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}}}})
    def content(ref: str, token: str | None = Depends(token_of)):
        body, parts = vault.read_model(token, ref)
        return _content(body, parts, f"{body['model']}@{body['number']}")

    @api.post(f"{API}/models/{{ref}}/promote")
    def promote(ref: str, body: Promotion, token: str | None = Depends(token_of)) -> dict:
        return vault.promote(token, ref, body.reason)

    @api.put(f"{API}/aliases/{{model}}/{{alias}}")
    def set_alias(model: str, alias: str, body: AliasMove, token: str | None = Depends(token_of)) -> dict:
        return vault.set_alias(token, model, alias, body.number)

    @api.get(f"{API}/aliases")
    def aliases(model: str | None = Query(None, max_length=64), token: str | None = Depends(token_of)) -> list[dict]:
        return vault.aliases(token, model)

    @api.get(f"{API}/resolve/{{ref}}")
    def resolve(ref: str, token: str | None = Depends(token_of)) -> dict:
        return vault.resolve(token, ref)

    @api.post(f"{API}/derivations", status_code=201)
    def derive(body: Derivation, token: str | None = Depends(token_of)) -> dict:
        return vault.derive(token, body.child, body.parents)

    @api.get(f"{API}/lineage/{{ref}}")
    def lineage(ref: str, token: str | None = Depends(token_of)) -> dict:
        return vault.lineage(token, ref)

    @api.post(f"{API}/responses/quarantine-dataset")
    def quarantine_dataset(body: Quarantine, token: str | None = Depends(token_of)) -> dict:
        return vault.quarantine_dataset(token, body.refs, source=body.source, reason=body.reason,
                                        dry_run=body.dry_run)

    @api.post(f"{API}/responses/rollback")
    def rollback(body: Rollback, token: str | None = Depends(token_of)) -> dict:
        return vault.rollback(token, body.model, reason=body.reason, dry_run=body.dry_run)

    @api.post(f"{API}/responses/{{response_id}}/undo")
    def undo(response_id: str, token: str | None = Depends(token_of)) -> dict:
        return vault.undo(token, response_id)

    @api.get(f"{API}/responses")
    def responses(token: str | None = Depends(token_of)) -> list[dict]:
        return vault.responses(token)
