"""The logging pipeline behind ``experiment.log()``: a per-session sender, its durable spool,
and the replay of what a dead process left behind.

``log()`` validates and enqueues; everything else happens on the session's background
threads (:mod:`~syvain_metrics.pipeline.sender`, over the state of
:mod:`~syvain_metrics.pipeline.state`, with the spooler thread in
:mod:`~syvain_metrics.pipeline.spooler`), which write pending events to an append-only
spool (:mod:`~syvain_metrics.pipeline.spool`, its lines in
:mod:`~syvain_metrics.pipeline.spool_files`, its troubles in
:mod:`~syvain_metrics.pipeline.spool_health`), send them in batches of up to 1,000 with
retries that never end while the process lives (:mod:`~syvain_metrics.pipeline.delivery`),
and remove what the service acknowledged. ``syvain-metrics sync`` replays the spools of
dead processes (:mod:`~syvain_metrics.pipeline.recovery`).

Nothing here imports the session: the session hands the pipeline an
:class:`~syvain_metrics.pipeline.delivery.Uplink` (a function that sends one batch once,
and the retry policy) and wires it in :mod:`~syvain_metrics.pipeline.logs`.
"""
