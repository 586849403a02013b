"""The artifact store every bundle goes through: a folder under the root, or S3-compatible.

``[artifacts] store`` (environment ``CAPPUCCINO_ARTIFACTS__STORE``) names it:

* ``"file"`` (the default): Optuna's ``FileSystemArtifactStore`` on ``<root>/artifacts``;
  every host that reads bundles must see the same root (one machine, or a shared mount).
* ``"s3://bucket/prefix"``: Optuna's ``Boto3ArtifactStore`` on that bucket, each artifact
  under ``<prefix>/<artifact_id>`` (no prefix: at the top of the bucket). ``endpoint_url``
  (``CAPPUCCINO_ARTIFACTS__ENDPOINT_URL``) points boto3 at an S3-compatible server (MinIO,
  Ceph RGW, ...) and ``region`` (``CAPPUCCINO_ARTIFACTS__REGION``) sets its region. The
  credentials come from boto3's usual chain only (``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role ...): never from the
  configuration file, never in a message or a log line.

The configuration's ``[artifacts]`` section is exported to the process environment by
:func:`daemon.config.load_config`, so a command, the supervisor and every child it starts
(which inherit the environment) agree on one store, as they do on the study storage
(:data:`trainers.storage.STORAGE_ENV`). A process that was never given one reads the
variables (:func:`artifact_store_for`), else uses the file store under its root.

Errors: a bad ``store`` value is a :class:`ArtifactStoreError` (one line naming it); a
store that cannot be reached (connection refused or dropped, timeouts, a 5xx answer, no
credentials) is a :class:`ArtifactStoreUnavailable`, distinct from Optuna's
``ArtifactNotFound`` (the store answered: no such artifact), so a reader never takes an
outage for a missing bundle. S3 calls time out after 5 s to connect and 30 s to read and
are tried at most 3 times (botocore's standard retry mode).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

STORE_ENV = "CAPPUCCINO_ARTIFACTS__STORE"
ENDPOINT_ENV = "CAPPUCCINO_ARTIFACTS__ENDPOINT_URL"
REGION_ENV = "CAPPUCCINO_ARTIFACTS__REGION"
ARTIFACTS_DIR = "artifacts"
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 3

__all__ = [
    "ArtifactNotFound",
    "ArtifactStoreError",
    "ArtifactStoreUnavailable",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "StoreSpec",
    "artifact_store_for",
    "open_artifact_store",
]


class ArtifactStoreError(ValueError):
    """A ``[artifacts]`` setting that names no usable store."""


class ArtifactStoreUnavailable(RuntimeError):
    """The store could not be reached (or refused our credentials); nothing was read or written."""


@dataclass(frozen=True)
class StoreSpec:
    """Where the artifacts live.

    Attributes:
        kind: ``file`` or ``s3``.
        bucket: S3 bucket (``s3`` only).
        prefix: key prefix without slashes at either end (``""``: top of the bucket).
        endpoint_url: S3-compatible server URL (None: AWS's own endpoint).
        region: S3 region name (None: boto3's default chain).
    """

    kind: Literal["file", "s3"] = "file"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def parse(
        cls, store: str | None, endpoint_url: str | None = None, region: str | None = None
    ) -> StoreSpec:
        """``"file"`` (or empty/None) or ``"s3://bucket[/prefix]"``.

        Raises:
            ArtifactStoreError: any other value, an S3 URL without a bucket, or an endpoint
                that is not an http(s) URL.
        """
        text = (store or "file").strip()
        endpoint_url = (endpoint_url or "").strip() or None
        region = (region or "").strip() or None
        if endpoint_url is not None and not endpoint_url.startswith(("http://", "https://")):
            raise ArtifactStoreError(f"artifacts.endpoint_url {endpoint_url!r} is not an http(s) URL")
        if text == "file":
            return cls("file", endpoint_url=endpoint_url, region=region)
        if not text.startswith("s3://"):
            raise ArtifactStoreError(f'artifacts.store {text!r}: expected "file" or "s3://bucket/prefix"')
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket or "@" in bucket or ":" in bucket:
            raise ArtifactStoreError(
                f"artifacts.store {text!r}: expected s3://bucket/prefix (no credentials or port in it)"
            )
        return cls("s3", bucket, prefix.strip("/"), endpoint_url, region)

    @classmethod
    def from_env(cls) -> StoreSpec:
        """The store the environment names (:data:`STORE_ENV` and friends); ``file`` when unset.

        Raises:
            ArtifactStoreError: a bad value in the environment.
        """
        return cls.parse(os.environ.get(STORE_ENV), os.environ.get(ENDPOINT_ENV), os.environ.get(REGION_ENV))

    def env(self) -> dict[str, str]:
        """The environment variables that make a child open this store (no credentials)."""
        out = {STORE_ENV: self.url}
        if self.endpoint_url:
            out[ENDPOINT_ENV] = self.endpoint_url
        if self.region:
            out[REGION_ENV] = self.region
        return out

    @property
    def url(self) -> str:
        """``file`` or ``s3://bucket/prefix`` (as written in the configuration)."""
        if self.kind == "file":
            return "file"
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def describe(self, root: str | Path) -> str:
        """Where artifacts go, for messages: the folder, or the S3 URL and its endpoint."""
        if self.kind == "file":
            return str(Path(root) / ARTIFACTS_DIR)
        return self.url + (f" at {self.endpoint_url}" if self.endpoint_url else "")


def _unavailable(exc: BaseException) -> bool:
    """Whether a boto3/botocore error means the store could not be used (not: not found)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status in (401, 403) or err.get("Code") in ("NoSuchBucket", "AccessDenied")
    return isinstance(exc, BotoCoreError | OSError)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class LocalArtifactStore(FileSystemArtifactStore):
    """Optuna's ``FileSystemArtifactStore`` on ``<root>/artifacts`` plus listing and a health check."""

    def __init__(self, base: str | Path) -> None:
        self.base = Path(base)
        super().__init__(str(self.base))
        self.where = str(self.base)

    def relpath(self, artifact_id: str) -> str:
        """``artifacts/<artifact_id>``: how a cleanup names it."""
        return f"{ARTIFACTS_DIR}/{artifact_id}"

    def list(self) -> dict[str, int]:
        """``{artifact_id: size in bytes}`` of every artifact (files not starting with a dot)."""
        if not self.base.is_dir() or self.base.is_symlink():
            return {}
        out: dict[str, int] = {}
        for p in self.base.iterdir():
            if p.name.startswith(".") or p.is_dir():
                continue
            try:
                out[p.name] = p.lstat().st_size
            except FileNotFoundError:
                continue
        return out

    def check(self) -> str | None:
        """None when the folder can be read, else why not."""
        if self.base.exists() and not os.access(self.base, os.R_OK | os.X_OK):
            return f"{self.base}: not readable"
        return None


class S3ArtifactStore(Boto3ArtifactStore):
    """Optuna's ``Boto3ArtifactStore`` with a key prefix, listing, a health check, and
    outages raised as :class:`ArtifactStoreUnavailable`."""

    def __init__(self, spec: StoreSpec, client: Any = None) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.spec = spec
        self.where = spec.describe("")
        client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=spec.endpoint_url,
            region_name=spec.region,
            config=BotoConfig(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            ),
        )
        super().__init__(spec.bucket, client=client)

    def key(self, artifact_id: str) -> str:
        """The object key of an artifact: ``<prefix>/<artifact_id>``."""
        if not artifact_id or "/" in artifact_id or artifact_id in (".", ".."):
            raise ArtifactNotFound(f"artifact id {artifact_id!r} is not a plain name")
        return f"{self.spec.prefix}/{artifact_id}" if self.spec.prefix else artifact_id

    def relpath(self, artifact_id: str) -> str:
        """``s3://bucket/prefix/<artifact_id>``: how a cleanup names it."""
        return f"s3://{self.spec.bucket}/{self.key(artifact_id)}"

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except ArtifactNotFound:
            raise
        except Exception as exc:
            if _unavailable(exc):
                msg = f"artifact store {self.where}: {what}: {_first_line(exc)}"
                raise ArtifactStoreUnavailable(msg) from None
            raise

    def open_reader(self, artifact_id: str) -> BinaryIO:
        with self._calling(f"read {artifact_id}"):
            return super().open_reader(self.key(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        with self._calling(f"write {artifact_id}"):
            super().write(self.key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        with self._calling(f"remove {artifact_id}"):
            super().remove(self.key(artifact_id))

    def list(self) -> dict[str, int]:
        """``{artifact_id: size in bytes}`` of every object directly under the prefix."""
        prefix = f"{self.spec.prefix}/" if self.spec.prefix else ""
        out: dict[str, int] = {}
        with self._calling("list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix) :]
                    if name and not name.startswith("."):
                        out[name] = int(obj.get("Size", 0))
        return out

    def check(self) -> str | None:
        """None when the bucket answers (``HeadBucket``), else why not (one line, no secrets)."""
        try:
            with self._calling("check"):
                self.client.head_bucket(Bucket=self.bucket)
        except ArtifactStoreUnavailable as exc:
            return str(exc)
        except Exception as exc:  # any other answer: the store is not usable either
            return f"artifact store {self.where}: {_first_line(exc)}"
        return None


ArtifactStore = LocalArtifactStore | S3ArtifactStore


def open_artifact_store(spec: str | StoreSpec | None, root: str | Path) -> ArtifactStore:
    """The Optuna artifact store ``spec`` names (a :class:`StoreSpec` or a ``store`` string;
    None: the environment's, see :meth:`StoreSpec.from_env`), for the runtime ``root``.

    The file store's folder is created when missing. Opening an S3 store contacts nothing.

    Raises:
        ArtifactStoreError: a bad ``store`` value.
    """
    if spec is None:
        spec = StoreSpec.from_env()
    elif isinstance(spec, str):
        spec = StoreSpec.parse(spec, os.environ.get(ENDPOINT_ENV), os.environ.get(REGION_ENV))
    if spec.kind == "file":
        base = Path(root) / ARTIFACTS_DIR
        base.mkdir(parents=True, exist_ok=True)
        return LocalArtifactStore(base)
    return S3ArtifactStore(spec)


def artifact_store_for(root: str | Path) -> ArtifactStore:
    """The store of this process (from the environment, else ``<root>/artifacts``)."""
    return open_artifact_store(None, root)


def download(store: ArtifactStore, artifact_id: str, dest: str | Path) -> Path:
    """Copy one artifact into the file ``dest`` (written to a temp file, then renamed).

    Raises:
        ArtifactNotFound: the store has no such artifact.
        ArtifactStoreUnavailable: the store could not be reached.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=".dl-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                reader = store.open_reader(artifact_id)
            except ValueError as exc:  # the file store refuses ids that leave its folder
                raise ArtifactNotFound(f"artifact {artifact_id}: {exc}") from None
            with reader:
                try:
                    shutil.copyfileobj(reader, out)
                except Exception as exc:
                    if not isinstance(exc, ArtifactStoreUnavailable) and _unavailable(exc):
                        raise ArtifactStoreUnavailable(
                            f"artifact store {store.where}: read {artifact_id}: {_first_line(exc)}"
                        ) from None
                    raise
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest
