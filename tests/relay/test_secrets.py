"""``RelaySecrets``: a TTL cache over a secret source, with rate-limited rotation refresh."""

from __future__ import annotations

import threading
import time

import pytest

from relay.budgets import SECRET_FAILURE_MEMORY_SECONDS
from relay.ports import SecretsUnavailable
from relay.secrets import ROTATION_REFRESH_INTERVAL_SECONDS, EnvironmentSecretSource, RelaySecrets
from webhook.errors import ConfigurationError


class CountingSource:
    """A secret source whose values can change; counts reads per name."""

    description = "the test vault"

    def __init__(self, values, error=None):
        self.values, self.error, self.reads = dict(values), error, {}

    def get(self, name):
        self.reads[name] = self.reads.get(name, 0) + 1
        if self.error:
            raise self.error
        return self.values.get(name)


@pytest.fixture
def source():
    return CountingSource({"hook": "current", "hook-old": "previous", "pat": "the-pat"})


@pytest.fixture
def make_secrets(source, clock):
    def make(*, previous_name="hook-old", ttl=300.0, src=None):
        return RelaySecrets(
            src or source, webhook_name="hook", previous_name=previous_name, pat_name="pat", ttl=ttl, clock=clock
        )

    return make


class TestCaching:
    def test_one_read_per_secret_per_ttl(self, make_secrets, source, clock):
        secrets = make_secrets()
        for _ in range(1000):
            assert secrets.webhook_secrets() == ["current", "previous"]
            assert secrets.devops_pat() == "the-pat"
            clock.advance(0.1)  # 100 s in all: inside the TTL
        assert source.reads == {"hook": 1, "hook-old": 1, "pat": 1}

    def test_after_the_ttl_the_source_is_read_again(self, make_secrets, source, clock):
        secrets = make_secrets()
        secrets.webhook_secrets()
        source.values["hook"] = "rotated"
        clock.advance(299)
        assert secrets.webhook_secrets()[0] == "current"
        clock.advance(1)
        assert secrets.webhook_secrets()[0] == "rotated"
        assert source.reads["hook"] == 2

    def test_previous_secret_is_optional(self, make_secrets, source):
        del source.values["hook-old"]
        assert make_secrets().webhook_secrets() == ["current"]
        assert make_secrets(previous_name=None).webhook_secrets() == ["current"]

    def test_pat_invalidation_forces_a_new_read(self, make_secrets, source):
        secrets = make_secrets()
        secrets.devops_pat()
        source.values["pat"] = "new-pat"
        secrets.invalidate_devops_pat()
        assert secrets.devops_pat() == "new-pat"
        assert source.reads["pat"] == 2


class TestRotationRefresh:
    def test_refresh_drops_cached_webhook_secrets(self, make_secrets, source):
        secrets = make_secrets()
        secrets.webhook_secrets()
        source.values["hook"] = "rotated"
        assert secrets.refresh_webhook_secrets() is True
        assert secrets.webhook_secrets() == ["rotated", "previous"]

    def test_refresh_at_most_once_per_thirty_seconds(self, make_secrets, source, clock):
        secrets = make_secrets()
        secrets.webhook_secrets()
        assert secrets.refresh_webhook_secrets() is True
        secrets.webhook_secrets()
        clock.advance(ROTATION_REFRESH_INTERVAL_SECONDS - 1)
        assert secrets.refresh_webhook_secrets() is False
        secrets.webhook_secrets()
        assert source.reads["hook"] == 2
        clock.advance(1)
        assert secrets.refresh_webhook_secrets() is True
        secrets.webhook_secrets()
        assert source.reads["hook"] == 3
        assert ROTATION_REFRESH_INTERVAL_SECONDS == 30.0

    def test_refresh_keeps_the_cached_pat(self, make_secrets, source):
        secrets = make_secrets()
        secrets.devops_pat()
        secrets.refresh_webhook_secrets()
        secrets.devops_pat()
        assert source.reads["pat"] == 1


class TestFailures:
    def test_missing_webhook_secret_is_a_configuration_error_naming_it(self, make_secrets, source):
        del source.values["hook"]
        with pytest.raises(ConfigurationError, match="webhook secret 'hook' not found in the test vault"):
            make_secrets().webhook_secrets()

    def test_missing_pat_is_a_configuration_error_naming_it(self, make_secrets, source):
        del source.values["pat"]
        with pytest.raises(ConfigurationError, match="PAT secret 'pat' not found"):
            make_secrets().devops_pat()

    def test_source_failure_is_secrets_unavailable(self, make_secrets):
        failing = CountingSource({}, error=SecretsUnavailable("Key Vault unreachable"))
        with pytest.raises(SecretsUnavailable) as caught:
            make_secrets(src=failing).webhook_secrets()
        assert caught.value.status == 503 and caught.value.retry_after >= 1

    def test_failed_read_is_remembered_briefly_then_read_again(self, make_secrets, source, clock):
        source.error = SecretsUnavailable("down")
        secrets = make_secrets()
        with pytest.raises(SecretsUnavailable):
            secrets.devops_pat()
        source.error = None
        with pytest.raises(SecretsUnavailable) as caught:  # remembered: the vault is not asked again
            secrets.devops_pat()
        assert source.reads["pat"] == 1 and 1 <= caught.value.retry_after <= SECRET_FAILURE_MEMORY_SECONDS
        clock.advance(SECRET_FAILURE_MEMORY_SECONDS)
        assert secrets.devops_pat() == "the-pat"


