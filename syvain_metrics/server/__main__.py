"""``python -m syvain_metrics.server [--host H] [--port P] [--db PATH] [--api-key KEY ...]``.

Example:
    $ python -m syvain_metrics.server --port 0
"""

from __future__ import annotations

import sys

from syvain_metrics.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
