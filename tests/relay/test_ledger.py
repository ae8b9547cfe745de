"""The in-memory delivery ledger: each (delivery id, rule) starts at most one run, and every
write after the claim is fenced by it."""

from __future__ import annotations

import threading

import pytest

from relay.ledger import InMemoryLedger, LedgerTiming
from relay.ports import ClaimLost, EntryState, PipelineRun
from tests.builders import run_request
from webhook.routing import PipelineRunRequest

RUN = PipelineRun("production", 13, 4711, "https://web/4711")


def request(delivery_id: str = "d-1", rule: str = "production") -> PipelineRunRequest:
    return run_request(delivery_id, rule, model="m", version="1", parameters={"delivery_id": delivery_id})


@pytest.fixture
def ledger(clock):
    return InMemoryLedger(LedgerTiming(lease=120, retention=3600), clock=clock)


class TestClaims:
    """Who may hold an entry."""

    def test_first_claim_wins_and_is_fresh(self, ledger):
        result = ledger.claim(request())
        assert result.won and result.claim.fresh and result.entry.state is EntryState.CLAIMED

    def test_live_claim_blocks_a_second_attempt(self, ledger, clock):
        ledger.claim(request())
        clock.advance(119)
        result = ledger.claim(request())
        assert not result.won and result.entry.state is EntryState.CLAIMED

    def test_takeover_after_the_lease_is_not_fresh_and_keeps_the_first_claim_time(self, ledger, clock):
        first = ledger.claim(request()).claim
        clock.advance(120)
        second = ledger.claim(request()).claim
        assert second is not None and not second.fresh
        assert second.first_claimed_at == first.first_claimed_at and second.claimed_at > first.claimed_at

    def test_started_run_is_returned_to_a_repeat(self, ledger, clock):
        claim = ledger.claim(request()).claim
        ledger.record(claim, EntryState.STARTED, run=RUN)
        clock.advance(1000)
        result = ledger.claim(request())
        assert not result.won and (result.entry.state, result.entry.run) == (EntryState.STARTED, RUN)

    def test_refused_entry_is_not_claimed_again_until_an_operator_reopens_it(self, ledger):
        ledger.record(ledger.claim(request()).claim, EntryState.REFUSED, detail="HTTP 400")
        assert not ledger.claim(request()).won
        ledger.reopen("d-1:production", by="alice")
        result = ledger.claim(request())
        assert result.won and not result.claim.fresh and result.entry.forced_by == "alice"

    def test_only_refused_or_poisoned_entries_are_reopened(self, ledger):
        ledger.record(ledger.claim(request()).claim, EntryState.STARTED, run=RUN)
        assert ledger.reopen("d-1:production", by="alice") is None
        assert ledger.get("d-1:production").state is EntryState.STARTED

    def test_released_entry_may_be_claimed_again_but_not_fresh(self, ledger):
        ledger.record(ledger.claim(request()).claim, EntryState.RELEASED, detail="HTTP 503")
        result = ledger.claim(request())
        assert result.won and not result.claim.fresh

    def test_queued_entry_is_taken_only_by_the_retry_worker(self, ledger, clock):
        ledger.record(ledger.claim(request()).claim, EntryState.QUEUED)
        clock.advance(3000)
        assert not ledger.claim(request()).won
        result = ledger.claim_for_retry("d-1:production")
        assert result.won and result.claim.request == request()

    def test_retry_worker_finds_no_entry_for_an_unknown_key(self, ledger):
        assert ledger.claim_for_retry("forged:production") is None

    def test_entries_older_than_the_retention_count_as_absent(self, ledger, clock):
        ledger.record(ledger.claim(request()).claim, EntryState.STARTED, run=RUN)
        clock.advance(3600)
        result = ledger.claim(request())
        assert result.won and result.claim.fresh

    def test_keys_are_independent(self, ledger):
        ledger.claim(request(rule="a"))
        assert ledger.claim(request(rule="b")).won

    def test_concurrent_claims_have_one_winner(self, ledger):
        results, barrier = [], threading.Barrier(16)

        def claim():
            barrier.wait()
            results.append(ledger.claim(request()).won)

        threads = [threading.Thread(target=claim) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1


class TestFencing:
    """A holder that lost its claim cannot overwrite its successor."""

    def test_stale_holder_cannot_record_after_a_takeover(self, ledger, clock):
        stale = ledger.claim(request()).claim
        clock.advance(121)
        fresh = ledger.claim(request()).claim
        ledger.record(fresh, EntryState.STARTED, run=RUN)
        with pytest.raises(ClaimLost):
            ledger.record(stale, EntryState.RELEASED, detail="late failure")
        assert ledger.get("d-1:production").state is EntryState.STARTED

    def test_each_record_returns_the_claim_for_the_next_write(self, ledger):
        claim = ledger.claim(request()).claim
        queued = ledger.record(claim, EntryState.QUEUED, attempts=1)
        with pytest.raises(ClaimLost):
            ledger.record(claim, EntryState.STARTED, run=RUN)
        ledger.record(queued, EntryState.STARTED, run=RUN)
        assert ledger.get("d-1:production").attempts == 1
