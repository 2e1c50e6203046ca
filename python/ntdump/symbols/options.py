"""What :mod:`ntdump.symbols.path` needs of HTTP before any request is made: the options and the
miss signal. Apart from :mod:`ntdump.symbols.http` so that ``import ntdump`` does not load
``http.client``/``ssl``/``email`` (about 20 ms) for users who never name a server."""

from __future__ import annotations

import fnmatch
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

MICROSOFT_SERVER = "https://msdl.microsoft.com/download/symbols"
"""Microsoft's public symbol server (named here for documentation; never used unless the user's
symbol path names it)."""
DEFAULT_REDIRECT_HOSTS = {"msdl.microsoft.com": ("*.blob.core.windows.net",)}
USER_AGENT = "ntdump-symsrv/1"


@dataclass
class HttpOptions:
    """How to talk to symbol servers. Times in seconds, sizes in bytes."""

    timeout: float = 30.0
    retries: int = 3
    """Extra attempts after the first, for transient failures only."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled each time."""
    max_bytes: int = 1 << 30
    allow_redirects: bool | Iterable[str] = ()
    """True: any host; else host names or ``*.suffix`` patterns (plus the defaults above)."""
    ca_file: str | None = None
    progress: bool = True
    progress_min: int = 4 << 20
    user_agent: str = USER_AGENT
    log: list[str] = field(default_factory=list)
    """One line per request made (method, URL, outcome) — what the tests and ``.reload`` show."""


class Miss(Exception):
    """The server does not have the file (404, 403, 410)."""


def allowed_hosts(origin_host: str, opts: HttpOptions) -> bool | tuple[str, ...]:
    """Hosts a request to ``origin_host`` may be sent on to: True (any), else host names or
    ``*.suffix`` patterns — the user's ``allow_redirects`` plus :data:`DEFAULT_REDIRECT_HOSTS`."""
    if opts.allow_redirects is True:
        return True
    extra = () if opts.allow_redirects is False else tuple(opts.allow_redirects or ())
    return extra + DEFAULT_REDIRECT_HOSTS.get(origin_host.lower(), ())


def hop_refusal(old_url: str, new_url: str, allowed: bool | tuple[str, ...],
                what: str = "a redirect") -> str | None:
    """Why ``what`` (a redirect, a ``file.ptr``) from ``old_url`` to ``new_url`` is refused, or
    None: never from https to anything else; another host (or port) only where ``allowed``."""
    old, new = urllib.parse.urlsplit(old_url), urllib.parse.urlsplit(new_url)
    if old.scheme == "https" and new.scheme != "https":
        return f"{old_url}: refused {what} from https to {new.scheme} ({new_url})"
    host = (new.hostname or "").lower()
    if host == (old.hostname or "").lower() and new.port == old.port:
        return None
    if allowed is True or (isinstance(allowed, tuple)
                           and any(fnmatch.fnmatchcase(host, p.lower()) for p in allowed)):
        return None
    return (f"{old_url}: refused {what} to another host ({host}); allow it with "
            f"allow_redirects=[{host!r}] if you trust it")