class SlowSource(CountingSource):
    """A vault that answers only when ``release`` is set (or after ``delay`` s)."""

    def __init__(self, values, *, error=None):
        super().__init__(values, error=error)
        self.release = threading.Event()
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def get(self, name):
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.release.wait(10)
            return super().get(name)
        finally:
            with self._lock:
                self.in_flight -= 1


class TestOutage:
    """A slow or failing vault: one read in flight, bounded waits, cached values keep serving."""

    def make(self, source, **kwargs):
        return RelaySecrets(source, webhook_name="hook", previous_name=None, pat_name="pat", ttl=300, **kwargs)

    def test_concurrent_requests_share_one_read_and_fail_fast(self):
        source = SlowSource({"hook": "current"})
        secrets = self.make(source, wait=0.2)
        outcomes, started = [], time.monotonic()

        def read():
            try:
                outcomes.append(secrets.webhook_secrets())
            except SecretsUnavailable as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=read) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        assert all(isinstance(o, SecretsUnavailable) and o.retry_after >= 1 for o in outcomes)
        assert elapsed < 2.0 and source.most_in_flight == 1  # nobody queued behind a lock
        source.release.set()
        for _ in range(50):
            if source.reads.get("hook"):
                break
            time.sleep(0.02)
        assert secrets.webhook_secrets() == ["current"]  # the read in flight landed in the cache
        assert source.reads["hook"] == 1

    def test_cached_value_keeps_serving_while_the_vault_is_down(self):
        source = CountingSource({"hook": "current"})
        secrets = self.make(source)
        assert secrets.webhook_secrets() == ["current"]
        source.error = SecretsUnavailable("vault down")
        assert secrets.webhook_secrets() == ["current"] and source.reads["hook"] == 1


class TestEnvironmentSource:
    def test_reads_names_and_treats_empty_as_missing(self):
        source = EnvironmentSecretSource({"A": "1", "B": ""})
        assert (source.get("A"), source.get("B"), source.get("C")) == ("1", None, None)


class OrderedSource(CountingSource):
    """Records the order of reads and how many were in flight at once."""

    def __init__(self, values, *, error_for=None):
        super().__init__(values)
        self.order, self.error_for = [], error_for or {}
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        self.pat_read = threading.Event()

    def get(self, name):
        with self._lock:
            self.order.append(name)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.02)
            if name in self.error_for:
                raise self.error_for[name]
            return super().get(name)
        finally:
            with self._lock:
                self.in_flight -= 1
            if name == "pat":
                self.pat_read.set()


class TestReadPatAhead:
    """The PAT is read right behind the webhook secrets, one read at a time, before anyone asks."""

    def make(self, source, previous_name="hook-old"):
        return RelaySecrets(source, webhook_name="hook", previous_name=previous_name, pat_name="pat", ttl=300)

    def test_pat_is_read_after_the_webhook_secrets_without_being_asked(self):
        source = OrderedSource({"hook": "current", "hook-old": "previous", "pat": "the-pat"})
        secrets = self.make(source)
        secrets.read_devops_pat_ahead()
        assert source.order == []  # nothing before the first webhook read
        assert secrets.webhook_secrets() == ["current", "previous"]
        assert source.pat_read.wait(5)
        assert source.order == ["hook", "hook-old", "pat"] and source.most_in_flight == 1
        assert secrets.devops_pat() == "the-pat" and source.reads["pat"] == 1

    def test_asked_after_the_webhook_read_the_pat_is_read_at_once(self):
        source = OrderedSource({"hook": "current", "pat": "the-pat"})
        secrets = self.make(source, previous_name=None)
        assert secrets.webhook_secrets() == ["current"]  # the first signature check, before the relay is built
        secrets.read_devops_pat_ahead()
        assert source.pat_read.wait(5)
        assert source.order == ["hook", "pat"] and secrets.devops_pat() == "the-pat" and source.reads["pat"] == 1

    def test_without_a_previous_secret_the_pat_follows_the_current_one(self):
        source = OrderedSource({"hook": "current", "pat": "the-pat"})
        secrets = self.make(source, previous_name=None)
        secrets.read_devops_pat_ahead()
        secrets.webhook_secrets()
        assert source.pat_read.wait(5)
        assert source.order == ["hook", "pat"]

    def test_a_failed_read_ahead_is_reported_only_when_the_pat_is_needed(self, caplog):
        source = OrderedSource({"hook": "current"}, error_for={"pat": SecretsUnavailable("vault throttled")})
        secrets = self.make(source, previous_name=None)
        secrets.read_devops_pat_ahead()
        with caplog.at_level("DEBUG"):
            assert secrets.webhook_secrets() == ["current"]  # the request that verifies is not affected
            assert source.pat_read.wait(5)
            time.sleep(0.05)
        assert [r for r in caplog.records if r.levelno >= 30] == []
        with pytest.raises(SecretsUnavailable, match="vault throttled"):
            secrets.devops_pat()
        assert source.order.count("pat") == 1  # the remembered failure, not a second read

    def test_no_read_ahead_when_the_webhook_read_fails(self):
        source = OrderedSource({"pat": "the-pat"}, error_for={"hook": SecretsUnavailable("vault down")})
        secrets = self.make(source, previous_name=None)
        secrets.read_devops_pat_ahead()
        with pytest.raises(SecretsUnavailable):
            secrets.webhook_secrets()
        time.sleep(0.1)
        assert source.order == ["hook"]

    def test_no_read_ahead_unless_asked(self):
        source = OrderedSource({"hook": "current", "pat": "the-pat"})
        secrets = self.make(source, previous_name=None)
        secrets.webhook_secrets()
        time.sleep(0.1)
        assert source.order == ["hook"]
