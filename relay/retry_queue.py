"""The retry queue and its poison queue in Azure Storage queues.

Messages are base64 JSON, as the Functions queue trigger (``messageEncoding: base64``)
expects. A message is a ``RetryTicket``: a reference to the ledger entry that holds the
verified request, never a request the worker would trust.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from relay.ports import RetryTicket
from relay.storage_clients import storage_errors

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueServiceClient

MAX_VISIBILITY_SECONDS = 7 * 24 * 3600 - 60


class StorageRetryQueue:
    """``RetryQueue`` and ``PoisonQueue`` over ``queue_name`` and ``<queue_name>-poison``."""

    def __init__(self, service: QueueServiceClient, queue_name: str) -> None:
        self._service = service
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        self._queues: dict[str, QueueClient] = {}

    def _queue(self, name: str) -> QueueClient:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import TextBase64EncodePolicy

        if name not in self._queues:
            client = self._service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
            with storage_errors("retry queue"), contextlib.suppress(ResourceExistsError):
                client.create_queue()
            self._queues[name] = client
        return self._queues[name]

    def enqueue(self, ticket: RetryTicket, *, delay: float) -> None:
        """Send ``ticket``, visible after ``delay`` s. Raises ``StorageUnavailable``."""
        visibility = int(min(max(0.0, delay), MAX_VISIBILITY_SECONDS))
        with storage_errors("retry queue"):
            self._queue(self.queue_name).send_message(ticket.to_json(), visibility_timeout=visibility, time_to_live=-1)

    def poison(self, ticket: RetryTicket | None, *, reason: str, raw: str = "") -> None:
        """Park a run the relay gave up on, readable by an operator. Raises ``StorageUnavailable``.

        ``raw`` is kept only when the message could not be read as a ticket (bounded; it came
        from the queue, which only the relay's identity and operators may write).
        """
        document: dict[str, Any] = {"reason": reason[:1000]}
        if ticket is not None:
            document.update(json.loads(ticket.to_json()))
        else:
            document["unreadable_message"] = raw[:2000]
        with storage_errors("poison queue"):
            self._queue(self.poison_queue_name).send_message(json.dumps(document), time_to_live=-1)
