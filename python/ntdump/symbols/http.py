"""Fetching files from an HTTP(S) symbol server (``srv*…*https://msdl.microsoft.com/download/symbols``).

One GET per candidate (``name/KEY/name``, then ``name/KEY/name.pd_``, then ``name/KEY/file.ptr``),
with:

* TLS verification (the system's trust store, or ``ca_file``); an ``https`` server redirecting to
  plain ``http`` is refused;
* proxies from the environment (``https_proxy``, ``http_proxy``, ``no_proxy``; urllib's rules);
* a timeout per request (seconds) and bounded retries with exponential backoff for timeouts,
  connection errors, HTTP 5xx/429 and truncated bodies; 404/403/410 are an immediate miss;
* a size cap (``max_bytes``): a larger Content-Length is refused before reading, a longer body is
  cut off and refused;
* redirects only to the same host, unless the host is allowed (``allow_redirects``: ``True`` for
  any, or host names / ``*.suffix`` patterns). Microsoft's server answers with redirects to its
  blob storage, so ``*.blob.core.windows.net`` is allowed for ``msdl.microsoft.com`` by default;
* a tqdm progress bar on stderr for bodies over ``progress_min`` bytes (4 MiB).

Nothing here writes to disk: :mod:`ntdump.symbols.path` verifies what comes back and stores it.
"""

from __future__ import annotations

import http.client
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from ..errors import SymbolDownloadError
from .options import (  # noqa: F401 (re-exported: the names lived here)
    DEFAULT_REDIRECT_HOSTS,
    MICROSOFT_SERVER,
    USER_AGENT,
    HttpOptions,
    Miss,
    allowed_hosts,
    hop_refusal,
)


class _Redirects(urllib.request.HTTPRedirectHandler):
    # Some libraries (Volatility 3's resource opener) instantiate every BaseHandler subclass
    # with no arguments: then this handler is urllib's own, checking nothing.
    def __init__(self, origin: str | None = None, allowed: bool | tuple[str, ...] = True) -> None:
        super().__init__()
        self.origin = origin
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if self.origin is None:
            return super().redirect_request(req, fp, code, msg, headers, newurl)
        why = hop_refusal(req.full_url, urllib.parse.urljoin(req.full_url, newurl), self.allowed)
        if why is not None:
            fp.close()  # the redirect response: nothing of it is read
            raise SymbolDownloadError(why, url=req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _transient(code: int) -> bool:
    return code >= 500 or code in (408, 429)


def fetch(url: str, opts: HttpOptions) -> bytes:
    """The body at ``url``. Raises :class:`Miss` for a file the server does not have and
    :class:`SymbolDownloadError` (with ``url``) for every other failure, after the retries."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SymbolDownloadError(f"{url}: not an http(s) URL", url=url)
    allowed = allowed_hosts(parts.hostname or "", opts)
    ctx = ssl.create_default_context(cafile=opts.ca_file)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(),  # environment proxies
        urllib.request.HTTPSHandler(context=ctx),
        _Redirects(parts.hostname or "", allowed),
    )
    last: str = ""
    for attempt in range(opts.retries + 1):
        if attempt:
            time.sleep(opts.backoff * (2 ** (attempt - 1)))
        try:
            body = _get(opener, url, opts)
            opts.log.append(f"GET {url} -> {len(body)} bytes")
            return body
        except Miss:
            opts.log.append(f"GET {url} -> not found")
            raise
        except _Transient as e:
            last = str(e)
            opts.log.append(f"GET {url} -> {last} (attempt {attempt + 1})")
            continue
        except SymbolDownloadError as e:
            opts.log.append(f"GET {url} -> {e}")
            raise
    raise SymbolDownloadError(f"{url}: {last} (after {opts.retries + 1} attempts)", url=url)


class _Transient(Exception):
    pass


def _get(opener: urllib.request.OpenerDirector, url: str, opts: HttpOptions) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": opts.user_agent})
    try:
        resp = opener.open(req, timeout=opts.timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code in (404, 403, 410):
            raise Miss(url) from None
        if _transient(e.code):
            raise _Transient(f"HTTP {e.code}") from None
        raise SymbolDownloadError(f"{url}: HTTP {e.code} {e.reason}", url=url) from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            raise SymbolDownloadError(f"{url}: TLS failure: {e.reason}", url=url) from None
        if isinstance(e.reason, SymbolDownloadError):
            raise e.reason from None
        raise _Transient(f"connection failed: {e.reason}") from None
    except SymbolDownloadError:
        raise
    except TimeoutError as e:
        raise _Transient(f"timed out: {e}") from None
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        raise _Transient(f"connection failed: {e}") from None
    with resp:
        length = resp.headers.get("Content-Length")
        declared = int(length) if length and length.isdigit() else None
        if declared is not None and declared > opts.max_bytes:
            raise SymbolDownloadError(
                f"{url}: {declared} bytes, over the size cap of {opts.max_bytes}", url=url)
        bar = None
        if opts.progress and declared and declared >= opts.progress_min:
            try:
                from tqdm import tqdm

                bar = tqdm(total=declared, unit="B", unit_scale=True, file=sys.stderr,
                           desc=url.rsplit("/", 1)[-1], leave=False, disable=None)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                bar = None
        chunks: list[bytes] = []
        got = 0
        try:
            while True:
                try:
                    chunk = resp.read(1 << 16)
                except TimeoutError as e:
                    raise _Transient(f"timed out after {got} bytes: {e}") from None
                except http.client.IncompleteRead as e:
                    raise _Transient(f"truncated body ({got + len(e.partial)} bytes)") from None
                except (ConnectionError, OSError, http.client.HTTPException) as e:
                    raise _Transient(f"connection failed after {got} bytes: {e}") from None
                if not chunk:
                    break
                got += len(chunk)
                if got > opts.max_bytes:
                    raise SymbolDownloadError(
                        f"{url}: body passes the size cap of {opts.max_bytes} bytes", url=url)
                chunks.append(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if declared is not None and got != declared:
            raise _Transient(f"truncated body ({got} of {declared} bytes)")
        return b"".join(chunks)
