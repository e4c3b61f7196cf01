"""Run one task of one target: timeout, timing, failure classification. Never raises."""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
import traceback
from collections.abc import Callable

from agent.configtypes import scrub
from agent.plugin import (
    BAD_REPLY,
    INTERNAL,
    TIMEOUT,
    UNREACHABLE,
    Collector,
    CollectorError,
    Task,
    describe_oserror,
)
from agent.state import Result

log = logging.getLogger(__name__)

_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ECONNRESET,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
    errno.EADDRNOTAVAIL,
    errno.EPIPE,
    errno.ECONNABORTED,
}


def classify(exc: BaseException) -> tuple[str, str]:
    """(reason, one-line message) for an exception that escaped a collector."""
    if isinstance(exc, CollectorError):
        return exc.reason, exc.message
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return TIMEOUT, "timed out"
    if isinstance(exc, ssl.SSLError):
        return UNREACHABLE, f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and (exc.errno in _UNREACHABLE_ERRNOS or isinstance(exc, ConnectionError)):
        return UNREACHABLE, describe_oserror(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        return TIMEOUT, "connection timed out"
    if isinstance(exc, UnicodeDecodeError):
        return BAD_REPLY, f"undecodable reply: {exc.reason}"
    return INTERNAL, f"internal error ({type(exc).__name__}); see the agent log"


async def run_task(
    collector: Collector,
    task: Task,
    *,
    site: str,
    clock: Callable[[], float] = time.time,
) -> Result:
    target = collector.target.name
    started = clock()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(task.timeout):
            collected = await task.run()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the runner is the containment boundary
        reason, message = classify(exc)
        if reason == TIMEOUT and not isinstance(exc, CollectorError):
            message = f"no result within {task.timeout:g}s"
        if reason == INTERNAL:
            tb = scrub("".join(traceback.format_exception(exc)))
            log.error(
                "bug while collecting %s (%s%s):\n%s", target, collector.kind, f"/{task.name}" if task.name else "", tb
            )
        message = scrub(f"{target}: {message}" if not message.startswith(target) else message)
        return Result(
            target=target,
            task=task.name,
            kind=collector.kind,
            site=site,
            started=started,
            duration=time.perf_counter() - t0,
            ok=False,
            reason=reason,
            message=message,
        )
    failure = collected.failure
    extra = [
        Result(
            target=target,
            task=o.task,
            kind=collector.kind,
            site=site,
            started=o.started,
            duration=o.duration,
            ok=o.ok,
            reason=o.reason,
            message=scrub(o.message) if o.message is not None else None,
        )
        for o in collected.outcomes
    ]
    return Result(
        target=target,
        task=task.name,
        kind=collector.kind,
        site=site,
        started=started,
        duration=time.perf_counter() - t0,
        ok=failure is None,
        reason=failure[0] if failure else None,
        message=scrub(failure[1]) if failure else None,
        samples=collected.samples,
        partial_errors=[(r, scrub(m)) for r, m in collected.partial_errors],
        info=collected.info,
        extra=extra,
    )
