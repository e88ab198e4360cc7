"""``modelapi predict NAME --data FILE|JSON``: the request body, where it goes, and how the answer is shown."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelapi_operator.cli_views.common import condition

# The reasons with Ready=True or Ready=False for which the activator holds a request while a replica starts.
WAKES_ON_REQUEST = frozenset({"ScaledToZero", "Activating"})


class DataError(Exception):
    """--data that is neither JSON nor a readable JSON file; the message says which."""


def read_data(value: str, stdin_text: str | None = None) -> Any:
    """``--data``: inline JSON (starting with ``{`` or ``[``), ``-`` for stdin, else a file of JSON."""
    stripped = value.lstrip()
    if value == "-":
        text, where = stdin_text or "", "stdin"
    elif stripped.startswith(("{", "[")):
        text, where = value, "--data"
    else:
        try:
            text, where = Path(value).read_text(encoding="utf-8"), value
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise DataError(f"--data {value}: not inline JSON and not a readable file: {reason}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise DataError(f"{where}: invalid JSON: {error}") from None


def request_for(model_name: str, data: Any, *, v2: bool) -> tuple[str, bytes]:
    """The model path and the body: v1 ``{"instances": [...]}`` (a bare list is wrapped; any other object goes as
    it is, for a handler), or a v2 inference request ``{"inputs": [...]}``."""
    if v2:
        if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
            raise DataError(
                '--v2 needs an Open Inference Protocol request: {"inputs": [{"name", "shape", "datatype", "data"}]}'
            )
        return f"/v2/models/{model_name}/infer", json.dumps(data).encode()
    if isinstance(data, list):
        data = {"instances": data}
    if not isinstance(data, dict):
        raise DataError('v1 needs a JSON object, e.g. {"instances": [...]}, or a JSON list of instances')
    return f"/v1/models/{model_name}:predict", json.dumps(data).encode()


def not_servable(model: Mapping[str, Any]) -> str | None:
    """Why a request would not be answered now, or None: the model is Ready, or at zero (woken by a request)."""
    ready = condition(model, "Ready")
    if ready.get("status") == "True" or ready.get("reason") in WAKES_ON_REQUEST:
        return None
    name = model.get("metadata", {}).get("name")
    reason = ready.get("reason", "no Ready condition yet")
    message = " ".join(str(ready.get("message", "")).split())
    return f"ModelAPI {name} is not Ready ({reason}){': ' + message if message else ''} (modelapi status {name})"


def is_api_server_status(content_type: str, body: bytes) -> str | None:
    """The message of a Kubernetes Status (the API server's own refusal, not the model's answer), or None."""
    if "json" not in content_type:
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if isinstance(payload, dict) and payload.get("kind") == "Status" and payload.get("apiVersion") == "v1":
        return str(payload.get("message") or payload.get("reason") or "")
    return None


def answer_text(body: bytes) -> str:
    """The model's answer as it came (compact JSON stays on one line, for jq), ending with a newline."""
    text = body.decode("utf-8", errors="replace")
    return text if text.endswith("\n") or not text else text + "\n"
