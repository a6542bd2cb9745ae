"""The SDK's HTTP side: the session (settings and lifecycle, ``session.py``; its checks,
``settings.py``), the requestor that makes one call (``requestor.py``), the default session
(``registry.py``), the transport, retries, credentials and ingestion tokens, paging as a
pure reader (``paging.py``, ``pages.py``, ``listing.py``) and ``sync`` (``sync.py``)."""
