"""``mlflow-relay deliveries list|show|replay``: what happened to each delivery, and again.

``list`` and ``show`` read the delivery log (``relay.delivery_log_table``) with the operator's
credentials; ``replay`` builds the relay from the environment and routes the stored event
again (``relay_tools.replay``). ``--json`` prints a list of objects with ``delivery_id``,
``status``, ``model``, ``version``, ``detail`` and ``runs`` (each with ``rule`` and ``run_id``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from typing import Any

from relay.delivery_records import DeliveryRecord
from relay_tools.operator import (
    log_store,
    operator_identity,
    operator_relay,
    parse_since,
    short_time,
    storage_settings,
)

FAILED = frozenset({"refused", "error", "unavailable", "poisoned"})
_OK_REPLAY = frozenset({"triggered", "duplicate", "queued", "ignored"})


def _matches_status(record: DeliveryRecord, wanted: list[str] | None) -> bool:
    if not wanted:
        return True
    statuses = {record.status, *(r.status for r in record.rules)}
    return any(s in statuses or (s == "failed" and statuses & FAILED) for s in wanted)


def _where(record: DeliveryRecord) -> str:
    if record.alias:
        return f"alias {record.alias}"
    return f"to {record.to_stage}" if record.to_stage else record.event


def cmd_list(args: argparse.Namespace) -> int:
    settings = storage_settings()
    store = log_store(settings)
    since = parse_since(args.since)
    records = [
        r
        for r in store.recent(since=since)
        if (not args.model or fnmatch.fnmatchcase(r.model, args.model)) and _matches_status(r, args.status)
    ]
    records = records[: args.limit]
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return 0
    if not records:
        print(f"no delivery since {short_time(since)} UTC matches")
    for record in records:
        runs = " ".join(f"{r.rule}={r.run_id or r.status}" for r in record.rules) or "-"
        where = _where(record)
        print(
            f"{short_time(record.arrived_at)}  {record.status:<11} {record.model} v{record.version or '-'} "
            f"({where})  {record.delivery_id}  runs: {runs}"
            + (f"\n    {record.current_detail[:200]}" if record.current_detail else "")
        )
    rejected = store.rejections(since=since)
    if rejected:
        totals: dict[str, int] = {}
        for count in rejected:
            totals[count.reason] = totals.get(count.reason, 0) + count.count
        print("rejected (not logged one by one): " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    record = log_store(storage_settings()).get(args.delivery_id)
    if record is None:
        print(
            f"mlflow-relay: no delivery {args.delivery_id!r} in the delivery log (or past its retention)",
            file=sys.stderr,
        )
        return 1
    shown: dict[str, Any] = record.as_json()
    shown["event_kept"] = json.loads(record.event_json) if record.event_json else None
    if args.json:
        print(json.dumps([shown], indent=2))
        return 0
    print(f"delivery {record.delivery_id}: {record.status}")
    for key in (
        "source",
        "event",
        "model",
        "version",
        "to_stage",
        "from_stage",
        "alias",
        "origin",
        "answer",
        "http_status",
        "arrived_at",
        "first_arrived_at",
        "arrivals",
        "forced_by",
        "replay_of",
        "replayed_by",
    ):
        if shown.get(key) not in (None, ""):
            print(f"  {key}: {shown[key]}")
    if record.current_detail:
        print(f"  detail: {record.current_detail}")
    for rule in record.rules:
        run = f"run {rule.run_id} {rule.url or ''}".rstrip() if rule.run_id else "no run"
        extra = ", ".join(
            x
            for x in (
                rule.origin,
                rule.forced_by and f"by {rule.forced_by}",
                rule.attempts and f"{rule.attempts} queue attempt(s)",
            )
            if x
        )
        print(f"  rule {rule.rule}: {rule.status}, {run} ({extra})" + (f": {rule.detail}" if rule.detail else ""))
    print("  replayable: " + ("yes (mlflow-relay deliveries replay)" if record.replayable else "no"))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from relay_tools.replay import replay_delivery

    relay = operator_relay()
    assert relay.log is not None
    operator = operator_identity(args.by)
    result = replay_delivery(
        relay, relay.log.store, args.delivery_id, operator=operator, rule=args.rule, force=args.force
    )
    body = result.answer.body
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **body,
                        "replay_of": args.delivery_id,
                        "forced_by": operator,
                        "reopened": result.reopened,
                        "runs": [
                            {
                                "rule": o.request.rule,
                                "status": o.status,
                                "run_id": o.run.run_id if o.run else None,
                                "url": o.run.url if o.run else None,
                            }
                            for o in result.outcomes
                        ],
                    }
                ],
                indent=2,
            )
        )
    else:
        print(f"replay of {args.delivery_id} as {result.event.delivery_id} by {operator}: {body['status']}")
        for outcome in result.outcomes:
            run = f"run {outcome.run.run_id}" if outcome.run and outcome.run.run_id else "no run"
            print(
                f"  rule {outcome.request.rule}: {outcome.status}, {run}"
                + (f": {outcome.detail}" if outcome.detail else "")
            )
        if result.reopened:
            print(f"  reopened (refused or poisoned before): {', '.join(result.reopened)}")
        if body["status"] == "duplicate" and not args.force:
            print("  the runs exist already; --force starts new ones (recorded as forced by you)")
    return 0 if body["status"] in _OK_REPLAY else 1


def add_deliveries_parser(sub: Any) -> None:
    """Register ``deliveries list|show|replay`` on the CLI's subparsers."""
    parser = sub.add_parser("deliveries", help="the delivery log: what happened to each delivery; replay one")
    commands = parser.add_subparsers(dest="deliveries_command", required=True)

    listing = commands.add_parser("list", help="deliveries since a time, newest first")
    listing.add_argument("--model", help="model name or glob")
    listing.add_argument("--since", default="24h", help="duration (30m, 2h, 7d) or ISO time; default 24h")
    listing.add_argument(
        "--status",
        action="append",
        help="triggered, ignored, duplicate, queued, in_progress, "
        "refused, unavailable, poisoned, error, or failed (any failure); repeatable",
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many deliveries, newest first")
    listing.add_argument("--json", action="store_true", help="a JSON list of objects")
    listing.set_defaults(func=cmd_list)

    show = commands.add_parser("show", help="one delivery: ids, answer, every rule's run, the stored event")
    show.add_argument("delivery_id", help="the delivery id (as in the answers and the log lines)")
    show.add_argument("--json", action="store_true", help="the record as a JSON object")
    show.set_defaults(func=cmd_show)

    replay = commands.add_parser("replay", help="route the stored event again under today's rules (exactly once)")
    replay.add_argument("delivery_id", help="the delivery whose stored event to route again")
    replay.add_argument("--rule", help="only this rule")
    replay.add_argument(
        "--force",
        action="store_true",
        help="start new runs even where runs exist (delivery id <id>~replay-<n>, recorded as yours)",
    )
    replay.add_argument("--by", help="operator name to record (default: az account, else $USER)")
    replay.add_argument("--json", action="store_true", help="the outcome as JSON")
    replay.set_defaults(func=cmd_replay)
