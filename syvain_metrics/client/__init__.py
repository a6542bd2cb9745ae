"""The SDK's HTTP side: the session, the call it makes, its transport, retries, credentials
and ingestion tokens."""
