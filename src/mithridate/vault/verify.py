"""``mithridate vault verify``: re-check everything the vault stores and name exactly what was altered.

Checked: the configuration's signature and the master key's check value (when the vault is opened);
every data-key record (it must unwrap); every version and upload manifest (present, hash as the catalog
records, Ed25519 signature, agreeing with its catalog row); every chunk they reference (present,
AES-GCM tag, SHA-256 of the plaintext equal to its name, Merkle roots); the audit chain (sequence,
links, hashes, signatures); and the cross-references between them (every version has its audit entry
and vice versa; each manifest's audit anchor is still in the log).

Against rollback: every signed document in storage must have its catalog row (a version deleted from the
catalog leaves its manifest behind), every signed head in ``checkpoints/`` must still be in the log, and
a head an auditor kept (``witness``) too. Users, tokens and uploads must carry valid seals and agree with
the audit entries that made and changed them (a row replayed from an older, sealed state does not).
"""

from __future__ import annotations

from sqlalchemy import select

from mithridate.vault.audit import detail, verify_chain
from mithridate.vault.config import check_config, read_config
from mithridate.vault.crypto import DEK_PREFIX
from mithridate.vault.db import models, tokens, uploads, users, versions
from mithridate.vault.errors import IntegrityError
from mithridate.vault.primitives import verify_signature
from mithridate.vault.seals import sealed
from mithridate.vault.store import canonical, merkle_root, object_key, open_document


