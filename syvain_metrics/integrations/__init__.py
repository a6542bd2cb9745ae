"""Logging from training frameworks in one line: a logger, callback or tracker per framework.

Each module imports its framework when it is imported (never by ``import syvain_metrics``):

==========================================  =====================================
``syvain_metrics.integrations.lightning``   ``SyvainLogger`` for ``Trainer(logger=...)``
``syvain_metrics.integrations.transformers`` ``SyvainCallback`` for ``Trainer(callbacks=...)``
``syvain_metrics.integrations.accelerate``  ``SyvainTracker`` for ``Accelerator(log_with=...)``
``syvain_metrics.integrations.keras``       ``SyvainKerasCallback`` for ``model.fit(callbacks=...)``
``syvain_metrics.integrations.xgboost``     ``SyvainXGBoostCallback`` for ``xgb.train(callbacks=...)``
``syvain_metrics.integrations.lightgbm``    ``SyvainLightGBMCallback`` for ``lgb.train(callbacks=...)``
``syvain_metrics.integrations.optuna``      ``SyvainOptunaCallback`` for ``study.optimize(callbacks=...)``
==========================================  =====================================

All of them drive one :class:`~syvain_metrics.integrations.framework_run.FrameworkRun`: the
framework's own step, hyperparameters as the run's metadata, ``done`` or ``error`` at the end,
rank zero only, and never an exception into training for the service's sake.

Example:
    >>> from syvain_metrics.integrations.lightning import SyvainLogger  # doctest: +SKIP
    >>> trainer = L.Trainer(logger=SyvainLogger("mnist-mlp"))          # doctest: +SKIP
"""
