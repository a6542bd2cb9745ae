"""The wire contract, shared by the SDK and the local server: operations, schemas, limits,
event ids. Nothing here does I/O; ``docs/wire-contract.md`` says it in words."""