def check_witness(witness: dict, public_hex: str) -> tuple[int, str]:
    """``(seq, hash)`` of a head an auditor kept (:meth:`Vault.head`), if this vault signed it."""
    try:
        body, key, signature = witness["body"], witness["key"], witness["signature"]
        seq, head = int(body["seq"]), str(body["hash"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("witness: not a signed head (expected the JSON `vault head` prints)") from None
    if key != public_hex or not verify_signature(public_hex, canonical(body), str(signature)):
        raise IntegrityError("witness: not signed by this vault's key (forged, or another vault's head)")
    return seq, head


def verify_vault(vault, witness: dict | None = None) -> dict:
    """``{"ok": bool, "problems": [one line each], "checked": {what: count}, "orphans": [one line each]}``:
    problems are alterations; orphans are signed documents nothing refers to, which a killed writer
    leaves too (reported, not failed)."""
    problems: list[str] = []
    checked = {"manifests": 0, "chunks": 0, "data_keys": 0, "audit_entries": 0, "checkpoints": 0, "rows": 0}
    witnessed = None if witness is None else check_witness(witness, vault.config.public_key)
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

    problems += vault.backend.anomalies()

    entries = vault.audit.entries()
    checked["audit_entries"] = len(entries)
    intact: set[int] = set()
    chain_problems = verify_chain(entries, vault.config.public_key, intact)
    problems += chain_problems
    by_seq = {e["seq"]: e for e in entries}

    with vault.db.engine.connect() as conn:
        version_rows = conn.execute(select(versions).order_by(versions.c.dataset, versions.c.number)).all()
        upload_rows = conn.execute(select(uploads).order_by(uploads.c.created)).all()
        user_rows = conn.execute(select(users).order_by(users.c.id)).all()
        token_rows = conn.execute(select(tokens, users.c.name.label("user"))
                                  .join(users, users.c.id == tokens.c.user_id)).all()

    for key in vault.backend.list("checkpoints"):
        checked["checkpoints"] += 1
        try:
            body = open_document(vault.backend.get(key), vault.config.public_key, key)
        except IntegrityError as exc:
            problems.append(str(exc))
            continue
        seq = body.get("seq", 0)
        if seq and (seq not in by_seq or by_seq[seq]["hash"] != body.get("hash")):
            problems.append(f"audit log entry {seq}: missing or replaced, but the vault signed it as its head "
                            f"(checkpoint {key}): the catalog was rolled back or its log cut")
    if witnessed is not None:
        seq, head = witnessed
        if seq not in by_seq or by_seq[seq]["hash"] != head:
            problems.append(f"audit log: the witnessed head (entry {seq}, {head[:16]}...) is not in the log: it was "
                            "rolled back or rewritten after the witness was taken")

    rows_by_ref = {(r.dataset, r.number): r.manifest for r in version_rows}
    for key in vault.backend.list("committed"):
        try:
            body = open_document(vault.backend.get(key), vault.config.public_key, key)
            dataset, number = body["version"].rsplit("@", 1)
        except (IntegrityError, KeyError, ValueError) as exc:
            problems.append(str(exc) if isinstance(exc, IntegrityError) else f"{key}: unreadable (altered)")
            continue
        if rows_by_ref.get((dataset, int(number))) != body.get("manifest"):
            problems.append(f"{body['version']}: the vault signed its commit (checkpoint {key}, audit entry "
                            f"{body.get('seq')}) but there is no catalog row for that manifest (rolled back, "
                            "deleted or repointed)")

    with vault.db.engine.connect() as conn:
        model_rows = conn.execute(select(models)).all()
    recorded = {r.manifest for r in [*version_rows, *upload_rows, *model_rows]}
    orphans = [f"{key}: signed, but no catalog row and no commit record (a writer killed before it "
               "committed; or a rollback that also deleted the commit record: compare with a witness)"
               for key in [*vault.backend.list("manifests"), *vault.backend.list("uploads"),
                           *vault.backend.list("models")] if key not in recorded]

    # rows are judged only by entries that are themselves intact (an altered entry is reported already)
    trusted = [e for e in entries if e["seq"] in intact]
    problems += check_rows(vault, trusted, user_rows, token_rows, upload_rows, version_rows,
                           log_intact=not chain_problems)
    for key in vault.backend.list("revoked"):
        name = key.rsplit("/", 1)[-1].removesuffix(".json")
        user = next((r for r in user_rows if r.name == name), None)
        live = [t.id for t in token_rows if t.user == name and not t.revoked]
        if user is not None and (user.active or live):
            problems.append(f"catalog: user {name} is let in, but the vault recorded their revocation ({key})")
    checked["rows"] = len(user_rows) + len(token_rows) + len(upload_rows)

    chunk_users: dict[str, list[str]] = {}
    documents = [(f"{r.dataset}@{r.number}", r, "version") for r in version_rows]
    documents += [(f"upload {r.id}", r, "upload") for r in upload_rows]
    documents += [(f"model {r.name}@{r.number}", r, "model") for r in model_rows]
    problems += check_registry(vault, trusted, model_rows)
    for label, row, kind in documents:
        try:
            body = (vault._model_document(row) if kind == "model"
                    else vault._document(row.manifest, row.manifest_sha256))
            if kind == "upload" and body.get("checks_passed", row.checks_passed) != row.checks_passed:
                said = "passed" if row.checks_passed else "failed"
                problems.append(f"catalog: upload {row.id} says its checks {said}, its signed manifest says not")
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
            if ("checked_against" in body and body["checked_against"] != body.get("parent")
                    and not body.get("checks_forced")):
                problems.append(f"{label}: its checks ran against version {body['checked_against']} but it was "
                                f"approved on top of version {body.get('parent')} (its baseline was hidden?)")
        elif kind == "upload" and (body.get("upload") != row.id or body.get("rows") != row.rows):
            problems.append(f"catalog: the row for {label} disagrees with its signed manifest {row.manifest}")
        for part in ("file", "provenance") if kind != "model" else ("file",):
            chunks = body[part]["chunks"]
            if merkle_root([c for c, _ in chunks]) != body[part]["root"]:
                problems.append(f"{row.manifest}: {part} chunk list does not match its Merkle root ({label})")
            for chunk, _ in chunks:
                chunk_users.setdefault(chunk, []).append(label)

    for chunk, used_by in chunk_users.items():
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
    ended = {e["target"] for e in entries if e["action"] == "upload.put"}
    orphans += [f"audit entry {e['seq']}: {e['actor']}'s upload {e['target']} started at {e['time']} and never "
                "ended (killed, or still streaming)" for e in entries
                if e["action"] == "upload.start" and e["target"] not in ended]
    unused = sum(1 for key in vault.backend.list("objects") if key.rsplit("/", 1)[-1] not in chunk_users)
    if unused:
        orphans.append(f"objects/: {unused} encrypted chunk(s) no manifest refers to (uploads refused or killed "
                       "while streaming; unreadable without their manifest)")

    return {"ok": not problems, "problems": problems, "checked": checked, "orphans": orphans}


def check_rows(vault, entries: list[dict], user_rows, token_rows, upload_rows, version_rows=(),
               log_intact: bool = True) -> list[str]:
    """Seals of users, tokens and uploads, and their agreement with the (intact) audit entries that made them
    (rows the log never made, and entries whose rows are gone, only when the log itself is intact:
    otherwise those follow from the log's own problems, reported already)."""
    problems: list[str] = []
    key = vault.config.public_key
    added = {e["target"]: detail(e) for e in entries if e["action"] == "user.add" and e["outcome"] == "ok"}
    revoked = {e["target"]: e["seq"] for e in entries if e["action"] == "user.revoke" and e["outcome"] == "ok"}
    issued = {d.get("token"): name for name, d in added.items()}
    for row in user_rows:
        name = row.name
        if not sealed(key, "users", row._mapping):
            problems.append(f"catalog: the row of user {name} was altered (seal invalid)")
        if name not in added:
            if log_intact:
                problems.append(f"catalog: user {name} has no audit entry creating them (inserted behind the log?)")
        elif sorted(row.roles.split(",")) != sorted(added[name].get("roles", [])):
            problems.append(f"catalog: user {name} has the roles {row.roles}, the audit log gave them "
                            f"{','.join(added[name].get('roles', []))}")
        if name in revoked and row.active:
            problems.append(f"catalog: user {name} is active, but audit entry {revoked[name]} revoked them")
    for row in token_rows:
        if not sealed(key, "tokens", row._mapping):
            problems.append(f"catalog: the row of token {row.id} (user {row.user}) was altered (seal invalid)")
        if issued.get(row.id) != row.user and (log_intact or row.id in issued):
            problems.append(f"catalog: token {row.id} of user {row.user} was not issued to them through the vault")
        if row.user in revoked and not row.revoked:
            problems.append(f"catalog: token {row.id} of user {row.user} is live, but audit entry "
                            f"{revoked[row.user]} revoked the user")
    problems += check_holds(entries, version_rows)
    put = {e["target"].rsplit("/", 1)[-1] for e in entries if e["action"] == "upload.put" and e["outcome"] == "ok"}
    decided = {e["target"]: ("approved" if e["action"] == "upload.approve" else "rejected", e["seq"])
               for e in entries if e["action"] in ("upload.approve", "upload.reject") and e["outcome"] == "ok"}
    for row in upload_rows:
        if not sealed(key, "uploads", row._mapping):
            problems.append(f"catalog: the row of upload {row.id} was altered (seal invalid)")
        if row.id not in put and log_intact:
            problems.append(f"catalog: upload {row.id} has no audit entry creating it (inserted behind the log?)")
        status, seq = decided.get(row.id, ("quarantined", None))
        if row.status != status:
            said = f"audit entry {seq} made it {status}" if seq else "the audit log never decided it"
            problems.append(f"catalog: upload {row.id} is {row.status}, but {said}")
    named = {r.name for r in user_rows}
    problems += [f"catalog: user {name} (audit entry creating them) has no catalog row (deleted)"
                 for name in added if name not in named]
    listed = {r.id for r in upload_rows}
    problems += [f"catalog: upload {u} (audit entry creating it) has no catalog row (deleted)"
                 for u in sorted(put - listed)]
    return problems


def check_registry(vault, entries: list[dict], model_rows) -> list[str]:
    """The model registry: sealed rows (models, aliases, dataset marks, responses), a catalog row for every
    signed model record, and every response and mark the audit log made still in the catalog."""
    from mithridate.vault.db import aliases, dataset_marks, responses

    key = vault.config.public_key
    problems = []
    with vault.db.engine.connect() as conn:
        rows = {kind: conn.execute(select(table)).all()
                for kind, table in (("aliases", aliases), ("dataset_marks", dataset_marks), ("responses", responses))}
    rows["models"] = model_rows
    for kind, found in rows.items():
        for row in found:
            if not sealed(key, kind, row._mapping):
                what = {"models": lambda r: f"model {r.name}@{r.number}",
                        "aliases": lambda r: f"alias {r.model}@{r.alias}",
                        "dataset_marks": lambda r: f"the mark on {r.dataset}@{r.number}",
                        "responses": lambda r: f"response {r.id}"}[kind](row)
                problems.append(f"catalog: the row of {what} was altered (seal invalid)")
    # a record with no row is a deletion when the log says the model was added; else a writer that failed
    # between storing the record and committing (an orphan: reported by the caller, not failed)
    recorded = {r.manifest for r in model_rows}
    added = {e["target"] for e in entries if e["action"] == "model.add" and e["outcome"] == "ok"}
    for key in vault.backend.list("models/"):
        ref = "@".join(key.removeprefix("models/").split(".", 1)[0].rsplit("/", 1))
        if key not in recorded and ref in added:
            problems.append(f"{key}: a signed model record with no catalog row (the model was deleted from the "
                            "catalog)")
    made = {detail(e).get("response"): e["seq"] for e in entries
            if e["action"] in ("dataset.quarantine", "model.rollback", "dataset.derive") and e["outcome"] == "ok"}
    present = {r.id for r in rows["responses"]}
    problems += [f"catalog: response {r} (audit entry {seq}) is missing (deleted?)"
                 for r, seq in made.items() if r and r not in present]
    marked = {f"{r.dataset}@{r.number}" for r in rows["dataset_marks"]}
    for entry in entries:
        if entry["action"] in ("dataset.quarantine", "model.rollback", "dataset.derive") and entry["outcome"] == "ok":
            problems += [f"catalog: {ref} was marked poisoned (audit entry {entry['seq']}) but its mark is gone"
                         for ref in detail(entry).get("marked", []) if ref not in marked]
    return problems


def check_holds(entries: list[dict], version_rows) -> list[str]:
    """Each version's legal hold and retention date are what its last ``version.hold`` entry set."""
    held: dict[str, dict] = {}
    for e in entries:
        if e["action"] == "version.hold" and e["outcome"] == "ok":
            held.setdefault(e["target"], {}).update(detail(e))
    problems = []
    for row in version_rows:
        ref = f"{row.dataset}@{row.number}"
        want = held.get(ref, {})
        if bool(row.legal_hold) != bool(want.get("legal_hold", False)) or row.retain_until != want.get("retain_until"):
            problems.append(f"catalog: {ref} has legal hold {bool(row.legal_hold)} and retention "
                            f"{row.retain_until}, but the audit log set {bool(want.get('legal_hold', False))} and "
                            f"{want.get('retain_until')}")
    return problems
