"""Putting a verified entry into a model pod's own volume: a hard link, or an in-kernel copy by the agent.

The agent sees the kubelet's pods directory (``pods_dir``: ``<kubelet root>/pods``) and opens nothing in it but
``<uid>/volumes/kubernetes.io~empty-dir/<volume>``: the pod's UID must be a UUID, every component is opened with
``O_NOFOLLOW`` from the previous one's descriptor (a symlink anywhere is refused), and the volume must hold the pod's
proof, a regular file named after a random token only that pod knows (it wrote it there, the agent only looks at its
type). The artifact is placed at ``PLACED_PREFIX + token`` in that volume: a hard link to the entry (no byte copied,
the entry's inode: mode 0444, owned by the agent, so the pod can read it but not change it) or, where a link cannot be
made (``EXDEV``: another filesystem or another mount; ``EPERM``, ``EMLINK``), a copy made in the kernel with
``copy_file_range(2)`` on the agent's CPU and synced to disk. Nothing here is read or written but those two names.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from modelapi_runtime.cache_agent.protocol import PLACED_PREFIX, PROOF_PREFIX

UID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
VOLUME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a Kubernetes volume name (DNS label)
LINK_REFUSED = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP)
COPY_CHUNK = 64 * 1024 * 1024
Method = Literal["link", "copy"]


class PlacementRefused(Exception):
    """The artifact cannot be placed in this pod's volume (bad request, no such pod volume, no proof, a symlink,
    no room): the agent streams it instead."""


def check_request(uid: str, token: str) -> None:
    if not UID_RE.match(uid):
        raise PlacementRefused("the pod UID must be a lowercase UUID")
    if not TOKEN_RE.match(token):
        raise PlacementRefused("the token must be 32 lowercase hexadecimal characters")


def _open_dir(name: str, dir_fd: int | None) -> int:
    flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:  # ENOENT, ENOTDIR, ELOOP (a symlink), EACCES
        raise PlacementRefused(f"no pod volume here ({os.strerror(exc.errno or 0)})") from None


def place(pods_dir: Path, volume: str, uid: str, token: str, blob: Path) -> Method:
    """Puts ``blob`` into the pod's volume as ``PLACED_PREFIX + token``; how. Raises ``PlacementRefused``."""
    check_request(uid, token)
    if not VOLUME_RE.match(volume):
        raise PlacementRefused(f"invalid volume name {volume!r}")
    with ExitStack() as stack:
        fd = _open_dir(str(pods_dir), None)
        stack.callback(os.close, fd)
        for name in (uid, "volumes", "kubernetes.io~empty-dir", volume):
            fd = _open_dir(name, fd)
            stack.callback(os.close, fd)
        try:
            proof = os.stat(PROOF_PREFIX + token, dir_fd=fd, follow_symlinks=False)
        except OSError:
            raise PlacementRefused("the pod's proof is not in its volume") from None
        if not stat.S_ISREG(proof.st_mode):
            raise PlacementRefused("the pod's proof is not a regular file")
        target = PLACED_PREFIX + token
        try:
            os.link(blob, target, dst_dir_fd=fd, follow_symlinks=False)
            return "link"
        except FileExistsError:
            raise PlacementRefused("the pod's volume already holds a placed file under this token") from None
        except OSError as exc:
            if exc.errno not in LINK_REFUSED:
                raise PlacementRefused(f"cannot link ({os.strerror(exc.errno or 0)})") from None
        _copy(blob, target, fd)
        return "copy"


def _copy_some(src: int, dst: int, count: int, offset: int) -> int:
    """``copy_file_range``; ``sendfile`` where the kernel will not copy between these two filesystems."""
    try:
        return os.copy_file_range(src, dst, count)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    return os.sendfile(dst, src, offset, count)


def _copy(blob: Path, target: str, dir_fd: int) -> None:
    """An in-kernel copy of ``blob`` to ``target`` in ``dir_fd``, synced; removed again if it fails."""
    src = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444,
                          dir_fd=dir_fd)  # fmt: skip
        except OSError as exc:
            raise PlacementRefused(f"cannot create the copy ({os.strerror(exc.errno or 0)})") from None
        try:
            size, done = os.fstat(src).st_size, 0
            while done < size:
                n = _copy_some(src, dst, min(COPY_CHUNK, size - done), done)
                if n == 0:
                    raise OSError(errno.EIO, "the entry ended early")
                done += n
            os.fsync(dst)  # the pod trusts its copy by its digest's name after a container restart
        except OSError as exc:
            os.unlink(target, dir_fd=dir_fd)
            raise PlacementRefused(f"the copy failed ({os.strerror(exc.errno or 0)})") from None
        finally:
            os.close(dst)
    finally:
        os.close(src)
