"""Join an existing Ray cluster (``RAY_ADDRESS``), or fail at once with one line that names the cause.

``ray.init(address=...)`` alone reports a token mismatch or an address where nothing answers as
``ConnectionError: Failed to connect to Ray cluster at <address>`` after ~20 s of retries (an unreachable host:
40 s of GCS timeouts), the cause only in C++ log lines on stderr; with ``RAY_AUTH_MODE=token`` and no token at all
the process aborts in Ray's C++ token loader. :func:`connect` checks first (:func:`check`), in well under a second:

1. the address parses (``host:port`` or ``auto``; ``ray://`` client addresses go to ``ray.init`` unchecked);
2. a TCP connection to the GCS port opens within ``timeout`` s;
3. with ``RAY_AUTH_MODE=token``, a token is configured (``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``,
   or ``~/.ray/auth_token``);
4. the GCS accepts this process's credentials (one ``GcsClient`` handshake; its C++ warning lines are dropped).

Each failure is a :class:`~xcore.errors.UsageError` (the CLI prints it as one line and exits 2). Ray's token auth
(2.60): ``ray start --head`` enables it when ``RAY_AUTH_MODE=token`` or, with the mode unset, when
``~/.ray/auth_token`` exists; a driver or node given an explicit address sends a token only with
``RAY_AUTH_MODE=token`` (``auto`` also picks up an existing token file, as ``ray.init`` does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator

from xcore.errors import UsageError

CONNECT_TIMEOUT = 5.0
TOKEN_WHERE = ("the cluster's token in RAY_AUTH_TOKEN (or in a file named by RAY_AUTH_TOKEN_PATH, default "
               "~/.ray/auth_token; `ray get-auth-token` on the head prints it)")
# Ray's C++ GCS-client warnings while a connection is refused or unauthenticated (what connect() reports instead).
NATIVE_NOISE = re.compile(r"^\[[\d\- :,]+ [IWE] \d+ \d+\] (gcs_client\.cc|rpc_client\.h)")


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """``ray.init(address=address)`` after :func:`check`; :class:`UsageError` (one line) when the cluster cannot be
    reached or rejects this process's credentials."""
    import ray
    import ray.exceptions

    check(address, timeout)
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ray.exceptions.AuthenticationError) as err:
        raise UsageError(f"cannot join the Ray cluster at RAY_ADDRESS={address}: {first_line(err)}") from None


def check(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Checks 1-4 of the module docstring without joining the cluster (imports Ray, starts nothing): a caller
    may run it before anything else starts, e.g. the CLI before Prefect."""
    target = bootstrap_address(address)
    if target is not None:
        check_reachable(address, target, timeout)
        check_credentials(address, target)


def bootstrap_address(address: str) -> str | None:
    """The GCS ``host:port`` that ``ray.init`` will dial for ``address`` (``localhost`` resolved as Ray does);
    ``None`` for a Ray Client ``ray://`` address."""
    from ray._private import services

    if address.startswith("ray://"):
        return None
    if address == "auto":
        enable_token_like_ray_init()
    try:
        target = services.canonicalize_bootstrap_address(address)
    except ConnectionError as err:  # "auto" and no Ray node on this host
        raise UsageError(f"RAY_ADDRESS={address}: {first_line(err)} Start a node here (`ray start --address "
                         "<head>:6379`), set RAY_ADDRESS to the head's host:port, or unset it for a private "
                         "local Ray instance") from None
    except ValueError:
        target = ""
    if target is None:
        raise UsageError(f"RAY_ADDRESS={address!r} names no cluster to join; unset it for a local instance")
    port = target.rpartition(":")[2]
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"RAY_ADDRESS={address!r} is not a Ray address: use the head's host:port (e.g. "
                         "10.0.0.5:6379), auto, or unset it for a private local Ray instance")
    return target


def enable_token_like_ray_init() -> None:
    """What ``ray.init(address="auto")`` does before connecting: token mode when ``RAY_AUTH_MODE`` is unset and a
    token exists (so the credential check sees the same mode)."""
    with contextlib.suppress(ImportError):
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def check_reachable(address: str, target: str, timeout: float) -> None:
    """A TCP connection to ``target`` opens within ``timeout`` s, else :class:`UsageError`."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        reason = (f"no answer within {timeout:g} s" if isinstance(err, TimeoutError)
                  else getattr(err, "strerror", None) or str(err))
        raise UsageError(f"no Ray cluster answers at RAY_ADDRESS={address} ({target}: {reason}): start the head "
                         f"(`ray start --head --port {port}`), fix RAY_ADDRESS, or unset it for a private local Ray "
                         "instance") from None


def check_credentials(address: str, target: str) -> None:
    """This process's auth settings suit the cluster at ``target`` (one GCS handshake), else :class:`UsageError`
    saying what to set."""
    import ray.exceptions
    from ray._raylet import AuthenticationMode, GcsClient, get_authentication_mode

    token_mode = get_authentication_mode() == AuthenticationMode.TOKEN
    if token_mode and not token_configured():
        raise UsageError(f"RAY_AUTH_MODE=token but no Ray auth token is configured for RAY_ADDRESS={address}: "
                         f"put {TOKEN_WHERE}")
    try:
        with native_stderr_filtered():
            GcsClient(address=target)
    except ray.exceptions.AuthenticationError:
        if token_mode:
            raise UsageError(f"Ray auth token mismatch: the cluster at RAY_ADDRESS={address} rejected the token from "
                             f"{token_source()}; use the cluster's token (`ray get-auth-token` on the head prints "
                             "it)") from None
        mode = os.environ.get("RAY_AUTH_MODE") or "unset"
        raise UsageError(f"Ray auth mismatch: the cluster at RAY_ADDRESS={address} requires token authentication "
                         f"and RAY_AUTH_MODE is {mode}: set RAY_AUTH_MODE=token and {TOKEN_WHERE}") from None
    except ray.exceptions.RpcError as err:
        raise UsageError(f"the Ray GCS at RAY_ADDRESS={address} ({target}) did not answer: "
                         f"{first_line(err)}") from None


def token_configured() -> bool:
    """True when Ray finds an auth token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``)."""
    from ray._raylet import AuthenticationTokenLoader

    return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))


def token_source() -> str:
    """Where this process's token comes from, in Ray's order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    return "~/.ray/auth_token"


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (Ray appends paragraphs of advice)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Capture file descriptor 2 (Ray's C++ logging writes there) for the block; write back every line except
    Ray's GCS-client connection warnings (:data:`NATIVE_NOISE`)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not NATIVE_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
