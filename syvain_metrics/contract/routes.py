"""The operations table under its earlier module name: see
:mod:`syvain_metrics.contract.operations`, where each operation also names its schemas.

Example:
    >>> from syvain_metrics.contract import operations
    >>> GET_EXPERIMENT is operations.GET_EXPERIMENT
    True
"""

from __future__ import annotations

from syvain_metrics.contract.operations import *  # noqa: F403
from syvain_metrics.contract.operations import __all__ as __all__
