"""Print a pip constraint `name==low` for every `name>=low` that setup.cfg declares
(install_requires and every extra), so CI can test the lowest versions the package claims
to work with."""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

# `name>=low`, or `name>=low,<high` for a package whose next major release may break us.
LOWER = re.compile(
    r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][^,;\s]*)\s*(?:,\s*<\s*[0-9][^,;\s]*)?\s*$"
)

# The framework integrations' extras: their tests run in an environment of their own with the
# newest releases (`.ci/run`, "integrations"); the lowest environment installs `dev` only.
FRAMEWORK_EXTRAS = {
    "lightning",
    "transformers",
    "accelerate",
    "keras",
    "xgboost",
    "lightgbm",
    "optuna",
    "integrations-test",
}


def main() -> int:
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra, value in config.items("options.extras_require"):
        if extra not in FRAMEWORK_EXTRAS:
            lines += value.splitlines()
    pins = {}
    for line in lines:
        if match := LOWER.match(line):
            name = re.sub(r"\[.*\]", "", match.group(1)).lower()
            pins[name] = match.group(2)
        elif re.search(r"[<>=!~;,]", line):
            # A range, a marker or an exact pin: its lower bound cannot be read off here.
            print(
                f"lowest_pins.py: cannot read a lower bound from {line.strip()!r}", file=sys.stderr
            )
            return 1
    for name, version in sorted(pins.items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
