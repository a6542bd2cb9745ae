"""The logging pipeline behind ``experiment.log()``: a per-session sender, its durable spool,
and the replay of what a dead process left behind.

``log()`` validates and enqueues; everything else happens on the session's background
threads (:mod:`~syvain_metrics.pipeline.sender`), which write pending events to an
append-only spool (:mod:`~syvain_metrics.pipeline.spool`), send them in batches of up to
1,000 with retries that never end while the process lives
(:mod:`~syvain_metrics.pipeline.delivery`), and remove what the service acknowledged.
``syvain-metrics sync`` replays the spools of dead processes
(:mod:`~syvain_metrics.pipeline.recovery`).
"""
