"""The data scientist's optional module: ``preprocess(payload) -> {input: ndarray}`` and/or
``postprocess(outputs, payload) -> dict`` (docs/api.md, "The handler interface").

The module is imported from the verified artifact file (source code, never a pickle). Whatever it
raises at request time becomes :class:`HandlerFailed`: HTTP 500 with a request id and a generic message for the
client, the exception's text and traceback in the log under that id; the server keeps serving.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelapi_runtime.exceptions import HandlerFailed, ModelLoadFailed
from modelapi_runtime.tensors import Array

log = logging.getLogger(__name__)

MODULE_NAME = "modelapi_user_handler"

Preprocess = Callable[[dict[str, Any]], Mapping[str, Any]]
Postprocess = Callable[[dict[str, Array], dict[str, Any]], Any]


class Handler:
    def __init__(self, preprocess: Preprocess | None = None, postprocess: Postprocess | None = None) -> None:
        self._preprocess = preprocess
        self._postprocess = postprocess

    @property
    def has_preprocess(self) -> bool:
        return self._preprocess is not None

    @property
    def has_postprocess(self) -> bool:
        return self._postprocess is not None

    def preprocess(self, payload: dict[str, Any]) -> dict[str, Array]:
        assert self._preprocess is not None
        try:
            result = self._preprocess(payload)
            if not isinstance(result, Mapping):
                raise TypeError(f"preprocess must return a dict of input name -> array, got {type(result).__name__}")
            return {str(k): np.asarray(v) for k, v in result.items()}
        except Exception as exc:
            raise HandlerFailed(f"handler preprocess failed: {type(exc).__name__}: {exc}"[:1000]) from exc

    def postprocess(self, outputs: dict[str, Array], payload: dict[str, Any]) -> Any:
        assert self._postprocess is not None
        try:
            return self._postprocess(outputs, payload)
        except Exception as exc:
            raise HandlerFailed(f"handler postprocess failed: {type(exc).__name__}: {exc}"[:1000]) from exc


def load_handler(path: Path, display: str = "handler") -> Handler:
    """Import the module at ``path`` (any file name; cached blobs have none) as Python source."""
    loader = importlib.machinery.SourceFileLoader(MODULE_NAME, str(path))
    spec = importlib.util.spec_from_loader(MODULE_NAME, loader)
    if spec is None:  # pragma: no cover - SourceFileLoader always yields a spec
        raise ModelLoadFailed(f"{display}: cannot import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        loader.exec_module(module)
    except Exception as exc:
        log.exception("handler module %s failed to import", display)
        sys.modules.pop(MODULE_NAME, None)
        raise ModelLoadFailed(f"{display}: importing the handler failed: {type(exc).__name__}: {exc}") from exc
    pre = getattr(module, "preprocess", None)
    post = getattr(module, "postprocess", None)
    if pre is None and post is None:
        raise ModelLoadFailed(f"{display}: defines neither preprocess nor postprocess")
    for name, fn in (("preprocess", pre), ("postprocess", post)):
        if fn is not None and not callable(fn):
            raise ModelLoadFailed(f"{display}: {name} is not callable")
    return Handler(pre, post)
