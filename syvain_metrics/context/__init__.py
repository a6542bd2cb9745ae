"""What a run records about itself besides its metrics: its configuration (``config=``), the
environment it ran in, and the machine's load while it runs (system metrics).

Nothing here touches the network: ``config.py`` and ``environment.py`` build the creation
metadata, ``system.py`` samples the machine and hands each value to a ``log`` function.
Libraries they read (pydantic, OmegaConf, torch, psutil, nvidia-ml-py) are never imported
when the SDK is: configs are recognised by their methods and modules, frameworks only when
the user's program has already imported them, psutil only when the sampler is turned on.

Example:
    >>> from syvain_metrics.context.config import config_metadata
    >>> config_metadata({"lr": 0.1, "model": {"width": 512}}).values
    {'lr': 0.1, 'model.width': 512}
"""
