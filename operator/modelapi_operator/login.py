"""kopf's login, as the operator's own client needs it: the same identity for the watches and for every write."""

from __future__ import annotations

import os
import tempfile

import kopf

from modelapi_operator import kube


def _as_file(data: str | bytes | None, suffix: str) -> str | None:
    """Certificate material embedded in a kubeconfig, written to a private file for ssl."""
    if data is None:
        return None
    raw = data.encode() if isinstance(data, str) else data
    handle, path = tempfile.mkstemp(prefix="modelapi-", suffix=suffix)
    with os.fdopen(handle, "wb") as file:
        file.write(raw)
    return path


def credentials_of(info: kopf.ConnectionInfo) -> kube.Credentials:
    ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
    return kube.Credentials(
        server=info.server,
        ca_path=os.fsdecode(info.ca_path) if info.ca_path else None,
        ca_data=ca_data,
        insecure=bool(info.insecure),
        token=info.token,
        scheme=info.scheme or "Bearer",
        certificate_path=os.fsdecode(info.certificate_path)
        if info.certificate_path
        else _as_file(info.certificate_data, ".crt"),
        private_key_path=os.fsdecode(info.private_key_path)
        if info.private_key_path
        else _as_file(info.private_key_data, ".key"),
    )
