"""The environment of every process the agent starts (restic, borg, iperf3, backup commands).

A child never inherits the agent's environment: the agent's environment holds the values of
``${ENV}`` secrets (SNMP communities and passwords, push tokens, SSH key passphrases), and a child
has no business with them. :func:`child_env` builds the whole environment from a short list of
variables a tool needs to find itself, its locale and its home/cache directories, plus the
variables the target configures (``env:``). Secrets a tool needs arrive through the file or
command the tool documents (``--password-file``, ``BORG_PASSCOMMAND``) or through an ``env:``
value the operator configured for that target.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from agent.configtypes import Secret

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Passed from the agent's environment when set: where programs are, the locale, the user's home
# and the cache/config/temporary directories tools keep their state in. Nothing else.
PASSED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
)


def child_env(
    configured: Mapping[str, str | Secret] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment for a child: :data:`PASSED` from ``environ`` (the agent's own by
    default), ``PATH`` and ``LANG`` defaulted when unset, then the ``configured`` variables (a
    target's ``env:``; :class:`Secret` values revealed) on top."""
    src = os.environ if environ is None else environ
    env = {k: src[k] for k in PASSED if src.get(k)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    env.update(reveal_env(configured or {}))
    return env


def reveal_env(configured: Mapping[str, str | Secret]) -> dict[str, str]:
    """A target's ``env:`` as plain text, for the child that needs it (locally or over SSH, where
    the values go on the command's stdin, never on a command line: ``collectors.ssh``)."""
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in configured.items()}
