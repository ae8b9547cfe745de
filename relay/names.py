"""Names the function bindings need at indexing time; dependency-free so importing
``function_app`` stays cheap."""

# Fixed, not a setting: the queue trigger binding names it when the host indexes the app.
RETRY_QUEUE_NAME = "relay-retry"
