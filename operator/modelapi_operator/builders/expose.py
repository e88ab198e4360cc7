"""The HTTPRoute ``<name>-expose`` of ``spec.expose``: this model's paths on a host name of a Gateway listener.

Only the model's own paths are routed, so several ModelAPIs share a host name: ``/v1/models/<name>`` and
``/v1/models/<name>:predict`` (exact: a path prefix matches whole segments, and ``<name>:predict`` is one segment),
and everything under ``/v2/models/<name>``. With ``pathPrefix`` the paths follow it and the prefix is removed before
the request reaches the model.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from modelapi_operator import names
from modelapi_operator.api import ExposeSpec
from modelapi_operator.builders.common import Manifest, Owner, object_meta
from modelapi_operator.builders.httproute import GATEWAY_GROUP, TARGET_HEADER, backends, parent_ref

# Every expose route carries this label (to list them all) and its claim (gateway, host, paths) as an annotation:
# two ModelAPIs whose claims are equal would route the same requests.
EXPOSE_LABEL: Final = f"{names.GROUP}/expose"
CLAIM_ANNOTATION: Final = f"{names.GROUP}/expose-claim"


def expose_route_name(model_name: str) -> str:
    return f"{model_name}{names.EXPOSE_SUFFIX}"


def gateway_of(expose: ExposeSpec, owner: Owner) -> tuple[str, str]:
    """(namespace, name) of the Gateway the route attaches to."""
    return expose.gateway.namespace or owner.namespace, expose.gateway.name


def expose_claim(expose: ExposeSpec, owner: Owner) -> str:
    """What the route takes: ``<gateway namespace>/<gateway name> <host><prefix>/v{1,2}/models/<name>``."""
    namespace, gateway = gateway_of(expose, owner)
    return f"{namespace}/{gateway} {expose.hostname}{expose.path_prefix or ''}/v{{1,2}}/models/{owner.name}"


def _rule(match_type: str, public: str, private: str, rewrite: str, common: dict[str, Any]) -> dict[str, Any]:
    """One rule; every rule gets its own copies of the shared parts (no object appears twice in the manifest)."""
    common = copy.deepcopy(common)
    filters: list[dict[str, Any]] = common["filters"]
    if public != private:
        path = {"type": rewrite, "replaceFullPath" if rewrite == "ReplaceFullPath" else "replacePrefixMatch": private}
        filters.append({"type": "URLRewrite", "urlRewrite": {"path": path}})
    return {
        "matches": [{"path": {"type": match_type, "value": public}}],
        "filters": filters,
        "backendRefs": common["backendRefs"],
    }


def build_expose_route(
    expose: ExposeSpec, owner: Owner, stable_revision: str, canary_weight: int | None, *, split: bool
) -> Manifest:
    """``split`` (a canary that routes through Gateway API): the backends of the canary's own route
    (``<name>-stable``, and ``<name>-canary`` with ``canary_weight``); else the ``<name>`` Service."""
    prefix = expose.path_prefix or ""
    v1, v2 = f"/v1/models/{owner.name}", f"/v2/models/{owner.name}"
    common: dict[str, Any] = {
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": TARGET_HEADER, "value": f"{owner.namespace}/{owner.name}"}]},
            }
        ],
        "backendRefs": backends(owner.name, canary_weight, split=split),
    }
    meta = object_meta(
        expose_route_name(owner.name), owner, stable_revision, {CLAIM_ANNOTATION: expose_claim(expose, owner)}
    )
    meta["labels"][EXPOSE_LABEL] = "true"
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": meta,
        "spec": {
            "parentRefs": [parent_ref(expose.gateway)],
            "hostnames": [expose.hostname],
            "rules": [
                _rule("Exact", prefix + v1, v1, "ReplaceFullPath", common),
                _rule("Exact", f"{prefix}{v1}:predict", f"{v1}:predict", "ReplaceFullPath", common),
                _rule("PathPrefix", prefix + v2, v2, "ReplacePrefixMatch", common),
            ],
        },
    }
