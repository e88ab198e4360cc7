"""The cluster policy: what a ModelAPI may ask for, set by the cluster admin in the chart's ``policy`` values (pure).

A ModelAPI is written by a tenant, but its pods run an image, load Python code and land on nodes the admin chose
for other reasons. The operator checks the spec against this policy before it applies anything; a spec that
breaks a rule gets condition reason ``PolicyViolation`` naming the rule and the offending value, and nothing of
it is applied (a ModelAPI that already serves keeps serving its current revision, untouched).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelapi_operator.api import ModelAPISpec
from modelapi_operator.settings import OperatorSettings

ANY = "*"


def image_repository(image: str) -> str:
    """``registry:5000/team/runtime:1.2@sha256:...`` -> ``registry:5000/team/runtime``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def image_allowed(image: str, prefixes: Iterable[str]) -> bool:
    """An image is allowed when a prefix is ``*``, or the image starts with it at a name boundary: the prefix
    ``registry.example/team`` allows ``registry.example/team/x:1`` and ``registry.example/team:1``, never
    ``registry.example/team-evil/x``."""
    for prefix in prefixes:
        if not prefix:
            continue
        if prefix in (ANY, image):
            return True
        if image.startswith(prefix) and (prefix[-1] in "/:@" or image[len(prefix)] in "/:@"):
            return True
    return False


def _key_allowed(key: str, allowed: tuple[str, ...]) -> bool:
    return ANY in allowed or key in allowed


def _shown(values: Iterable[str]) -> str:
    return ", ".join(values) or "none"


@dataclass(frozen=True)
class ClusterPolicy:
    """The rules (chart values ``policy.*``); the defaults here allow everything (settings give the real ones)."""

    allowed_image_prefixes: tuple[str, ...] = (ANY,)
    allow_handlers: bool = True
    require_sha256: bool = False
    allowed_toleration_keys: tuple[str, ...] = (ANY,)
    allowed_node_selector_keys: tuple[str, ...] = (ANY,)

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> ClusterPolicy:
        prefixes = tuple(settings.policy_allowed_image_prefixes) or tuple(
            dict.fromkeys(image_repository(image) for image in (settings.cpu_image, settings.gpu_image))
        )
        return cls(
            allowed_image_prefixes=prefixes,
            allow_handlers=settings.policy_allow_handlers,
            require_sha256=settings.policy_require_sha256,
            allowed_toleration_keys=tuple(settings.policy_allowed_toleration_keys),
            allowed_node_selector_keys=tuple(settings.policy_allowed_node_selector_keys),
        )

    def violations(self, spec: ModelAPISpec) -> list[str]:
        """One sentence per broken rule, each naming the rule (its chart value) and the offending value."""
        found: list[str] = []
        image = spec.runtime.image
        if image and not image_allowed(image, self.allowed_image_prefixes):
            found.append(
                f"policy.allowedImagePrefixes: spec.runtime.image {image} does not start with an allowed prefix "
                f"({_shown(self.allowed_image_prefixes)})"
            )
        if spec.model.handler is not None and not self.allow_handlers:
            found.append("policy.allowHandlers: handlers are not allowed in this cluster; remove spec.model.handler")
        if self.require_sha256 and spec.model.sha256 is None:
            found.append("policy.requireSha256: spec.model.sha256 is required (the artifact's sha256sum)")
        if self.require_sha256 and spec.model.handler is not None and spec.model.handler_sha256 is None:
            found.append("policy.requireSha256: spec.model.handlerSha256 is required with a handler")
        for toleration in spec.runtime.tolerations:
            key = toleration.key or ""
            if not _key_allowed(key, self.allowed_toleration_keys):
                shown = key or "(empty: every taint)"
                found.append(
                    f"policy.allowedTolerationKeys: spec.runtime.tolerations key {shown} is not allowed "
                    f"(allowed: {_shown(self.allowed_toleration_keys)})"
                )
        for key in spec.runtime.node_selector:
            if not _key_allowed(key, self.allowed_node_selector_keys):
                found.append(
                    f"policy.allowedNodeSelectorKeys: spec.runtime.nodeSelector key {key} is not allowed "
                    f"(allowed: {_shown(self.allowed_node_selector_keys)})"
                )
        return found
