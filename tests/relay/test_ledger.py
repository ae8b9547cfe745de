"""The in-memory delivery ledger: each (delivery id, rule) starts at most one run."""

from __future__ import annotations

import threading

import pytest

from relay.ports import PipelineRun
from relay.ledger import EntryState, InMemoryLedger, LedgerTiming

RUN = PipelineRun("production", 13, 4711, "https://web/4711")


@pytest.fixture
def ledger(clock):
    return InMemoryLedger(LedgerTiming(lease=120, retention=3600), clock=clock)


class TestInMemoryLedger:
    def test_first_claim_wins(self, ledger):
        claim = ledger.claim("d-1:production")
        assert claim.won and claim.entry.state is EntryState.CLAIMED

    def test_live_claim_blocks_a_second_attempt(self, ledger, clock):
        ledger.claim("k")
        clock.advance(119)
        claim = ledger.claim("k")
        assert not claim.won and claim.entry.state is EntryState.CLAIMED

    def test_expired_lease_may_be_taken_over(self, ledger, clock):
        ledger.claim("k")
        clock.advance(120)
        assert ledger.claim("k").won

    def test_started_run_is_returned_to_a_repeat(self, ledger, clock):
        ledger.claim("k")
        ledger.record("k", EntryState.STARTED, run=RUN)
        clock.advance(1000)
        claim = ledger.claim("k")
        assert not claim.won
        assert (claim.entry.state, claim.entry.run) == (EntryState.STARTED, RUN)

    def test_failed_entry_may_be_claimed_again(self, ledger):
        ledger.claim("k")
        ledger.record("k", EntryState.FAILED, detail="HTTP 400")
        assert ledger.claim("k").won

    def test_queued_entry_is_taken_only_from_the_queue(self, ledger, clock):
        ledger.claim("k")
        ledger.record("k", EntryState.QUEUED)
        clock.advance(10_000 - 7000)
        assert not ledger.claim("k").won
        assert ledger.claim("k", from_queue=True).won

    def test_entries_older_than_the_retention_count_as_absent(self, ledger, clock):
        ledger.claim("k")
        ledger.record("k", EntryState.STARTED, run=RUN)
        clock.advance(3600)
        assert ledger.claim("k").won

    def test_keys_are_independent(self, ledger):
        ledger.claim("d-1:a")
        assert ledger.claim("d-1:b").won

    def test_concurrent_claims_have_one_winner(self, ledger):
        results, barrier = [], threading.Barrier(16)

        def claim():
            barrier.wait()
            results.append(ledger.claim("k").won)

        threads = [threading.Thread(target=claim) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1
