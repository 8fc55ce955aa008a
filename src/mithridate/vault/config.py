"""A vault's configuration file, ``vault.json``: where its bytes and catalog live, its key, its policy.

The file is signed by the vault's Ed25519 key, whose private half travels in the file wrapped by the
master key: opening a vault loads the master key, unwraps the signing key and checks the signature before
anything else in the file is used (storage, catalog URL, policy), so an edited file is refused
(``vault.json: signature invalid``) without touching what it names. Only the master key's source is
read first, and a key *plugin* runs only if the operator allowed it (``$MITHRIDATE_VAULT_KEY_PLUGINS``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mithridate.vault.errors import IntegrityError, VaultError
from mithridate.vault.primitives import Signer, verify_signature
from mithridate.vault.store import CHUNK_SIZE, canonical

CONFIG = "vault.json"
FORMAT = "mithridate-vault/1"
DEFAULT_CHECKS = "schema,scan"


@dataclass
class Config:
    id: str
    created: str
    public_key: str
    key: dict
    storage: dict = field(default_factory=lambda: {"kind": "local"})
    db: str | None = None
    checks: str = DEFAULT_CHECKS
    auto_approve: bool = False
    chunk_size: int = CHUNK_SIZE
    max_upload_bytes: int | None = None
    retiring_key: dict | None = None
    signing_key: str | None = None  # the Ed25519 key, wrapped by the master key (see crypto.wrap_record)
    format: str = FORMAT

    def to_dict(self) -> dict:
        return asdict(self)


def config_path(root: Path) -> Path:
    return Path(root) / CONFIG


def read_config(root: Path) -> tuple[Config, dict]:
    """The configuration and the signed envelope it came in (checked later, once the key is loaded)."""
    path = config_path(root)
    if not path.exists():
        raise VaultError(f"{root}: not a vault (no {CONFIG}; create one with `mithridate vault init`)")
    try:
        doc = json.loads(path.read_bytes())
        body = doc["config"]
        if body.get("format") != FORMAT:
            raise VaultError(f"{path}: unsupported vault format {body.get('format')!r}")
        return Config(**body), doc
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{CONFIG}: unreadable ({type(exc).__name__}; altered?)") from None


def check_config(doc: dict, signer: Signer) -> None:
    body = doc["config"]
    if body["public_key"] != signer.public_hex:
        raise IntegrityError(f"{CONFIG}: its public key is not the vault's signing key (altered)")
    if not verify_signature(signer.public_hex, canonical(body), str(doc.get("signature", ""))):
        raise IntegrityError(f"{CONFIG}: signature invalid (altered)")


def write_config(root: Path, config: Config, signer: Signer, create: bool = False) -> None:
    """Sign and atomically (re)place ``vault.json``; ``create`` refuses to replace one."""
    body = config.to_dict()
    data = json.dumps({"config": body, "signature": signer.sign(canonical(body))}, indent=2, sort_keys=True)
    path = config_path(root)
    tmp = path.with_name(f".{CONFIG}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(data + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    if create:
        try:
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
    else:
        os.replace(tmp, path)
