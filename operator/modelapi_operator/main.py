"""``modelapi-operator``: the kopf operator's entry point (the reconciler lands with issue 5)."""

from __future__ import annotations

import sys


def main() -> int:
    sys.stderr.write(
        "modelapi-operator: the reconciler is not part of this build yet; use `modelapi render` to see the "
        "objects it will manage.\n"
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
