"""Sans-I/O core: verify, parse, normalise and route registry webhook deliveries."""
