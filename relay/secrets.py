"""The relay's secrets by role, cached, with one vault read in flight per secret.

In Azure the source is Key Vault through the app's managed identity (``relay.keyvault``);
locally, the environment (``EnvironmentSecretSource``), with a warning. Values are cached
for a TTL, so a burst of deliveries costs one vault read per secret per TTL. While the vault
is slow or down, a request waits at most ``wait`` seconds for the one read in flight and then
answers 503; a failed read is remembered for a short back-off so an outage does not queue
every request behind the vault.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from relay.budgets import SECRET_FAILURE_MEMORY_SECONDS, SECRET_WAIT_SECONDS
from relay.ports import DependencyUnavailable, SecretSource, SecretsUnavailable
from webhook.errors import ConfigurationError

log = logging.getLogger("relay.secrets")
ROTATION_REFRESH_INTERVAL_SECONDS = 30.0
# A secret found missing is looked up again this soon (an operator may be adding it now).
MISSING_SECRET_RECHECK_SECONDS = 30.0


class EnvironmentSecretSource:
    """Secrets from environment variables (local development only)."""

    description = "the environment"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        return self._environ.get(name) or None


@dataclass
class _Slot:
    """What is known about one secret: its value, its last failure, the read in flight."""

    value: str | None = None
    fetched_at: float = -math.inf
    failure: DependencyUnavailable | None = None
    failed_at: float = -math.inf
    inflight: threading.Event | None = None


class RelaySecrets:
    """Secrets by role (thread-safe).

    Args:
        webhook_name / previous_name / pat_name: names in the source (Key Vault secret
            names, or environment variable names locally).
        wait: how long a request waits for a read in flight before answering 503.
    """

    def __init__(
        self,
        source: SecretSource,
        *,
        webhook_name: str,
        previous_name: str | None,
        pat_name: str,
        ttl: float,
        wait: float = SECRET_WAIT_SECONDS,
        failure_memory: float = SECRET_FAILURE_MEMORY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._webhook_name = webhook_name
        self._previous_name = previous_name
        self._pat_name = pat_name
        self._ttl = ttl
        self._wait = wait
        self._failure_memory = failure_memory
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._last_rotation_refresh = -math.inf
        self._pat_ahead = False
        self.reads = 0

    @property
    def source_description(self) -> str:
        return self._source.description

    def _fresh(self, slot: _Slot, now: float) -> bool:
        ttl = self._ttl if slot.value is not None else min(self._ttl, MISSING_SECRET_RECHECK_SECONDS)
        return now - slot.fetched_at < ttl

    def _start(self, name: str, now: float) -> tuple[_Slot, threading.Event | None]:
        """``name``'s slot, and the read to wait for: ``None`` when the cache or a remembered
        failure answers. Starts the read if none is in flight. Call with ``_lock`` held."""
        slot = self._slots.setdefault(name, _Slot())
        if self._fresh(slot, now) or (slot.failure is not None and now - slot.failed_at < self._failure_memory):
            return slot, None
        if slot.inflight is None:
            slot.inflight = threading.Event()
            threading.Thread(target=self._fetch, args=(name, slot), daemon=True, name="relay-secret").start()
        return slot, slot.inflight

    def _get(self, name: str) -> str | None:
        with self._lock:
            now = self._clock()
            slot, done = self._start(name, now)
            if done is None:
                if self._fresh(slot, now):
                    return slot.value
                assert slot.failure is not None
                left = math.ceil(self._failure_memory - (now - slot.failed_at))
                raise SecretsUnavailable(slot.failure.detail, retry_after=max(left, 1))
        if not done.wait(self._wait):
            raise SecretsUnavailable(
                f"{self._source.description} has not answered for secret {name!r} within {self._wait:g} s",
                retry_after=5,
            )
        with self._lock:
            if slot.failure is not None and slot.failed_at >= slot.fetched_at:
                raise SecretsUnavailable(slot.failure.detail, retry_after=slot.failure.retry_after)
            return slot.value

    def _fetch(self, name: str, slot: _Slot) -> None:
        """The one read in flight for ``name``; its outcome lands in ``slot``."""
        try:
            value = self._source.get(name)
        except DependencyUnavailable as exc:
            failure: DependencyUnavailable | None = exc
        except Exception as exc:  # a bug in a source must not leave waiters hanging
            log.exception("secret read crashed for %r", name)
            failure = SecretsUnavailable(f"reading secret {name!r} failed ({type(exc).__name__})")
        else:
            failure = None
        with self._lock:
            now = self._clock()
            self.reads += 1
            if failure is None:
                slot.value, slot.fetched_at, slot.failure = value, now, None
            else:
                slot.failure, slot.failed_at = failure, now
            event, slot.inflight = slot.inflight, None
            if self._pat_ahead and failure is None and name == (self._previous_name or self._webhook_name):
                self._pat_ahead = False  # the last webhook read is done: its connection is free
                self._start(self._pat_name, now)
        if event is not None:
            event.set()

    def _required(self, name: str, role: str) -> str:
        value = self._get(name)
        if not value:
            raise ConfigurationError(f"{role} secret {name!r} not found in {self._source.description}")
        return value

    def webhook_secrets(self) -> list[str]:
        """The current webhook secret, then the previous one when configured.

        Raises:
            ConfigurationError: the current secret does not exist.
            SecretsUnavailable: the source could not be read in time.
        """
        secrets = [self._required(self._webhook_name, "webhook")]
        if self._previous_name:
            previous = self._get(self._previous_name)
            if previous:
                secrets.append(previous)
        return secrets

    def refresh_webhook_secrets(self) -> bool:
        """Drop cached webhook secrets so the next read sees a rotation; at most once per 30 s.

        Returns:
            True when the cache was dropped (worth verifying again).
        """
        with self._lock:
            now = self._clock()
            if now - self._last_rotation_refresh < ROTATION_REFRESH_INTERVAL_SECONDS:
                return False
            self._last_rotation_refresh = now
            for name in (self._webhook_name, self._previous_name):
                if name and name in self._slots:
                    self._slots[name].fetched_at = -math.inf
            return True

    def devops_pat(self) -> str:
        """The Azure DevOps PAT. Raises like ``webhook_secrets``."""
        return self._required(self._pat_name, "Azure DevOps PAT")

    def read_devops_pat_ahead(self) -> None:
        """Read the PAT in the background as soon as the webhook secrets have been read.

        The first answer needs the PAT only after verifying and claiming, so the read runs
        meanwhile, on the connection the webhook read opened: a second connection at once would
        cost a TLS handshake and its CA bundle load. A failed read is remembered like any other
        and raised by ``devops_pat()`` only, when a run needs the PAT. Returns at once.

        The relay (and so its prefetch) is built after the first signature check, so the
        webhook read is usually over by now: then the PAT read starts at once.
        """
        with self._lock:
            last = self._slots.get(self._previous_name or self._webhook_name)
            if last is not None and last.inflight is None and last.value is not None:
                self._start(self._pat_name, self._clock())
            else:
                self._pat_ahead = True

    def invalidate_devops_pat(self) -> None:
        with self._lock:
            if self._pat_name in self._slots:
                self._slots[self._pat_name].fetched_at = -math.inf
