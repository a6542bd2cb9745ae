"""Active-record resources: they know routes and fields; the session does the HTTP."""
