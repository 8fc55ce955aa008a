"""S3 with Object Lock as write-once storage (boto3).

The bucket must have Object Lock enabled (it is created so with ``create_bucket``). Every write-once
object is stored with a compliance-mode retention of ``retention_days``: during that time no one, not
even the account root, can delete or overwrite that object version; ``vault hold`` adds legal holds and
extends retention. Writes use ``If-None-Match: *`` so an existing name is never replaced; the ``keys/``
records (wrapped data keys) are written as new versions when a key rotation re-wraps them.

Configure it in ``vault init --s3-bucket NAME [--s3-endpoint URL] [--s3-prefix P]``; credentials and
region come from the usual AWS sources (environment, profile, instance role), never from the vault's
files. Production: AWS S3 (or an S3-compatible store whose Object Lock is certified for compliance
mode, e.g. MinIO in compliance mode); the test-suite runs against moto's S3 server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from mithridate.vault.backends import Backend, check_key
from mithridate.vault.errors import NotFound, VaultError


class S3Backend(Backend):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str | None = None,
                 retention_days: int = 365, create_bucket: bool = False):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retention_days = int(retention_days)
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                               config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        self._errors = self.s3.exceptions
        if create_bucket:
            self._create_bucket(region)
        self._check_object_lock()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} (Object Lock, compliance mode, {self.retention_days} days)"

    def _create_bucket(self, region: str | None) -> None:
        kw = {}
        if region and region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with contextlib.suppress(self._errors.BucketAlreadyOwnedByYou, self._errors.BucketAlreadyExists):
            self.s3.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True, **kw)

    def _check_object_lock(self) -> None:
        from botocore.exceptions import ClientError

        try:
            lock = self.s3.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except ClientError as exc:
            raise VaultError(f"s3://{self.bucket}: cannot read its Object Lock configuration "
                             f"({exc.response['Error'].get('Code')}); the vault needs a bucket with Object Lock "
                             "enabled") from None
        if lock.get("ObjectLockEnabled") != "Enabled":
            raise VaultError(f"s3://{self.bucket}: Object Lock is not enabled; the vault refuses mutable storage")

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _retain_until(self) -> datetime:
        return datetime.now(UTC) + timedelta(days=self.retention_days)

    def put_once(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        check_key(key, mutable=False)
        if self.exists(key):
            return False
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*",
                               ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=self._retain_until(),
                               ChecksumAlgorithm="SHA256")
        except ClientError as exc:
            if exc.response["Error"].get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def put_mutable(self, key: str, data: bytes) -> None:
        check_key(key, mutable=True)
        self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumAlgorithm="SHA256")

    def _versions(self, key: str) -> tuple[list[dict], list[dict]]:
        """A key's object versions and delete markers, newest first."""
        full = self._key(key)
        versions, markers = [], []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full):
            versions += [v for v in page.get("Versions", []) if v["Key"] == full]
            markers += [m for m in page.get("DeleteMarkers", []) if m["Key"] == full]
        return versions, markers

    def get(self, key: str) -> bytes:
        """Write-once keys read their *first* version: the one compliance retention protects. A version
        written later (by someone holding only PutObject) or a delete marker cannot shadow it."""
        mutable = key.startswith("keys/")
        check_key(key, mutable=mutable)
        try:
            if mutable:
                return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            versions, _ = self._versions(key)
            if not versions:
                raise NotFound(f"{key}: not in storage")
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key),
                                      VersionId=versions[-1]["VersionId"])["Body"].read()
        except self._errors.NoSuchKey:
            raise NotFound(f"{key}: not in storage") from None

    def exists(self, key: str) -> bool:
        if not key.startswith("keys/"):
            return bool(self._versions(key)[0])
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response["Error"].get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def anomalies(self) -> list[str]:
        """Write-once keys with versions written after the original, or delete markers: tampering attempts."""
        found: dict[str, list[int]] = {}
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for kind, items in ((0, page.get("Versions", [])), (1, page.get("DeleteMarkers", []))):
                for item in items:
                    key = item["Key"][len(self.prefix):]
                    if not key.startswith("keys/"):
                        found.setdefault(key, [0, 0])[kind] += 1
        out = []
        for key, (versions, markers) in sorted(found.items()):
            if versions > 1:
                out.append(f"{key}: {versions - 1} version(s) written over the locked original (ignored; "
                           "tampering attempt?)")
            if markers:
                out.append(f"{key}: delete marker(s) hide the locked original (ignored; tampering attempt?)")
        return out

    def list(self, prefix: str) -> Iterator[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix):]

    def protect(self, keys: list[str], retain_until: datetime | None, legal_hold: bool | None) -> None:
        for key in keys:
            versions, _ = self._versions(key)
            if not versions:
                raise NotFound(f"{key}: not in storage")
            target = {"Bucket": self.bucket, "Key": self._key(key), "VersionId": versions[-1]["VersionId"]}
            if retain_until is not None:
                until = retain_until if retain_until.tzinfo else retain_until.replace(tzinfo=UTC)
                self.s3.put_object_retention(**target, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
            if legal_hold is not None:
                self.s3.put_object_legal_hold(**target, LegalHold={"Status": "ON" if legal_hold else "OFF"})
