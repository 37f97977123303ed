"""A process-wide switch that makes real (network) model calls fail, for test suites.

A test that forgets to install a scripted model must not quietly spend money or leak data to a real API. With
the switch on, network providers refuse before they send anything; endpoints on this machine (127.0.0.1,
localhost, ::1 — the stand-in Messages server) stay allowed, so the real SDK can still be tested over HTTP.

The switch is on when :func:`forbid_network_models` was called, or when the environment sets
``RUBOT_FORBID_NETWORK_MODELS=1`` and no explicit call said otherwise. Both functions work as a plain call and
as a context manager that restores the previous setting on exit::

    forbid_network_models()              # for the rest of the process (e.g. in conftest.py)
    with allow_network_models():         # a block that really needs the network
        ...
"""

from __future__ import annotations

import ipaddress
import os
from types import TracebackType
from urllib.parse import urlsplit

from pipeline.errors import ModelError

ENV_VAR = "RUBOT_FORBID_NETWORK_MODELS"
_TRUE = {"1", "true", "yes", "on"}

# None: follow the environment variable. True/False: an explicit call decided, and wins over the environment.
_forbidden: bool | None = None


class NetworkModelsSetting:
    """The result of :func:`forbid_network_models` / :func:`allow_network_models`; restores on ``__exit__``."""

    def __init__(self, forbidden: bool) -> None:
        global _forbidden
        self._previous = _forbidden
        _forbidden = forbidden

    def __enter__(self) -> NetworkModelsSetting:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _forbidden
        _forbidden = self._previous


def forbid_network_models() -> NetworkModelsSetting:
    """Refuse real model calls from now on (or until the ``with`` block ends)."""
    return NetworkModelsSetting(True)


def allow_network_models() -> NetworkModelsSetting:
    """Allow real model calls from now on (or until the ``with`` block ends), even if the environment forbids."""
    return NetworkModelsSetting(False)


def network_models_forbidden() -> bool:
    """Whether real model calls are currently refused."""
    if _forbidden is not None:
        return _forbidden
    return os.environ.get(ENV_VAR, "").strip().lower() in _TRUE


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine (127.0.0.0/8, ::1 or ``localhost``)."""
    host = urlsplit(str(url)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_model_call(provider: str, base_url: str) -> None:
    """Raise :class:`ModelError` if a call from ``provider`` to ``base_url`` is forbidden right now."""
    if network_models_forbidden() and not is_loopback_url(base_url):
        raise ModelError(
            f"real model calls are disabled in this process ({provider} at {urlsplit(str(base_url)).hostname}); "
            f"use a scripted model or the stand-in server, or call allow_network_models() / unset {ENV_VAR}",
            reason="model_calls_forbidden",
        )
