"""``mithridate vault verify``: re-check everything the vault stores and name exactly what was altered.

Checked: the configuration's signature and the master key's check value (when the vault is opened);
every data-key record (it must unwrap); every version and upload manifest (present, hash as the catalog
records, Ed25519 signature, agreeing with its catalog row); every chunk they reference (present,
AES-GCM tag, SHA-256 of the plaintext equal to its name, Merkle roots); the audit chain (sequence,
links, hashes, signatures); and the cross-references between them (every version has its audit entry
and vice versa; each manifest's audit anchor is still in the log).
"""

from __future__ import annotations

from sqlalchemy import select

from mithridate.vault.audit import detail, verify_chain
from mithridate.vault.config import check_config, read_config
from mithridate.vault.crypto import DEK_PREFIX
from mithridate.vault.db import uploads, versions
from mithridate.vault.errors import IntegrityError
from mithridate.vault.store import merkle_root, object_key


def verify_vault(vault) -> dict:
    """``{"ok": bool, "problems": [one line each], "checked": {what: count}}``."""
    problems: list[str] = []
    checked = {"manifests": 0, "chunks": 0, "data_keys": 0, "audit_entries": 0}
    try:
        check_config(read_config(vault.root)[1], vault.signer)
    except IntegrityError as exc:
        problems.append(str(exc))

    for where in vault.backend.list(DEK_PREFIX):
        checked["data_keys"] += 1
        try:
            vault.keyring.data_key(bytes.fromhex(where.removeprefix(DEK_PREFIX)))
        except (IntegrityError, ValueError) as exc:
            problems.append(str(exc))

    if hasattr(vault.backend, "anomalies"):
        problems += vault.backend.anomalies()

    entries = vault.audit.entries()
    checked["audit_entries"] = len(entries)
    problems += verify_chain(entries, vault.config.public_key)
    by_seq = {e["seq"]: e for e in entries}

    with vault.db.engine.connect() as conn:
        version_rows = conn.execute(select(versions).order_by(versions.c.dataset, versions.c.number)).all()
        upload_rows = conn.execute(select(uploads).order_by(uploads.c.created)).all()

    users: dict[str, list[str]] = {}
    documents = [(f"{r.dataset}@{r.number}", r, "version") for r in version_rows]
    documents += [(f"upload {r.id}", r, "upload") for r in upload_rows]
    for label, row, kind in documents:
        try:
            body = vault._document(row.manifest, row.manifest_sha256)
        except IntegrityError as exc:
            problems.append(f"{exc} ({label})")
            continue
        checked["manifests"] += 1
        if kind == "version":
            if (body.get("dataset"), body.get("version"), body.get("rows")) != (row.dataset, row.number, row.rows):
                problems.append(f"catalog: the row for {label} disagrees with its signed manifest {row.manifest}")
            anchor = body.get("after_audit", {})
            seq = anchor.get("seq", 0)
            if seq and (seq not in by_seq or by_seq[seq]["hash"] != anchor.get("hash")):
                problems.append(f"audit log entry {seq}: missing or replaced (the manifest of {label} "
                                "recorded it; log truncated?)")
        elif body.get("upload") != row.id or body.get("rows") != row.rows:
            problems.append(f"catalog: the row for {label} disagrees with its signed manifest {row.manifest}")
        for part in ("file", "provenance"):
            chunks = body[part]["chunks"]
            if merkle_root([c for c, _ in chunks]) != body[part]["root"]:
                problems.append(f"{row.manifest}: {part} chunk list does not match its Merkle root ({label})")
            for chunk, _ in chunks:
                users.setdefault(chunk, []).append(label)

    for chunk, used_by in users.items():
        checked["chunks"] += 1
        try:
            vault.store.read_chunk(chunk)
        except IntegrityError as exc:
            names = sorted(set(used_by))
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{exc} (chunk of {', '.join(names[:3])}{more})"
                            if object_key(chunk) in str(exc) else f"{object_key(chunk)}: {exc} "
                            f"(chunk of {', '.join(names[:3])}{more})")

    logged = {}
    for entry in entries:
        if entry["outcome"] == "ok" and entry["action"] in ("upload.approve", "version.cut"):
            info = detail(entry)
            if "version" in info:
                logged[info["version"]] = (entry["seq"], info.get("manifest_sha256"))
    for row in version_rows:
        ref = f"{row.dataset}@{row.number}"
        if ref not in logged:
            problems.append(f"catalog: version {ref} has no audit entry creating it (inserted behind the log?)")
        elif logged[ref][1] != row.manifest_sha256:
            problems.append(f"catalog: version {ref} is not the manifest audit entry {logged[ref][0]} recorded")
    known = {f"{r.dataset}@{r.number}" for r in version_rows}
    for ref, (seq, _) in logged.items():
        if ref not in known:
            problems.append(f"catalog: version {ref} (audit entry {seq}) is missing (deleted?)")
    return {"ok": not problems, "problems": problems, "checked": checked}
