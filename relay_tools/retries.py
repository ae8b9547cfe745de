"""``mlflow-relay retries list|redrive``: the runs the retry queue gave up on (``relay-retry-poison``).

Poison messages are JSON an operator can read: ``key``, ``delivery_id``, ``model``, ``version``,
``rule``, ``attempt``, ``last_error`` and the ``reason`` the relay gave up (the Functions host
also moves a message there after ``maxDequeueCount`` crashed deliveries; it then has no
reason). ``redrive`` puts a ticket for the same ledger entry back on ``relay-retry``, where the
worker claims it like any retry: a poisoned or refused entry is reopened first (automatic
paths never take one; the ledger records who did), a started one is only removed from the
poison queue. The worker gets one more attempt (more, with backoff, while attempts remain).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

from relay.composition import azure_credential, build_ledger
from relay.ledger import REOPENABLE
from relay.names import RETRY_QUEUE_NAME
from relay.ports import DeliveryLedger, EntryState, RetryTicket
from relay.settings import Settings
from relay_tools.operator import log_store, operator_identity, short_time, storage_settings
from webhook.errors import RelayError

POISON_QUEUE_NAME = f"{RETRY_QUEUE_NAME}-poison"
PEEK_LIMIT = 32  # what one peek returns at most
RECEIVE_VISIBILITY = 60  # a message being redriven is hidden this long from other redrives


@dataclass(frozen=True)
class PoisonMessage:
    message_id: str
    inserted_on: float
    document: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.document.get("key") or "")

    def as_json(self) -> dict[str, Any]:
        reason = self.document.get("reason") or "moved by the Functions host after maxDequeueCount deliveries"
        return {
            "message_id": self.message_id,
            "inserted_on": short_time(self.inserted_on),
            **self.document,
            "reason": reason,
        }


def _poison_client(settings: Settings) -> Any:
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    from relay.storage_clients import queue_service

    service = queue_service(settings, credential_factory=lambda: azure_credential(settings.azure_client_id))
    return service.get_queue_client(
        POISON_QUEUE_NAME,
        message_decode_policy=TextBase64DecodePolicy(),
        message_encode_policy=TextBase64EncodePolicy(),
    )


def _parse(message: Any) -> PoisonMessage:
    try:
        document = json.loads(message.content)
    except (ValueError, TypeError):
        document = None
    if not isinstance(document, dict):
        document = {"unreadable_message": str(message.content)[:200]}
    inserted = message.inserted_on.timestamp() if message.inserted_on else 0.0
    return PoisonMessage(str(message.id), inserted, document)


def cmd_list(args: argparse.Namespace) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    from relay.storage_clients import storage_errors

    settings = storage_settings()
    client = _poison_client(settings)
    with storage_errors("poison queue"):
        try:
            messages = [_parse(m) for m in client.peek_messages(max_messages=PEEK_LIMIT)]
            total = client.get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            messages, total = [], 0
    ledger = build_ledger(settings)
    shown = [{**m.as_json(), "ledger": _ledger_state(ledger, m.key)} for m in messages]
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    if not shown:
        print(f"{POISON_QUEUE_NAME} is empty")
    for item in shown:
        print(
            f"{item['inserted_on']}  {item.get('delivery_id', '?')}  rule {item.get('rule', '?')}  model "
            f"{item.get('model', '?')} v{item.get('version') or '-'}  attempt {item.get('attempt', '?')}  "
            f"ledger: {item['ledger']}\n    {item['reason']}"
        )
    if total > len(shown):
        print(f"({len(shown)} of about {total} shown: a queue shows at most {PEEK_LIMIT} at a time)")
    return 0


def _ledger_state(ledger: DeliveryLedger, key: str) -> str:
    entry = ledger.get(key) if key else None
    return entry.state.value if entry else "no entry"


def cmd_redrive(args: argparse.Namespace) -> int:
    """Re-enqueue the matching poison messages; exit 1 when one matched nothing or could not go."""
    from azure.core.exceptions import ResourceNotFoundError

    from relay.composition import build_retry_queue
    from relay.storage_clients import storage_errors

    if not args.all and not args.id:
        raise ValueError("name a delivery id, a ledger key (<delivery id>:<rule>) or a message id, or give --all")
    settings = storage_settings()
    client, ledger, queue = _poison_client(settings), build_ledger(settings), build_retry_queue(settings)
    operator = operator_identity(args.by)
    moved = problems = 0
    seen: set[str] = set()
    with storage_errors("poison queue"):
        while True:
            try:
                batch = list(
                    client.receive_messages(
                        messages_per_page=PEEK_LIMIT, max_messages=PEEK_LIMIT, visibility_timeout=RECEIVE_VISIBILITY
                    )
                )
            except ResourceNotFoundError:
                batch = []
            fresh = [m for m in batch if m.id not in seen]
            for message in batch:
                parsed = _parse(message)
                wanted = args.all or args.id in (parsed.message_id, parsed.key, parsed.document.get("delivery_id"))
                done = False
                if message.id not in seen and wanted:
                    done, note = _redrive(parsed, ledger, queue, operator, settings)
                    print(
                        f"{parsed.document.get('delivery_id', parsed.message_id)} rule "
                        f"{parsed.document.get('rule', '?')}: {note}"
                    )
                    moved, problems = moved + done, problems + (not done)
                seen.add(message.id)
                if done:
                    client.delete_message(message)
                else:  # not ours, seen before, or left for later: visible again at once
                    client.update_message(message, visibility_timeout=0)
            if not fresh:
                break
    if not moved and not problems:
        print(f"nothing in {POISON_QUEUE_NAME} matches {args.id or '--all'}")
        return 1 if args.id else 0
    return 1 if problems else 0


def _redrive(
    message: PoisonMessage, ledger: DeliveryLedger, queue: Any, operator: str, settings: Settings
) -> tuple[bool, str]:
    """Re-enqueue one message's ledger entry; (removed from the poison queue?, what happened)."""
    from relay.delivery_records import RuleRecord

    document = message.document
    if not message.key:
        return False, "not a relay retry message; left in the poison queue"
    entry = ledger.get(message.key)
    if entry is None or entry.request is None:
        return False, "its ledger entry is gone (past retention): left in the poison queue; see deliveries replay"
    if entry.state is EntryState.STARTED:
        run = entry.run.run_id if entry.run else "?"
        return True, f"already started (run {run}); removed from the poison queue"
    if entry.state is EntryState.CLAIMED:
        return False, "an attempt holds it right now; left in the poison queue, try again shortly"
    if entry.state in REOPENABLE and ledger.reopen(message.key, by=operator) is None:
        return False, "its ledger entry changed meanwhile (a retry or another operator); left in the poison queue"
    ticket = RetryTicket(
        key=message.key,
        delivery_id=entry.request.delivery_id,
        model=entry.request.model_name,
        version=entry.request.version,
        rule=entry.request.rule,
        attempt=1,
        last_error=f"redriven by {operator}: {str(document.get('last_error') or '')[:300]}",
    )
    queue.enqueue(ticket, delay=0)
    note = f"re-enqueued on {RETRY_QUEUE_NAME} (was {entry.state.value}) by {operator}"
    record = RuleRecord(
        rule=ticket.rule,
        status="queued",
        origin="retry",
        forced_by=operator,
        detail=f"redriven by {operator}",
        pipeline_id=entry.request.pipeline_id,
        attempts=entry.attempts,
        updated_at=time.time(),
    )
    try:
        log_store(settings).write_rule(ticket.delivery_id, record, model=ticket.model, version=ticket.version)
    except RelayError as exc:  # the run is on its way; only the log missed it
        note += f" (the delivery log was not updated: {exc.detail})"
    return True, note


def add_retries_parser(sub: Any) -> None:
    """Register ``retries list|redrive`` on the CLI's subparsers."""
    parser = sub.add_parser("retries", help=f"runs the retry queue gave up on ({POISON_QUEUE_NAME})")
    commands = parser.add_subparsers(dest="retries_command", required=True)
    listing = commands.add_parser("list", help=f"the messages in {POISON_QUEUE_NAME}, with their ledger state")
    listing.add_argument("--json", action="store_true", help="a JSON list of objects")
    listing.set_defaults(func=cmd_list)
    redrive = commands.add_parser("redrive", help="put poisoned runs back on the retry queue")
    redrive.add_argument("id", nargs="?", help="delivery id, ledger key <delivery id>:<rule>, or message id")
    redrive.add_argument("--all", action="store_true", help="every message in the poison queue")
    redrive.add_argument("--by", help="operator name to record (default: az account, else $USER)")
    redrive.set_defaults(func=cmd_redrive)
