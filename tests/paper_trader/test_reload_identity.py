"""The hot-reload watcher identifies an ensemble by generation + content digest
(paper_trader.reload, ensemble.manifest.content_digest): real files, real loader threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ensemble.manifest import content_digest, peek_digest, read_manifest, write_manifest
from paper_trader.reload import ReloadWatcher, same_ensemble
from tests.paper_trader.test_reload import PIPELINE, Publisher, take_generation, wait_until


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    pub = Publisher(tmp_path)
    (tmp_path / ".current_study").write_text("study_a\n")
    return pub


@pytest.fixture
def watcher(publisher: Publisher) -> Iterator[ReloadWatcher]:
    w = ReloadWatcher(publisher.root, PIPELINE, None, debounce_s=0.05)
    yield w
    w.stop()


def test_same_generation_with_other_members_is_another_ensemble(
    watcher: ReloadWatcher, publisher: Publisher
) -> None:
    first = [publisher.member(), publisher.member()]
    publisher.publish(1, first)
    watcher.start(observe=False)
    watcher.request_reload()
    take_generation(watcher, 1)
    status = watcher.status
    digest = content_digest(read_manifest(publisher.manifest))
    assert status["digest"] == digest == peek_digest(publisher.manifest)
    assert status["member_dirs"] == [m.bundle_path for m in first]

    # generation 1 again, other members (a manifest rebuilt from scratch): loaded
    other = [publisher.member(), publisher.member()]
    publisher.publish(1, other)
    assert watcher.check_generation() == 1
    policy = take_generation(watcher, 1)
    assert [b.sha256 for b in policy.bundles] == [m.sha256 for m in other]
    status = watcher.status
    assert status["digest"] == content_digest(read_manifest(publisher.manifest)) != digest
    assert status["member_dirs"] == [m.bundle_path for m in other] and status["reloads"] == 2

    # the same ensemble rewritten (new file, new created_at): not loaded again
    reloads = watcher.status["reloads"]
    manifest = read_manifest(publisher.manifest)
    write_manifest(
        publisher.manifest, manifest.model_copy(update={"created_at": "2030-01-01T00:00:00+00:00"})
    )
    assert peek_digest(publisher.manifest) == watcher.status["digest"]
    watcher.check_generation()
    publisher.publish(2)  # wake-ups are handled in order: once generation 2 is in, the above was too
    watcher.check_generation()
    take_generation(watcher, 2)
    assert watcher.status["reloads"] == reloads + 1


def test_rejection_is_remembered_by_generation_and_digest(
    watcher: ReloadWatcher, publisher: Publisher
) -> None:
    publisher.publish(1)
    watcher.start(observe=False)
    watcher.request_reload()
    take_generation(watcher, 1)
    publisher.publish(2, [publisher.member(), publisher.member(nan=True)])
    watcher.check_generation()
    wait_until(lambda: watcher.status["rejections"] == 1, "the rejection of generation 2")
    bad = watcher.status
    assert bad["rejected_generation"] == 2 and bad["rejected_digest"] == peek_digest(publisher.manifest)
    # generation 2 again with good members: not the rejected ensemble, so it is loaded
    publisher.publish(2)
    assert watcher.check_generation() == 2
    take_generation(watcher, 2)
    assert watcher.status["rejections"] == 1 and watcher.status["generation"] == 2


def test_same_ensemble_compares_digests_where_both_are_known() -> None:
    a, b = "a" * 64, "b" * 64
    assert same_ensemble(3, a, 3, a) and not same_ensemble(3, a, 3, b) and not same_ensemble(3, a, 4, a)
    assert same_ensemble(3, None, 3, a) and same_ensemble(3, a, 3, None)  # manifests from before digests
    assert not same_ensemble(None, a, None, a) and not same_ensemble(3, a, None, None)
