"""The SDK's HTTP side: the session (settings and lifecycle), the requestor that makes one
call, the default session, the transport, retries, credentials and ingestion tokens."""
