"""What :mod:`ntdump.symbols.path` needs of HTTP before any request is made: the options and the
miss signal. Apart from :mod:`ntdump.symbols.http` so that ``import ntdump`` does not load
``http.client``/``ssl``/``email`` (about 20 ms) for users who never name a server."""

from __future__ import annotations

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
