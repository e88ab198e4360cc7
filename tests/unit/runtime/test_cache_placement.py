"""The agent's placement of an entry into a pod's volume (cache_agent/placement.py), on real temporary filesystems:
the kubelet's layout under a pods directory, a hard link on one filesystem, a copy across two (/dev/shm is tmpfs)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from modelapi_runtime.cache_agent.placement import PlacementRefused, place
from modelapi_runtime.cache_agent.protocol import PLACED_PREFIX, PROOF_PREFIX

TOKEN = "0123456789abcdef0123456789abcdef"
VOLUME = "models"


def _pod(pods: Path, uid: str, token: str | None = TOKEN) -> Path:
    """A pod's emptyDir under ``pods`` as the kubelet lays it out, with the pod's proof for ``token``."""
    volume = pods / uid / "volumes" / "kubernetes.io~empty-dir" / VOLUME
    volume.mkdir(parents=True)
    if token is not None:
        (volume / (PROOF_PREFIX + token)).write_bytes(b"")
    return volume


def _entry(directory: Path, data: bytes = b"weights" * 1000) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    blob = directory / "entry"
    blob.write_bytes(data)
    blob.chmod(0o444)
    return blob


def test_an_entry_on_the_same_filesystem_is_hard_linked_read_only(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    volume = _pod(tmp_path / "pods", uid)
    blob = _entry(tmp_path / "cache")
    assert place(tmp_path / "pods", VOLUME, uid, TOKEN, blob) == "link"
    placed = volume / (PLACED_PREFIX + TOKEN)
    assert placed.stat().st_ino == blob.stat().st_ino
    assert placed.stat().st_mode & 0o777 == 0o444
    assert placed.read_bytes() == blob.read_bytes()


def test_across_filesystems_the_agent_copies_and_syncs(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temporary directory")
    uid = str(uuid.uuid4())
    volume = _pod(tmp_path / "pods", uid)
    cache = shm / f"modelapi-test-{uuid.uuid4().hex}"
    try:
        blob = _entry(cache, os.urandom(3 * 1024 * 1024 + 5))
        with pytest.raises(OSError, match="cross-device") as link_error:  # what the agent meets first
            os.link(blob, volume / "probe")
        assert link_error.value.errno == 18  # EXDEV
        assert place(tmp_path / "pods", VOLUME, uid, TOKEN, blob) == "copy"
        placed = volume / (PLACED_PREFIX + TOKEN)
        assert placed.read_bytes() == blob.read_bytes()
        assert placed.stat().st_ino != blob.stat().st_ino
        assert placed.stat().st_mode & 0o777 == 0o444
    finally:
        for p in cache.glob("*"):
            p.unlink()
        cache.rmdir()


@pytest.mark.parametrize(
    ("uid", "token"),
    [
        ("../../etc", TOKEN),
        ("0A1B2C3D-0000-0000-0000-000000000000", TOKEN),
        (str(uuid.uuid4()) + "/..", TOKEN),
        (str(uuid.uuid4()), "../" + TOKEN[3:]),
        (str(uuid.uuid4()), TOKEN.upper()),
    ],
)
def test_a_malformed_uid_or_token_is_refused_before_any_path_is_opened(tmp_path: Path, uid: str, token: str) -> None:
    blob = _entry(tmp_path / "cache")
    with pytest.raises(PlacementRefused, match=r"UUID|token"):
        place(tmp_path / "pods", VOLUME, uid, token, blob)


def test_a_pod_without_its_proof_or_with_another_token_gets_nothing(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    blob = _entry(tmp_path / "cache")
    no_proof, other = str(uuid.uuid4()), str(uuid.uuid4())
    _pod(pods, no_proof, token=None)
    volume = _pod(pods, other, token="f" * 32)
    with pytest.raises(PlacementRefused, match="proof"):
        place(pods, VOLUME, no_proof, TOKEN, blob)
    with pytest.raises(PlacementRefused, match="proof"):
        place(pods, VOLUME, other, TOKEN, blob)  # another pod (or request) knows its UID, not its token
    assert not (volume / (PLACED_PREFIX + TOKEN)).exists()
    with pytest.raises(PlacementRefused, match="no pod volume"):
        place(pods, VOLUME, str(uuid.uuid4()), TOKEN, blob)  # no such pod on this node


def test_symlinks_anywhere_on_the_path_or_as_the_proof_are_refused(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    blob = _entry(tmp_path / "cache")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / (PROOF_PREFIX + TOKEN)).write_bytes(b"")

    linked_volume = str(uuid.uuid4())  # the volume itself a symlink to another directory
    parent = pods / linked_volume / "volumes" / "kubernetes.io~empty-dir"
    parent.mkdir(parents=True)
    (parent / VOLUME).symlink_to(elsewhere)
    linked_pod = str(uuid.uuid4())  # the pod's directory a symlink to another pod's
    real = _pod(pods, str(uuid.uuid4())).parents[2]
    (pods / linked_pod).symlink_to(real)
    for uid in (linked_volume, linked_pod):
        with pytest.raises(PlacementRefused, match="no pod volume"):
            place(pods, VOLUME, uid, TOKEN, blob)

    proof_link = str(uuid.uuid4())  # the proof a symlink to a file elsewhere
    volume = _pod(pods, proof_link, token=None)
    (volume / (PROOF_PREFIX + TOKEN)).symlink_to(elsewhere / (PROOF_PREFIX + TOKEN))
    with pytest.raises(PlacementRefused, match="regular file"):
        place(pods, VOLUME, proof_link, TOKEN, blob)
    assert not (elsewhere / (PLACED_PREFIX + TOKEN)).exists()
    assert not (volume / (PLACED_PREFIX + TOKEN)).exists()


def test_an_existing_placed_name_is_never_overwritten(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    volume = _pod(tmp_path / "pods", uid)
    (volume / (PLACED_PREFIX + TOKEN)).write_bytes(b"the pod's own")
    with pytest.raises(PlacementRefused, match="already"):
        place(tmp_path / "pods", VOLUME, uid, TOKEN, _entry(tmp_path / "cache"))
    assert (volume / (PLACED_PREFIX + TOKEN)).read_bytes() == b"the pod's own"
