"""Who is calling: tokens, sealed user and token rows, throttling, roles; users.

One part of :class:`~mithridate.vault.core.Vault`, which inherits every part.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from mithridate.vault.access import (
    CLIENT,
    RESERVED,
    Principal,
    allowed_roles,
    check_name,
    check_roles,
    new_token,
    parse_token,
    token_matches,
)
from mithridate.vault.audit import now
from mithridate.vault.db import audit, metadata, tokens, uploads, users
from mithridate.vault.errors import AccessDenied, Conflict, IntegrityError, NotFound, Throttled, VaultError
from mithridate.vault.primitives import digest, same
from mithridate.vault.refs import (
    REVOKED,
)
from mithridate.vault.seals import seal, sealed
from mithridate.vault.store import sign_document


class IdentityOps:
    """Who is calling: tokens, sealed user and token rows, throttling, roles; users."""

    def _principal(self, token: str | None) -> Principal | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        with self.db.engine.connect() as conn:
            found = self._identity(conn, token_id)
        if found is None:
            return None
        user, token = found
        problem = self._identity_problem(user, token)
        if problem:
            self.audit.record("anonymous", "auth", token_id, "denied", {"reason": problem})
            raise IntegrityError(f"{problem}; run `mithridate vault verify`")
        if token["revoked"] or not user["active"]:
            return None
        # Argon2 is slow on purpose; a token this process already verified against this very hash is
        # recognised by its SHA-256 (revocation still applies: the catalog row is read every time)
        seen = self._verified.get((token_id, token["hash"]))
        if seen is None or not same(seen, digest(secret.encode())):
            if not token_matches(token["hash"], secret):
                return None
            self._verified[(token_id, token["hash"])] = digest(secret.encode())
        return Principal(user["name"], frozenset(user["roles"].split(",")))

    def _identity(self, conn, token_id: str) -> tuple[dict, dict] | None:
        """The user and token rows of ``token_id`` (the token's ``user`` is its owner's name), or None."""
        query = (select(users, tokens.c.id.label("token_id"), tokens.c.hash, tokens.c.created.label("token_created"),
                        tokens.c.revoked, tokens.c.seal.label("token_seal"))
                 .join(tokens, users.c.id == tokens.c.user_id).where(tokens.c.id == token_id))
        row = conn.execute(query).first()
        if row is None:
            return None
        r = row._mapping
        user = {k: r[k] for k in ("name", "roles", "created", "created_by", "active", "seal")}
        token = {"id": r["token_id"], "user": r["name"], "hash": r["hash"], "created": r["token_created"],
                 "revoked": r["revoked"], "seal": r["token_seal"]}
        revoked_at = conn.execute(select(audit.c.seq).where(
            audit.c.action == "user.revoke", audit.c.target == r["name"], audit.c.outcome == "ok").limit(1)).scalar()
        revoked_at = f"audit entry {revoked_at}" if revoked_at else None
        if not revoked_at and (r["name"] in self._revoked or self.backend.exists(f"{REVOKED}{r['name']}.json")):
            self._revoked.add(r["name"])
            revoked_at = f"{REVOKED}{r['name']}.json"
        user["revoked_at"] = revoked_at
        return user, token

    def _identity_problem(self, user: dict, token: dict) -> str:
        """Why these rows cannot be trusted (edited behind the vault's back), or ''."""
        if not sealed(self.config.public_key, "users", user):
            return f"catalog: the row of user {user['name']} was altered (seal invalid)"
        if not sealed(self.config.public_key, "tokens", token):
            return f"catalog: the row of token {token['id']} (user {user['name']}) was altered (seal invalid)"
        if user["revoked_at"] and (user["active"] or not token["revoked"]):
            return (f"catalog: user {user['name']} was revoked ({user['revoked_at']}) but the "
                    "catalog lets them in (rows replayed)")
        return ""

    def _seal_rows(self, conn, kind: str, where) -> None:
        """(Re)seal the ``kind`` rows matching ``where`` after the vault itself wrote them."""
        table = metadata.tables[kind]
        if kind == "tokens":
            query = (select(tokens, users.c.name.label("user")).join(users, users.c.id == tokens.c.user_id)
                     .where(where))
        else:
            query = select(table).where(where)
        for row in conn.execute(query).all():
            key = [column == row._mapping[column.name] for column in table.primary_key.columns]
            conn.execute(update(table).where(*key).values(seal=seal(self.signer, kind, row._mapping)))

    def _seal_all(self) -> None:
        """Seal every row of a catalog migrated from before seals existed (``vault migrate``)."""
        with self.db.begin() as conn:
            for kind, table in (("users", users), ("tokens", tokens), ("uploads", uploads)):
                self._seal_rows(conn, kind, table.c.seal.is_(None))
            self.audit.append(conn, "system", "catalog.seal", "", "ok")

    def _deny(self, actor: str, action: str, target: str, reason: str, detail: dict | None = None) -> AccessDenied:
        self.audit.record(actor, action, target, "denied", {"reason": reason, **(detail or {})})
        return AccessDenied(reason)

    def _authenticate(self, token: str | None, action: str, target: str) -> Principal:
        """The token's principal. Failures are throttled per client and per token id: past the limit a
        request is refused at once, and the flood is logged as counted entries (after 1, 10, 100, ...
        refusals), never a row each."""
        parsed = parse_token(token)
        client = f"client {CLIENT.get()}"
        keys = [client] + ([f"token {parsed[0]}"] if parsed else [])
        hit = self.throttle.blocked([client])  # a flooding client is refused outright
        if hit is not None:
            raise self._throttled(*hit)
        # a token id under attack from many addresses still lets its owner in: only failures are refused
        hit = self.throttle.blocked(keys[1:])
        principal = self._principal(token)
        if principal is None:
            self.throttle.failed(keys)
            if hit is not None:
                raise self._throttled(*hit)
            raise self._deny("anonymous", action, target, "invalid, revoked or missing token",
                             {"token": parsed[0]} if parsed else None)
        return principal

    def _throttled(self, key: str, wait: float) -> Throttled:
        """A refusal for a throttled key, logged as a count after 1, 10, 100, ... of them."""
        if len(self._refused) > 100_000 and key not in self._refused:  # a spray of addresses: stay bounded
            self._refused.clear()
        refused = self._refused[key] = self._refused.get(key, 0) + 1
        if refused == 10 ** (len(str(refused)) - 1):
            self.audit.record("anonymous", "auth.throttled", key, "denied",
                              {"refused": refused, "limit": self.throttle.limit, "window_s": self.throttle.window})
        return Throttled(f"too many failed authentications ({key}); retry in {wait:.0f} s", wait)

    def authorize(self, token: str | None, action: str, target: str = "") -> Principal:
        """The caller, if their role allows ``action``; otherwise an audited :class:`AccessDenied`."""
        principal = self._authenticate(token, action, target)
        if not principal.may(action):
            needs = " or ".join(sorted(allowed_roles(action)))
            raise self._deny(principal.name, action, target,
                             f"{principal.name} ({', '.join(sorted(principal.roles))}) may not {action}: "
                             f"needs the {needs} role")
        return principal

    def whoami(self, token: str) -> dict:
        principal = self._authenticate(token, "whoami", "")
        return {"name": principal.name, "roles": sorted(principal.roles)}

    def _insert_user(self, conn, name: str, roles: frozenset[str], by: str, token_id: str, token_hash: str) -> None:
        if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
            raise Conflict(f"user {name!r} exists")
        user_id = conn.execute(users.insert().values(name=name, roles=",".join(sorted(roles)), created=now(),
                                                     created_by=by, active=True)).inserted_primary_key[0]
        conn.execute(tokens.insert().values(id=token_id, user_id=user_id, hash=token_hash, created=now(),
                                            revoked=False))
        self._seal_rows(conn, "users", users.c.id == user_id)
        self._seal_rows(conn, "tokens", tokens.c.user_id == user_id)

    def add_user(self, token: str, name: str, roles: list[str]) -> str:
        """Create a user with ``roles``; returns their API token (stored only as a hash: shown once)."""
        principal = self.authorize(token, "user.add", name)
        check_name(name, "user name")
        if name in RESERVED:
            raise VaultError(f"{name!r} is reserved")
        role_set = check_roles(list(roles))
        new, token_id, token_hash = new_token()
        with self.db.begin() as conn:
            self._insert_user(conn, name, role_set, principal.name, token_id, token_hash)
            self.audit.append(conn, principal.name, "user.add", name, "ok",
                              {"roles": sorted(role_set), "token": token_id})
        self._checkpoint()
        return new

    def users(self, token: str) -> list[dict]:
        self.authorize(token, "user.list")
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(users.c.name, users.c.roles, users.c.created, users.c.created_by,
                                       users.c.active).order_by(users.c.id))
            return [{**dict(r._mapping), "roles": r.roles.split(",")} for r in rows]

    def revoke_user(self, token: str, name: str) -> None:
        """Deactivate a user and revoke all their tokens (the last active admin cannot be revoked)."""
        principal = self.authorize(token, "user.revoke", name)
        with self.db.begin() as conn:
            row = conn.execute(select(users.c.id, users.c.roles, users.c.active).where(users.c.name == name)).first()
            if row is None:
                raise NotFound(f"no user {name!r}")
            if "admin" in row.roles.split(","):
                admins = conn.execute(select(func.count()).select_from(users).where(
                    users.c.active.is_(True), users.c.roles.like("%admin%"))).scalar()
                if admins <= 1:
                    raise Conflict("cannot revoke the last active admin")
            conn.execute(update(users).where(users.c.id == row.id).values(active=False))
            conn.execute(update(tokens).where(tokens.c.user_id == row.id).values(revoked=True))
            self._seal_rows(conn, "users", users.c.id == row.id)
            self._seal_rows(conn, "tokens", tokens.c.user_id == row.id)
            self.audit.append(conn, principal.name, "user.revoke", name, "ok")
        # outside the catalog, write-once: a catalog row replayed from before the revocation cannot undo it
        self.backend.put_once(f"{REVOKED}{name}.json", sign_document(
            {"format": "mithridate-vault/revocation/1", "user": name, "by": principal.name, "time": now()},
            self.signer))
        self._revoked.add(name)
        self._checkpoint()
