"""The tools a person runs on top of the relay (CLI commands); nothing in the runtime imports them."""
