"""The runtime, what runs in Azure: composition, settings, secrets, the request service, the
ledger, the retry worker, catch-up and their storage adapters (the tools are in relay_tools/)."""
