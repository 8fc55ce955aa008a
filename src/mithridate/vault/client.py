"""A vault service, driven like a local vault: :class:`RemoteVault` has :class:`Vault`'s methods.

The client checks what it gets: version manifests carry the vault's Ed25519 signature (checked against
the public key the service announces, or against one you pin with ``public_key`` /
``$MITHRIDATE_VAULT_PUBLIC_KEY``), and every downloaded chunk's SHA-256 against the manifest, so a
corrupted transfer or a tampered server response raises :class:`IntegrityError` instead of writing a
wrong file.

>>> remote = RemoteVault("https://vault.example:8443", ca="ca.pem")   # doctest: +SKIP
>>> body, parts = remote.read(token, "train@3")                         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import httpx

from mithridate.vault.errors import AccessDenied, Conflict, IntegrityError, NotFound, Throttled, TooLarge, VaultError
from mithridate.vault.primitives import same
from mithridate.vault.store import Blob, merkle_root, open_document

KINDS = {"denied": AccessDenied, "not_found": NotFound, "conflict": Conflict, "too_large": TooLarge,
         "integrity": IntegrityError}
UPLOAD_PART = 1 << 20


def _segment(value: str) -> str:
    return quote(value, safe="@")


class RemoteVault:
    def __init__(self, url: str, ca: str | Path | None = None, client_cert: str | Path | None = None,
                 client_key: str | Path | None = None, public_key: str | None = None, timeout: float = 300.0):
        self.url = url.rstrip("/")
        verify: ssl.SSLContext | bool = True
        if self.url.startswith("https://"):
            verify = ssl.create_default_context(cafile=str(ca) if ca else None)
            if client_cert:
                verify.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
        self.http = httpx.Client(base_url=self.url + "/v1", verify=verify, timeout=timeout)
        self._public_key = public_key or os.environ.get("MITHRIDATE_VAULT_PUBLIC_KEY")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RemoteVault:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------------------
    @staticmethod
    def _raise(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            payload = response.json()
            message, kind = payload.get("error") or str(payload.get("detail")), payload.get("kind")
        except ValueError:
            message, kind = response.text[:200] or response.reason_phrase, None
        if response.status_code == 401:
            raise AccessDenied(message)
        if response.status_code == 429:
            raise Throttled(message, float(response.headers.get("retry-after", 60)))
        raise KINDS.get(kind, VaultError)(f"{message}" if kind else f"HTTP {response.status_code}: {message}")

    @staticmethod
    def _bearer(token: str | None) -> dict[str, str]:
        """The authorization header; a token is never echoed, even in an error."""
        token = (token or "").strip()
        if not token:
            return {}
        if not token.isprintable() or not token.isascii():
            raise VaultError("the token holds spaces or control characters (read from a file with Windows line "
                             "ends?); give the token alone")
        return {"authorization": f"Bearer {token}"}

    def _call(self, method: str, path: str, token: str | None, **kw) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **self._bearer(token)}
        try:
            response = self.http.request(method, path, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise VaultError(f"cannot reach the vault at {self.url}: {exc}") from None
        self._raise(response)
        return response

    def _json(self, method: str, path: str, token: str | None, **kw):
        return self._call(method, path, token, **kw).json()

    def _stream(self, path: str, token: str | None, blob: Blob) -> Iterator[bytes]:
        """Start the download now (so a denial raises at once); the chunks come as the result is iterated."""
        if not same(merkle_root([c for c, _ in blob.chunks]), blob.root):
            raise IntegrityError("the manifest's chunk list does not match its Merkle root")
        headers = self._bearer(token)
        try:
            response = self.http.send(self.http.build_request("GET", path, headers=headers), stream=True)
        except httpx.TransportError as exc:
            raise VaultError(f"cannot reach the vault at {self.url}: {exc}") from None
        if not response.is_success:
            response.read()
            response.close()
            self._raise(response)
        return self._chunks(response, blob)

    @staticmethod
    def _chunks(response: httpx.Response, blob: Blob) -> Iterator[bytes]:
        """Re-cut the body into the manifest's chunks and check each one's hash before yielding it."""
        chunks = iter(blob.chunks)
        expected = next(chunks, None)
        buffer = bytearray()
        try:
            for part in response.iter_bytes(UPLOAD_PART):
                buffer += part
                while expected is not None and len(buffer) >= expected[1]:
                    piece = bytes(buffer[:expected[1]])
                    del buffer[:expected[1]]
                    if hashlib.sha256(piece).hexdigest() != expected[0]:
                        raise IntegrityError(f"downloaded chunk {expected[0][:16]}... does not match its hash")
                    yield piece
                    expected = next(chunks, None)
        except httpx.TransportError as exc:
            raise IntegrityError(f"download interrupted: {exc}") from None
        finally:
            response.close()
        if expected is not None or buffer:
            raise IntegrityError("download ended early or ran long: size differs from the manifest")

    def public_key(self) -> str:
        if self._public_key is None:
            self._public_key = self.info()["public_key"]
        return self._public_key

    # --- the Vault interface ------------------------------------------------------------------------
    def info(self) -> dict:
        return self._json("GET", "/info", None)

    def whoami(self, token: str) -> dict:
        return self._json("GET", "/whoami", token)

    def add_user(self, token: str, name: str, roles: list[str]) -> str:
        return self._json("POST", "/users", token, json={"name": name, "roles": list(roles)})["token"]

    def users(self, token: str) -> list[dict]:
        return self._json("GET", "/users", token)

    def revoke_user(self, token: str, name: str) -> None:
        self._call("POST", f"/users/{_segment(name)}/revoke", token)

    def put(self, token: str, dataset: str, stream: BinaryIO, filename: str, source: str,
            label: str | None = None) -> dict:
        params = {"source": source, "filename": filename, **({"label": label} if label else {})}
        headers = {"content-type": "application/octet-stream"}
        try:
            size = os.fstat(stream.fileno()).st_size - stream.tell()
            headers["content-length"] = str(size)
        except (AttributeError, OSError):  # not a regular file: sent chunked
            pass

        def body() -> Iterator[bytes]:
            while part := stream.read(UPLOAD_PART):
                yield part

        return self._json("POST", f"/datasets/{_segment(dataset)}/uploads", token, params=params,
                          content=body(), headers=headers)

    def uploads(self, token: str, status: str | None = None, dataset: str | None = None) -> list[dict]:
        params = {k: v for k, v in (("status", status), ("dataset", dataset)) if v}
        return self._json("GET", "/uploads", token, params=params)

    def upload(self, token: str, upload_id: str) -> dict:
        return self._json("GET", f"/uploads/{_segment(upload_id)}", token)

    def read_upload(self, token: str, upload_id: str) -> tuple[dict, Iterator[bytes]]:
        body = self.upload(token, upload_id)
        return body, self._stream(f"/uploads/{_segment(upload_id)}/content", token, Blob.from_dict(body["file"]))

    def approve(self, token: str, upload_id: str, force: bool = False) -> str:
        return self._json("POST", f"/uploads/{_segment(upload_id)}/approve", token,
                          params={"force": "true" if force else "false"})["version"]

    def reject(self, token: str, upload_id: str, reason: str = "") -> None:
        self._call("POST", f"/uploads/{_segment(upload_id)}/reject", token, json={"reason": reason})

    def datasets(self, token: str) -> list[dict]:
        return self._json("GET", "/datasets", token)

    def versions(self, token: str, dataset: str) -> list[dict]:
        return self._json("GET", f"/datasets/{_segment(dataset)}/versions", token)

    def manifest(self, token: str, ref: str) -> dict:
        """The signed manifest of ``ref``, checked to be signed by the vault and to be ``ref``'s."""
        from mithridate.vault.core import parse_ref

        dataset, number = parse_ref(ref)
        raw = self._call("GET", f"/versions/{_segment(ref)}/manifest", token).content
        body = open_document(raw, self.public_key(), f"manifest of {ref}")
        if body.get("dataset") != dataset or (number is not None and body.get("version") != number):
            raise IntegrityError(f"the service answered {ref} with the manifest of {body.get('dataset')}@"
                                 f"{body.get('version')} (validly signed, but not what was asked)")
        return body

    def read(self, token: str, ref: str) -> tuple[dict, Iterator[bytes]]:
        body = self.manifest(token, ref)
        exact = f"{body['dataset']}@{body['version']}"
        return body, self._stream(f"/versions/{_segment(exact)}/content", token, Blob.from_dict(body["file"]))

    def trace(self, token: str, source: str) -> dict:
        return self._json("GET", "/trace", token, params={"source": source})

    def cut(self, token: str, dataset: str, exclude_sources: list[str], base: int | None = None) -> str:
        return self._json("POST", f"/datasets/{_segment(dataset)}/cut", token,
                          json={"exclude_sources": list(exclude_sources), "base": base})["version"]

    def log(self, token: str, after: int = 0, limit: int | None = None, action: str | None = None) -> list[dict]:
        params = {"after": after, **({"limit": limit} if limit else {}), **({"action": action} if action else {})}
        return self._json("GET", "/audit", token, params=params)

    def head(self, token: str) -> dict:
        """The audit log's signed head (see :meth:`Vault.head`), checked against the vault's key."""
        from mithridate.vault.verify import check_witness

        head = self._json("GET", "/audit/head", token)
        check_witness(head, self.public_key())
        return head

    def verify(self, token: str, witness: dict | None = None) -> dict:
        """The service's own verification, plus, with ``witness``, a check made here: the log entry the
        witness names must still carry its hash under the vault's signature (a service that rolled its
        log back cannot produce it)."""
        from mithridate.vault.audit import entry_hash
        from mithridate.vault.primitives import verify_signature
        from mithridate.vault.verify import check_witness

        witnessed = None if witness is None else check_witness(witness, self.public_key())
        report = self._json("POST", "/verify", token)
        if witnessed is not None:
            seq, head = witnessed
            found = self.log(token, after=seq - 1, limit=1)
            entry = found[0] if found else None
            if (entry is None or entry["seq"] != seq or not same(entry_hash(entry), head)
                    or not verify_signature(self.public_key(), bytes.fromhex(head), entry["signature"])):
                report["problems"].append(f"audit log: the witnessed head (entry {seq}, {head[:16]}...) is not in "
                                          "the log: it was rolled back or rewritten after the witness was taken")
                report["ok"] = False
        return report

    def rotate_key(self, token: str, new_key: dict | None = None) -> dict:
        if new_key is not None:
            raise VaultError("over the service, rotation makes a new key file; other key sources rotate locally")
        return self._json("POST", "/keys/rotate", token)

    def hold(self, token: str, ref: str, legal_hold: bool | None = None, retain_until: str | None = None) -> dict:
        return self._json("POST", f"/versions/{_segment(ref)}/hold", token,
                          json={"legal_hold": legal_hold, "retain_until": retain_until})

    # --- the model registry ---------------------------------------------------------------------------
    def add_model(self, token: str, name: str, stream: BinaryIO, filename: str, datasets: list[str],
                  parent: str | None = None, metrics: dict | None = None) -> str:
        params: dict = {"filename": filename, "dataset": list(datasets)}
        if parent:
            params["parent"] = parent
        if metrics:
            params["metrics"] = json.dumps(metrics)

        def body() -> Iterator[bytes]:
            while part := stream.read(UPLOAD_PART):
                yield part

        return self._json("POST", f"/models/{_segment(name)}/uploads", token, params=params, content=body(),
                          headers={"content-type": "application/octet-stream"})["model"]

    def models(self, token: str, name: str | None = None) -> list[dict]:
        return self._json("GET", "/models", token, params={"name": name} if name else None)

    def read_model(self, token: str, ref: str) -> tuple[dict, Iterator[bytes]]:
        """The model's record, checked to be signed by the vault and to be ``ref``'s, and its weights, each
        chunk checked against the record."""
        raw = self._call("GET", f"/models/{_segment(ref)}/record", token).content
        body = open_document(raw, self.public_key(), f"record of model {ref}")
        if f"{body.get('model')}@{body.get('number')}" != ref:
            raise IntegrityError(f"the service answered {ref} with the record of {body.get('model')}@"
                                 f"{body.get('number')} (validly signed, but not what was asked)")
        return body, self._stream(f"/models/{_segment(ref)}/content", token, Blob.from_dict(body["file"]))

    def promote(self, token: str, ref: str, reason: str = "") -> dict:
        return self._json("POST", f"/models/{_segment(ref)}/promote", token, json={"reason": reason})

    def set_alias(self, token: str, model: str, alias: str, number: int) -> dict:
        return self._json("PUT", f"/aliases/{_segment(model)}/{_segment(alias)}", token, json={"number": number})

    def aliases(self, token: str, model: str | None = None) -> list[dict]:
        return self._json("GET", "/aliases", token, params={"model": model} if model else None)

    def resolve(self, token: str, ref: str) -> dict:
        return self._json("GET", f"/resolve/{_segment(ref)}", token)

    def derive(self, token: str, child: str, parents: list[str]) -> dict:
        return self._json("POST", "/derivations", token, json={"child": child, "parents": list(parents)})

    def lineage(self, token: str, ref: str) -> dict:
        return self._json("GET", f"/lineage/{_segment(ref)}", token)

    def quarantine_dataset(self, token: str, refs: list[str] | None = None, source: str | None = None,
                           reason: str = "", dry_run: bool = False) -> dict:
        return self._json("POST", "/responses/quarantine-dataset", token,
                          json={"refs": refs, "source": source, "reason": reason, "dry_run": dry_run})

    def rollback(self, token: str, ref: str, reason: str = "", dry_run: bool = False) -> dict:
        return self._json("POST", "/responses/rollback", token, json={"model": ref, "reason": reason,
                                                                     "dry_run": dry_run})

    def undo(self, token: str, response_id: str) -> dict:
        return self._json("POST", f"/responses/{_segment(response_id)}/undo", token)

    def responses(self, token: str) -> list[dict]:
        return self._json("GET", "/responses", token)
