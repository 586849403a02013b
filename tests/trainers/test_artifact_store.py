"""The artifact store setting (file or S3-compatible) and the verified bundle cache, against a
real local S3 server (moto) and real files."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from structlog.testing import capture_logs

from daemon.config import ConfigError, load_config
from tests.conftest import TrainedStudy
from tests.s3_server import S3Server
from trainers.artifact_store import (
    ArtifactStoreError,
    ArtifactStoreUnavailable,
    LocalArtifactStore,
    S3ArtifactStore,
    StoreSpec,
    artifact_store_for,
    open_artifact_store,
)
from trainers.bundle import ACTOR_FILE, BundleError, pack_bundle
from trainers.bundle_cache import cache_dir, fetch_bundle


def test_spec_parse() -> None:
    assert StoreSpec.parse(None).kind == "file" and StoreSpec.parse("file").url == "file"
    spec = StoreSpec.parse("s3://bucket/some/prefix/", "http://127.0.0.1:9000", "eu-west-1")
    assert (spec.kind, spec.bucket, spec.prefix, spec.url) == (
        "s3",
        "bucket",
        "some/prefix",
        "s3://bucket/some/prefix",
    )
    assert spec.env()["CAPPUCCINO_ARTIFACTS__ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert StoreSpec.parse("s3://bucket").prefix == ""
    for bad in ("s3://", "ftp://x", "s3://key:secret@bucket/p", "/some/folder"):
        with pytest.raises(ArtifactStoreError, match=r"artifacts\.store"):
            StoreSpec.parse(bad)
    with pytest.raises(ArtifactStoreError, match="endpoint_url"):
        StoreSpec.parse("s3://b", "minio:9000")


def test_config_section_reaches_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPPUCCINO_ARTIFACTS__STORE", "file")  # restored after the test
    monkeypatch.delenv("CAPPUCCINO_ARTIFACTS__ENDPOINT_URL", raising=False)
    toml = tmp_path / "c.toml"
    toml.write_text('[artifacts]\nstore = "s3://models/cappuccino"\nendpoint_url = "http://127.0.0.1:9000"\n')
    monkeypatch.delenv("CAPPUCCINO_ARTIFACTS__STORE")
    cfg = load_config(toml, {"root": str(tmp_path)})
    assert cfg.artifacts.spec().bucket == "models"
    assert os.environ["CAPPUCCINO_ARTIFACTS__STORE"] == "s3://models/cappuccino"
    assert isinstance(artifact_store_for(tmp_path), S3ArtifactStore)
    toml.write_text('[artifacts]\nstore = "s3:/models"\n')
    with pytest.raises(ConfigError, match=r"c.toml: artifacts.store: .*s3:/models"):
        load_config(toml, {"root": str(tmp_path)})
    toml.write_text('[artifacts]\naws_secret_access_key = "x"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(toml, {"root": str(tmp_path)})


def test_file_store_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPPUCCINO_ARTIFACTS__STORE", raising=False)
    store = artifact_store_for(tmp_path)
    assert isinstance(store, LocalArtifactStore) and store.base == tmp_path / "artifacts"
    store.write("abc", io.BytesIO(b"x" * 10))
    assert store.list() == {"abc": 10} and store.relpath("abc") == "artifacts/abc" and store.check() is None


@pytest.mark.s3
def test_s3_store_roundtrip_prefix_list_remove(s3_server: S3Server, tmp_path: Path) -> None:
    store = artifact_store_for(tmp_path)
    assert isinstance(store, S3ArtifactStore) and store.check() is None
    store.write("one", io.BytesIO(b"1" * 5))
    store.write("two", io.BytesIO(b"2" * 7))
    assert store.list() == {"one": 5, "two": 7}
    assert store.relpath("one") == f"s3://{s3_server.bucket}/artifacts/one"
    other = open_artifact_store(
        StoreSpec.parse(f"s3://{s3_server.bucket}/elsewhere", s3_server.endpoint_url), tmp_path
    )
    assert other.list() == {}  # the prefix separates stores sharing a bucket
    with store.open_reader("one") as r:
        assert r.read() == b"11111"
    store.remove("one")
    with pytest.raises(ArtifactNotFound):
        store.open_reader("one")
    assert not (tmp_path / "artifacts").exists()  # nothing under the root


@pytest.mark.s3
def test_s3_outage_is_not_a_missing_artifact(s3_server: S3Server, tmp_path: Path) -> None:
    store = artifact_store_for(tmp_path)
    store.write("one", io.BytesIO(b"1"))
    s3_server.stop()
    with pytest.raises(
        ArtifactStoreUnavailable, match=rf"s3://{s3_server.bucket}/artifacts at http://127\.0\.0\.1"
    ):
        store.open_reader("one")
    with pytest.raises(ArtifactStoreUnavailable):
        store.list()
    problem = store.check()
    assert problem is not None and "test-secret-key" not in problem and "test-key-id" not in problem
    s3_server.start()
    assert store.check() is None and store.list() == {"one": 1}


@pytest.mark.s3
def test_bundle_cache_verifies(s3_server: S3Server, trained_study: TrainedStudy, tmp_path: Path) -> None:
    """A bundle fetched once is served from the cache while the store is down; a cached copy
    that no longer matches its sha256 is fetched again; an artifact that is not the trial's
    bundle is refused."""
    import optuna

    study = optuna.load_study(study_name=trained_study.study_name, storage=trained_study.storage_url)
    trial = next(t for t in study.trials if t.user_attrs.get("actor_sha256"))
    sha = trial.user_attrs["actor_sha256"]
    store = artifact_store_for(tmp_path)
    tar = tmp_path / "b.tar"
    tar.write_bytes(pack_bundle(trained_study.root / trial.user_attrs["bundle_path"]))
    artifact_id = upload_artifact(artifact_store=store, file_path=str(tar), study_or_trial=study)
    with capture_logs():
        got = fetch_bundle(store, artifact_id, tmp_path, sha, trial._trial_id)
    assert got.parent == cache_dir(tmp_path) and got.name == f"{sha}_{trial._trial_id}"
    s3_server.stop()
    assert fetch_bundle(store, artifact_id, tmp_path, sha, trial._trial_id) == got  # the store is down
    (got / ACTOR_FILE).write_bytes(b"tampered")
    with pytest.raises(ArtifactStoreUnavailable):  # not served: the copy no longer verifies
        fetch_bundle(store, artifact_id, tmp_path, sha, trial._trial_id)
    assert not got.exists()
    s3_server.start()
    assert fetch_bundle(store, artifact_id, tmp_path, sha, trial._trial_id) == got
    shutil.rmtree(got)
    with pytest.raises(BundleError, match="is not the trial's"):
        fetch_bundle(store, artifact_id, tmp_path, "0" * 64, trial._trial_id)
    with pytest.raises(BundleError, match="64 hex"):
        fetch_bundle(store, artifact_id, tmp_path, "../../x", trial._trial_id)
