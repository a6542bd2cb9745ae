"""marshmallow schemas: every request body, query and response payload of the contract.

Request schemas validate user input (raising before any request is sent); response
schemas load what the service returns and keep unknown fields readable.
"""
