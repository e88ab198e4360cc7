"""Run a Deployment's container as a local process, with exactly its arguments and environment (for `make demo`).

No container runs on the local cluster's kwok nodes, so `make demo` starts the operator and the model runtime as
local processes. This reads the Deployment that the chart (operator) or the operator (runtime) created and starts
the program its image would start, with its args and env. The only substitutions, printed before the start:

- an env var from a Secret (``valueFrom.secretKeyRef``) gets the Secret's value (the pod would get the same);
- paths the pod mounts as volumes (the model cache ``/models``, ``/tmp``) become a local directory;
- the listening port becomes a free local one (the pod's address is not reachable from this machine);
- the operator authenticates with its ServiceAccount's token (a kubeconfig given with ``--kubeconfig``), as in the pod.

    python scripts/demo_local.py runtime --deployment deploy.json --secrets secrets.json --workdir DIR --port N
    python scripts/demo_local.py operator --deployment deploy.json --kubeconfig sa.kubeconfig --port N
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

# The exec-form ENTRYPOINT of each Dockerfile target, by container name (the pod spec sets args only).
ENTRYPOINTS = {"runtime": "modelapi-runtime", "operator": "modelapi-operator"}
SECRET_HINTS = ("SECRET", "TOKEN", "PASSWORD", "KEY_ID")


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def resolve_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The container's env as the kubelet would set it; secretKeyRef from the given Secrets' data."""
    env: dict[str, str] = {}
    notes: list[str] = []
    for item in container.get("env", []):
        name = item["name"]
        source = item.get("valueFrom")
        if source is None:
            env[name] = item.get("value", "")
            continue
        ref = source.get("secretKeyRef")
        if ref is None:
            raise SystemExit(f"demo_local: env {name}: only secretKeyRef is supported here, not {sorted(source)}")
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            if ref.get("optional"):
                continue
            raise SystemExit(f"demo_local: env {name}: Secret {ref['name']} has no key {ref['key']}")
        env[name] = value
        notes.append(f"{name} from Secret {ref['name']} key {ref['key']}")
    return env, notes


def mounted_paths(deployment: dict[str, Any]) -> list[str]:
    return [mount["mountPath"] for mount in container_of(deployment).get("volumeMounts", [])]


def shown(name: str, value: str) -> str:
    return "****" if any(hint in name for hint in SECRET_HINTS) and value else value


def run(program: str, args: list[str], env: dict[str, str], substitutions: list[str], base_env: dict[str, str]) -> None:
    sys.stdout.write(f"    command: {program} {' '.join(args)}\n")
    for name in sorted(env):
        sys.stdout.write(f"    env {name}={shown(name, env[name])}\n")
    for note in substitutions:
        sys.stdout.write(f"    substituted: {note}\n")
    sys.stdout.flush()
    binary = str(Path(sys.executable).parent / program)
    os.execve(binary, [binary, *args], {**base_env, **env})  # noqa: S606 - becoming the program is the point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_local.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=sorted(ENTRYPOINTS))
    parser.add_argument("--deployment", required=True, type=Path, help="kubectl get deployment -o json output")
    parser.add_argument("--secrets", type=Path, help="JSON {secret: {key: value}} for secretKeyRef")
    parser.add_argument("--workdir", type=Path, help="local directory standing in for the pod's volumes")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig with the ServiceAccount's token")
    parser.add_argument("--port", type=int, required=True, help="free local port for the server / health endpoint")
    options = parser.parse_args(argv)

    deployment = json.loads(options.deployment.read_text())
    container = container_of(deployment)
    secrets = json.loads(options.secrets.read_text()) if options.secrets else {}
    env, substitutions = resolve_env(container, secrets)
    args = list(container.get("args", []))
    # the machine's environment minus anything that would change the program's settings
    base_env = {key: value for key, value in os.environ.items() if not key.startswith(("MODELAPI_", "AWS_"))}

    if options.which == "runtime":
        assert options.workdir is not None, "--workdir is required for the runtime"
        for path in mounted_paths(deployment):
            local = options.workdir / path.strip("/").replace("/", "_")
            local.mkdir(parents=True, exist_ok=True)
            for name, value in env.items():
                if value == path:
                    env[name] = str(local)
                    substitutions.append(f"{name}: volume {path} -> {local}")
            if path == "/tmp":  # noqa: S108 - the pod's mount path, compared, not used
                base_env["TMPDIR"] = str(local)
                substitutions.append(f"TMPDIR: volume /tmp -> {local}")
        substitutions.append(f"MODELAPI_PORT: {env.get('MODELAPI_PORT', '8080')} -> {options.port} on 127.0.0.1")
        env["MODELAPI_PORT"] = str(options.port)
        env["MODELAPI_HOST"] = "127.0.0.1"
        substitutions.append("MODELAPI_HOST: 0.0.0.0 (the image default) -> 127.0.0.1")
        termination_log = options.workdir / "termination-log"
        env["MODELAPI_TERMINATION_LOG"] = str(termination_log)
        substitutions.append(f"MODELAPI_TERMINATION_LOG: /dev/termination-log -> {termination_log}")
    else:
        assert options.kubeconfig is not None, "--kubeconfig is required for the operator"
        args = [arg.replace("0.0.0.0:8080", f"127.0.0.1:{options.port}") for arg in args]
        base_env["KUBECONFIG"] = str(options.kubeconfig)
        substitutions.append(f"--liveness on 127.0.0.1:{options.port}")
        if env.get("MODELAPI_OPERATOR_METRICS_ADDRESS"):
            with socket.socket() as probe:  # a free local port: the pod's may be taken on this machine
                probe.bind(("127.0.0.1", 0))
                metrics = f"127.0.0.1:{probe.getsockname()[1]}"
            old = env["MODELAPI_OPERATOR_METRICS_ADDRESS"]
            env["MODELAPI_OPERATOR_METRICS_ADDRESS"] = metrics
            substitutions.append(f"MODELAPI_OPERATOR_METRICS_ADDRESS: {old} -> {metrics}")
        substitutions.append(f"identity: the ServiceAccount token in {options.kubeconfig} (as the pod's mounted token)")
    run(ENTRYPOINTS[options.which], args, env, substitutions, base_env)
    return 0  # not reached: execve replaced this process


if __name__ == "__main__":
    raise SystemExit(main())
