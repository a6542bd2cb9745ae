"""Read `name==version` lines on stdin and fail unless each package is installed at
exactly that version (so the lowest-versions run cannot quietly test newer ones)."""

from __future__ import annotations

import importlib.metadata
import sys

from packaging.version import Version


def main() -> int:
    wrong = []
    for line in sys.stdin:
        name, _, version = line.strip().partition("==")
        if not name:
            continue
        installed = importlib.metadata.version(name)
        if Version(installed) != Version(version):
            wrong.append(f"{name} {installed} (wanted {version})")
        else:
            print(f"{name}=={installed}")
    if wrong:
        print("not at the lower bound: " + ", ".join(wrong), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
