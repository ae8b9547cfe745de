"""The relay application: settings, secrets, the request service and local tooling."""
