"""Cold start of a large model on a device, session creation and warm-up timed apart (part of run.sh).

    python benchmarks/gpu/cold_start.py --mib 1024 --device cuda --workdir DIR [--model PATH]

Generates an ONNX model of about ``--mib`` MiB (benchmarks/runtime/cold_start.py's MLP 256-H-H-10, whose H x H
weights carry the size) unless ``--model`` names one, then starts it twice in this process as ``modelapi-runtime
serve`` does (``lifecycle.load``: the artifact verified in place, the onnxruntime session, the warm-up inference, one
steady run). The first start pays the device's one-time costs (the CUDA context, cuBLAS/cuDNN handles); the second
shows what a model costs alone. Prints one Markdown table row per start; ``--device cpu`` runs the same code without
a GPU (the check that this script works before a device is lent).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from cold_start import big_mlp  # the runtime benchmark's model generator, reused

from modelapi_runtime.lifecycle import load
from modelapi_runtime.settings import RuntimeSettings

MiB = 1024 * 1024
HEADER = (
    "| start | device (providers) | verify s | session creation s | warm-up (first run) s | steady run ms | total s |\n"
    "|---|---|---:|---:|---:|---:|---:|"
)


def start(model: Path, device: str, cache: Path, label: str) -> str:
    settings = RuntimeSettings(model_uri=f"file://{model}", name="big", model_dir=str(cache), device=device)  # type: ignore[arg-type]
    t = time.perf_counter()
    loaded = load(settings)
    total = time.perf_counter() - t
    cs, used = loaded.cold_start, loaded.model
    row = (
        f"| {label} | {used.device} ({', '.join(used.providers)}) | {cs.download_s:.3f} | {cs.load_s:.3f} | "
        f"{cs.warmup_s:.3f} | {loaded.steady_run_s * 1000:.2f} | {total:.3f} |"
    )
    del loaded, used
    gc.collect()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="size of the generated model (default 1024)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=None, help="an existing model instead of a generated one")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        t = time.perf_counter()
        model = big_mlp(args.workdir / f"cold-{args.mib}.onnx", args.mib)
        print(f"generated {model.name}: {model.stat().st_size / MiB:.0f} MiB in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)  # fmt: skip
    print(f"Model: {model.stat().st_size / MiB:.0f} MiB ONNX (MLP 256-H-H-10), device {args.device}, "
          "started twice in one process as `serve` does (lifecycle.load).")  # fmt: skip
    print()
    print(HEADER)
    for label in ("first in the process (one-time device costs)", "second (the model alone)"):
        print(start(model, args.device, args.workdir / "cache", label), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
