"""HTTP transport: one ``requests.Session`` per client, with the policies every call needs.

- A timeout on every call (connect, read).
- urllib3 ``Retry`` with backoff for idempotent GETs only. A ``POST /prompt`` is never sent twice:
  POSTs get no retry at all, not even on a connection reset.
- ``Retry-After`` is honoured (by urllib3 for retried GETs, and carried on ``RateLimited``).
- Redirects are followed by hand: same origin keeps the auth headers, another host gets a clean
  request **without** them (Comfy Cloud's ``/api/view`` answers 302 to a signed storage URL; plain
  ``requests`` would forward custom headers such as ``X-API-Key``).
- Response size caps, read in chunks; non-JSON and ``500 text/plain`` bodies become typed errors.
- A logging record factory that redacts ``X-API-Key``, bearer tokens and ``token=`` everywhere.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import errors as E
from .connection import Connection

__all__ = ["Transport", "Reply", "redact", "install_log_redaction", "DEFAULT_TIMEOUT"]

log = logging.getLogger("comfypanel.transport")

# (connect, read) seconds. Connect is short: a wrong port should fail fast. Read covers the slowest
# ordinary answer, /object_info on a server with many custom nodes.
DEFAULT_TIMEOUT = (5.0, 60.0)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # a JSON answer or a generated image larger than this is refused
_MAX_REDIRECTS = 5
_CHUNK = 256 * 1024

_REDACTIONS = [
    (re.compile(r"(?i)(x-api-key['\"]?\s*[:=]\s*['\"]?)[^'\"\s,;}&]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)((?:^|[?&;\s\"'])(?:token|api_key|apikey|key|sig)=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)((?:api_key_comfy_org|auth_token_comfy_org)['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"), r"\1[redacted]"),
]


def redact(text: str) -> str:
    """Remove credentials from a string (headers, URLs, JSON) before it is logged or shown."""
    for pattern, repl in _REDACTIONS:
        text = pattern.sub(repl, text)
    return text


_factory_installed = False


def install_log_redaction() -> None:
    """Redact every log record of the process (ours, urllib3's, websocket-client's). Idempotent.

    A record factory sees records of every logger, including the ones urllib3 writes at DEBUG with
    full URLs; it holds no credential itself, only patterns.
    """
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave the record alone
            return record
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str  # without query string (safe to show)

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The parsed JSON body; ``None`` for an empty body.

        Raises:
            BadResponse: the body is not JSON (an HTML page, a proxy's error text).
        """
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise E.BadResponse() from None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Transport:
    """Sends requests for one ``Connection``. Thread-safe for concurrent GETs (requests' pool)."""

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retries: int = 2,
        session: requests.Session | None = None,
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.session = session or requests.Session()
        self.session.trust_env = False  # no proxy or netrc credentials from the environment
        # Cloud's 429 means "subscription inactive": retrying it is pointless.
        statuses = (502, 503, 504) if connection.is_cloud else (429, 502, 503, 504)
        retry = Retry(
            total=retries,
            connect=retries,
            # once after a read error: a dropped connection is worth one more try, but a server that
            # took the whole read timeout to say nothing will not answer the third time either
            read=min(retries, 1),
            status=retries,
            backoff_factor=0.3,
            status_forcelist=statuses,
            allowed_methods=frozenset({"GET", "HEAD"}),  # never POST: a prompt must not be queued twice
            respect_retry_after_header=True,
            raise_on_status=False,
            redirect=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=8)
        no_retry = HTTPAdapter(max_retries=Retry(total=0, connect=0, read=0, redirect=False, raise_on_status=False))
        self._retrying = adapter
        self._plain = no_retry
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._post_session = requests.Session()
        self._post_session.trust_env = False
        self._post_session.mount("http://", no_retry)
        self._post_session.mount("https://", no_retry)
        # Redirect targets on other hosts: a bare session that has never seen a credential.
        self._foreign = requests.Session()
        self._foreign.trust_env = False

    def close(self) -> None:
        for s in (self.session, self._post_session, self._foreign):
            s.close()

    # ------------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Any = None,
        files: Any = None,
        timeout: tuple[float, float] | float | None = None,
        ok: tuple[int, ...] = (),
        max_bytes: int | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> Reply:
        """Send one request and return the final reply (after redirects).

        ``ok`` lists statuses ≥ 400 the caller handles itself (e.g. 400 for a rejected prompt,
        404 for "not there"). Every other status ≥ 400 raises. ``retry=False`` sends a GET once
        (a liveness probe that must see the server being down).

        Raises:
            CannotConnect, RequestTimedOut, AuthFailed, Forbidden, InsufficientCredits,
            SubscriptionInactive, RateLimited, NotFound, ServerError, ResponseTooLarge.
        """
        url = self.connection.api_url(path) if not path.startswith("http") else path
        hdrs = dict(self.connection.headers())
        if headers:
            hdrs.update(headers)
        limit = max_bytes or self.max_bytes
        session = self.session if retry and method.upper() in ("GET", "HEAD") else self._post_session
        origin = _origin(url)
        reply = None
        for _hop in range(_MAX_REDIRECTS + 1):
            same_origin = _origin(url) == origin
            # errors name the server the user chose, not the API route that failed
            shown = self.connection.display_url if same_origin else url
            sess = session if same_origin else self._foreign
            send_headers = hdrs if same_origin else {}
            try:
                resp = sess.request(
                    method,
                    url,
                    params=params if same_origin else None,
                    json=json_body if same_origin else None,
                    data=data if same_origin else None,
                    files=files if same_origin else None,
                    headers=send_headers,
                    timeout=timeout or self.timeout,
                    allow_redirects=False,
                    stream=True,
                )
            except requests.exceptions.ConnectTimeout:
                if not same_origin:
                    raise E.FileHostUnreachable(url, timed_out=True) from None
                raise E.CannotConnect(shown) from None
            except requests.exceptions.ReadTimeout:
                if not same_origin:
                    raise E.FileHostUnreachable(url, timed_out=True) from None
                t = timeout or self.timeout
                raise E.RequestTimedOut(shown, t[1] if isinstance(t, tuple) else t) from None
            except requests.exceptions.RetryError as exc:
                status = _status_from_retry_error(exc)
                if status:
                    reply = Reply(status, {}, b"", E.safe_url(url))
                    break
                raise E.CannotConnect(shown) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.InvalidURL,
                    requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema) as exc:
                if not same_origin:  # a redirect target (Cloud's signed storage), not the user's server
                    raise E.FileHostUnreachable(url, timed_out="timed out" in str(exc)) from None
                if "Read timed out" in str(exc):
                    raise E.RequestTimedOut(shown) from None
                raise E.CannotConnect(shown) from None
            with resp:
                if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                    nxt = urljoin(url, resp.headers["Location"])
                    if urlsplit(nxt).scheme not in ("http", "https"):
                        raise E.BadResponse("The server redirected to an address the panel will not follow.")
                    log.debug("redirect %s -> %s (%s)", E.safe_url(url), E.safe_url(nxt),
                              "same origin" if _origin(nxt) == origin else "other host, no credentials")
                    if resp.status_code == 303 or method.upper() != "GET":
                        method = "GET"
                        json_body = data = files = None
                    url, params = nxt, None
                    continue
                body = _read_capped(resp, limit)
                reply = Reply(resp.status_code, dict(resp.headers), body, E.safe_url(url))
            break
        else:
            raise E.BadResponse("The server redirected too many times; check its address.")
        assert reply is not None
        if reply.status >= 400 and reply.status not in ok:
            if _origin(url) != origin and reply.status in (400, 401, 403):
                # Cloud's signed storage link, refused: expired (or clock skew), not the user's key
                raise E.DownloadLinkRefused(url, status=reply.status)
            raise self._error_for(reply)
        return reply

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` + JSON body; HTML or broken JSON raises ``BadResponse``."""
        reply = self.request(method, path, **kwargs)
        if reply.body.strip() and reply.content_type == "text/html":
            raise E.BadResponse()
        return reply.json()

    # ------------------------------------------------------------------------------------------
    def _error_for(self, reply: Reply) -> E.ComfyPanelError:
        status = reply.status
        cloud = self.connection.is_cloud
        if status == 401:
            return E.AuthFailed(status=401)
        if status == 402:
            return E.InsufficientCredits(status=402)
        if status == 429:
            if cloud:
                return E.SubscriptionInactive(status=429)
            ra = reply.headers.get("Retry-After")
            try:
                return E.RateLimited(float(ra) if ra else None)
            except ValueError:
                return E.RateLimited(None)
        if status == 403:
            return E.Forbidden(status=403)
        if status == 404:
            return E.NotFound(status=404)
        if status == 413:
            return E.InvalidInput("The file is larger than the server accepts (413). Use a smaller file.", status=413)
        if status == 503 and cloud:
            return E.ServerError(503, "Comfy Cloud is temporarily unavailable (503). Try again in a few minutes.")
        if status >= 500:
            return E.ServerError(status)
        return E.ComfyPanelError(f"The server refused the request ({status}).", status=status)


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or (443 if p.scheme == "https" else 80)
    return (p.scheme, (p.hostname or "").lower(), port)


def _read_capped(resp: requests.Response, limit: int) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise E.ResponseTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise E.ResponseTooLarge(limit)
            chunks.append(chunk)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        raise E.BadResponse("The connection broke while the server was answering. Try again.") from None
    return b"".join(chunks)


def _status_from_retry_error(exc: Exception) -> int | None:
    m = re.search(r"too many (\d{3}) error", str(exc))
    return int(m.group(1)) if m else None
