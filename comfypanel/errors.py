"""One error hierarchy for everything the panel can run into.

Every error carries a ``user_message``: one plain sentence that says what is wrong and what to do.
Pages show ``user_message`` and nothing else (never a traceback); ``str(error)`` is the same
sentence, so an error that escapes into a log is still readable. No message ever contains a
credential: URLs are shown without their query string and without userinfo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "ComfyPanelError",
    "ConfigError",
    "CannotConnect",
    "RequestTimedOut",
    "AuthFailed",
    "Forbidden",
    "InsufficientCredits",
    "SubscriptionInactive",
    "RateLimited",
    "NotFound",
    "NotSupported",
    "ServerError",
    "BadResponse",
    "ResponseTooLarge",
    "PromptRejected",
    "NodeError",
    "UploadFailed",
    "InvalidInput",
    "JobTimedOut",
    "FileHostUnreachable",
    "DownloadLinkRefused",
    "LedgerUnavailable",
    "safe_url",
]


def safe_url(url: str) -> str:
    """The URL without userinfo, query string or fragment: safe to show and to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "") if host else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class ComfyPanelError(Exception):
    """Base class. ``user_message`` is the one sentence a page may show."""

    default_message = "Something went wrong while talking to the server. Please try again."

    def __init__(self, user_message: str | None = None, *, status: int | None = None) -> None:
        self.user_message = user_message or self.default_message
        self.status = status
        super().__init__(self.user_message)

    def __str__(self) -> str:  # never the raw server text or a traceback
        return self.user_message


class ConfigError(ComfyPanelError):
    """The connection settings themselves are unusable (bad URL, missing key)."""

    default_message = "The connection settings are incomplete. Enter a server address or an API key."


class CannotConnect(ComfyPanelError):
    """Nothing answered at the address (refused, DNS failure, TLS failure)."""

    def __init__(self, url: str, reason: str | None = None) -> None:
        self.url = safe_url(url)
        self.reason = reason
        super().__init__(
            f"Cannot reach the server at {self.url}. Check that ComfyUI is running there and that "
            "the address and port are right."
        )


class FileHostUnreachable(CannotConnect):
    """The server redirected a download to another host (Comfy Cloud's signed storage) that did not
    answer. Not the user's server: checking their address would not help."""

    def __init__(self, url: str, *, timed_out: bool = False) -> None:
        super().__init__(url)
        host = urlsplit(self.url).hostname or "another host"
        what = "did not answer in time" if timed_out else "could not be reached"
        self.user_message = (
            f"The file storage the server sent the download to ({host}) {what}, so the file could not "
            "be fetched; try again in a moment."
        )
        self.args = (self.user_message,)


class DownloadLinkRefused(ComfyPanelError):
    """The storage host the server redirected a download to refused the link (Comfy Cloud's signed
    URLs expire): nothing is wrong with the user's key or server."""

    def __init__(self, url: str, *, status: int | None = None) -> None:
        host = urlsplit(safe_url(url)).hostname or "another host"
        super().__init__(
            f"The file storage ({host}) refused the download link the server gave, probably because it "
            "expired; reload the page to get a fresh link.", status=status)


class RequestTimedOut(ComfyPanelError):
    def __init__(self, url: str, seconds: float | None = None) -> None:
        self.url = safe_url(url)
        wait = f" within {seconds:g} seconds" if seconds else ""
        super().__init__(
            f"The server at {self.url} did not answer{wait}. It may be busy or stuck; try again in "
            "a moment."
        )


class AuthFailed(ComfyPanelError):
    default_message = (
        "The server refused the credentials (401). Check the API key or access token and connect again."
    )


class Forbidden(ComfyPanelError):
    default_message = (
        "The server refused this request (403). It may block requests from this address or need "
        "other permissions; ask whoever runs it."
    )


class InsufficientCredits(ComfyPanelError):
    default_message = (
        "Your Comfy account has run out of credits (402). Add credits on platform.comfy.org, then "
        "generate again."
    )


class SubscriptionInactive(ComfyPanelError):
    """Comfy Cloud's 429: the subscription is inactive. Not a rate limit; retrying does not help."""

    default_message = (
        "Your Comfy Cloud subscription is not active (429), so the API cannot run jobs. Renew the "
        "subscription on platform.comfy.org; retrying will not help."
    )


class RateLimited(ComfyPanelError):
    def __init__(self, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        wait = f" Wait {retry_after:g} seconds and" if retry_after else " Wait a moment and"
        super().__init__(f"The server is receiving too many requests (429).{wait} try again.", status=429)


class NotFound(ComfyPanelError):
    default_message = "The server does not have what was asked for (404)."


class NotSupported(ComfyPanelError):
    """The server (its version, or Comfy Cloud) does not offer this operation."""

    default_message = "This server does not support that operation."


class ServerError(ComfyPanelError):
    def __init__(self, status: int, user_message: str | None = None) -> None:
        super().__init__(
            user_message
            or f"The server ran into an internal error ({status}). Check the server log, then try again.",
            status=status,
        )


class BadResponse(ComfyPanelError):
    """The answer was not what a ComfyUI server sends (HTML, broken JSON, wrong shape)."""

    default_message = (
        "The server answered with something that is not ComfyUI's API. Check that the address points "
        "to a ComfyUI server and not to another web page."
    )


class ResponseTooLarge(ComfyPanelError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"The server's answer was larger than the {limit // (1024 * 1024)} MB the panel accepts, so "
            "it was not read."
        )


class UploadFailed(ComfyPanelError):
    default_message = "The server did not store the uploaded file. Try the upload again."


class JobTimedOut(ComfyPanelError):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"The job did not finish within {seconds:g} seconds. It may still be running on the server; "
            "check the Queue page."
        )


class LedgerUnavailable(ComfyPanelError):
    """The panel's own job ledger (SQLite) cannot be written: disk full, read-only, locked, I/O error.

    ``kept``: the write is kept in memory and retried by itself (job records are never dropped);
    otherwise (a favourite, a tag, a delete) the user has to try again. The sentence names no path
    (every user of the panel sees it); ``path`` is for the log.
    """

    _WHY = {
        "full": ("its disk is full", "free some space there"),
        "readonly": ("its ledger file is read-only",
                     "make the file writable (or set COMFYPANEL_LEDGER to a writable file)"),
        "busy": ("another program keeps its ledger file locked", "close that program"),
        "io": ("its ledger file cannot be written (a disk error)", "check that disk"),
        "open": ("its ledger file cannot be opened", "check that the file and its folder exist and can be read"),
    }

    def __init__(self, kind: str, path: str, *, kept: bool = True) -> None:
        self.kind = kind if kind in self._WHY else "io"
        self.path = path
        self.kept = kept
        why, fix = self._WHY[self.kind]
        then = ("and the waiting records are then saved by themselves" if kept
                else "then try again")
        super().__init__(f"The panel cannot save job records because {why}; whoever runs the panel needs to "
                         f"{fix}, {then}.")


class InvalidInput(ComfyPanelError):
    """The user's own input (a value, a file) cannot be used; nothing was sent."""


# ---------------------------------------------------------------------------------------------
# Prompt validation errors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeError:
    """One per-node validation error from ``node_errors``, with a plain sentence for users."""

    node_id: str
    class_type: str
    type: str
    input_name: str | None
    message: str  # the plain sentence
    server_message: str = ""  # ComfyUI's own message + details, for logs and the admin
    received_value: Any = None
    node_title: str | None = None

    @property
    def node_label(self) -> str:
        return _node_label(self.node_id, self.class_type, self.node_title)


def _node_label(node_id: str, class_type: str | None, title: str | None) -> str:
    name = title or class_type or "A node"
    return f"{name} (node {node_id})"


def _input_label(name: str | None) -> str:
    return f"“{name.replace('_', ' ')}”" if name else "an input"


def _node_error_sentence(label: str, err: Mapping[str, Any]) -> str:
    etype = str(err.get("type", ""))
    extra = err.get("extra_info") if isinstance(err.get("extra_info"), Mapping) else {}
    input_name = extra.get("input_name") or (err.get("details") if etype == "required_input_missing" else None)
    inp = _input_label(input_name)
    details = str(err.get("details") or "")
    received = extra.get("received_value")
    config = extra.get("input_config")
    limits = config[1] if isinstance(config, (list, tuple)) and len(config) > 1 and isinstance(config[1], Mapping) else {}
    if etype == "required_input_missing":
        return f"{label} needs a value or a connection for {inp}."
    if etype == "bad_linked_input":
        return f"{label}: the connection to {inp} is broken; reconnect it in the workflow."
    if etype == "return_type_mismatch":
        got = extra.get("received_type") or "another type"
        want = config[0] if isinstance(config, (list, tuple)) and config else "the expected type"
        return f"{label}: {inp} is connected to a {got} output but needs {want}; fix the connection in the workflow."
    if etype in ("exception_during_validation", "exception_during_inner_validation"):
        return (
            f"{label} could not be checked: a connection points to a node or output that does not "
            "exist. Re-export the workflow from ComfyUI."
        )
    if etype == "invalid_input_type":
        want = config[0] if isinstance(config, (list, tuple)) and config else "valid"
        return f"{label}: {inp} must be a {want} value."
    if etype == "value_smaller_than_min":
        low = limits.get("min")
        bound = f" at least {low:g}" if isinstance(low, (int, float)) else " larger"
        return f"{label}: {inp} is {received!r}, but it must be{bound}."
    if etype == "value_bigger_than_max":
        high = limits.get("max")
        bound = f" at most {high:g}" if isinstance(high, (int, float)) else " smaller"
        return f"{label}: {inp} is {received!r}, but it must be{bound}."
    if etype == "value_not_in_list":
        # details: "ckpt_name: 'sd15.safetensors' not in []" or "(list of length N)"
        value = details.split(":", 1)[1].split(" not in ", 1)[0].strip() if ":" in details else ""
        value = value.strip("'\"") or "the chosen value"
        if " not in []" in details:
            return (
                f"{label}: “{value}” is not available for {inp}, and the server has no choices for it "
                "at all (is the model installed?)."
            )
        return f"{label}: “{value}” is not available for {inp} on this server; pick one of its choices."
    if etype == "custom_validation_failed":
        if "Invalid image file" in details:
            name = details.rsplit(":", 1)[-1].strip()
            return f"{label}: the image “{name}” is not on the server; upload it or pick another one."
        return f"{label}: {inp} was rejected by the node's own check ({details or 'no reason given'})."
    if etype == "dependency_cycle":
        return f"{label} is part of a loop of connections; a workflow cannot feed a node its own output."
    msg = str(err.get("message") or "invalid value")
    return f"{label}: {inp} was rejected ({msg})."


class PromptRejected(ComfyPanelError):
    """``POST /prompt`` refused the workflow (400), or accepted it only in part (200 + node_errors)."""

    _TOP_LEVEL = {
        "no_prompt": "The request had no workflow in it. Load a workflow and try again.",
        "prompt_no_outputs": (
            "The workflow has no output node (such as Save Image or Preview Image), so there is "
            "nothing to run. Add one in ComfyUI and export it again."
        ),
        "invalid_prompt_id": "The server refused the job id the panel made. Update the panel.",
        "prompt_outputs_failed_validation": "The server refused the workflow because some values are not valid.",
    }

    def __init__(
        self,
        error_type: str,
        server_message: str = "",
        details: str = "",
        node_errors: tuple[NodeError, ...] = (),
        *,
        status: int | None = 400,
    ) -> None:
        self.error_type = error_type
        self.server_message = server_message
        self.details = details
        self.node_errors = node_errors
        super().__init__(self._sentence(), status=status)

    def _sentence(self) -> str:
        if self.node_errors:
            first = self.node_errors[0].message
            more = len(self.node_errors) - 1
            return first if not more else f"{first} ({more} more problem{'s' if more > 1 else ''} listed below.)"
        if self.error_type == "invalid_prompt":
            if "does not exist" in self.server_message:
                cls = self.server_message.split("node ", 1)[-1].split(" does not exist", 1)[0]
                return (
                    f"This workflow uses the node type “{cls}”, which this server does not have. "
                    "Install the custom node that provides it, or use another workflow."
                )
            if "class_type" in self.server_message:
                return (
                    "This file is not in ComfyUI's API format (a node has no class_type). Load the "
                    "workflow file as it is, or export it with “Export (API)”."
                )
        return self._TOP_LEVEL.get(
            self.error_type,
            f"The server refused the workflow ({self.server_message or self.error_type}).",
        )

    @classmethod
    def from_response(
        cls, body: Mapping[str, Any], *, status: int | None = 400, prompt: Mapping[str, Any] | None = None
    ) -> "PromptRejected":
        """Build from ComfyUI's JSON error envelope; ``prompt`` supplies node titles when given."""
        error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
        if isinstance(body.get("error"), str):  # some proxies and Cloud send {"error": "text"}
            error = {"type": "invalid_prompt", "message": body["error"]}
        node_errors = parse_node_errors(body.get("node_errors"), prompt)
        return cls(
            str(error.get("type") or ("prompt_outputs_failed_validation" if node_errors else "unknown")),
            str(error.get("message") or ""),
            str(error.get("details") or ""),
            node_errors,
            status=status,
        )


def parse_node_errors(raw: Any, prompt: Mapping[str, Any] | None = None) -> tuple[NodeError, ...]:
    """``node_errors`` → plain-sentence ``NodeError`` objects, in node-id order."""
    if not isinstance(raw, Mapping):
        return ()
    out: list[NodeError] = []
    for node_id in sorted(raw, key=lambda k: (len(str(k)), str(k))):
        entry = raw[node_id]
        if not isinstance(entry, Mapping):
            continue
        class_type = str(entry.get("class_type") or "")
        title = None
        if prompt and isinstance(prompt.get(node_id), Mapping):
            meta = prompt[node_id].get("_meta")
            if isinstance(meta, Mapping) and isinstance(meta.get("title"), str):
                title = meta["title"]
        label = _node_label(str(node_id), class_type, title)
        for err in entry.get("errors") or ():
            if not isinstance(err, Mapping):
                continue
            extra = err.get("extra_info") if isinstance(err.get("extra_info"), Mapping) else {}
            input_name = extra.get("input_name")
            if input_name is None and err.get("type") == "required_input_missing":
                input_name = err.get("details") or None
            out.append(
                NodeError(
                    node_id=str(node_id),
                    class_type=class_type,
                    type=str(err.get("type") or ""),
                    input_name=input_name,
                    message=_node_error_sentence(label, err),
                    server_message=" — ".join(str(x) for x in (err.get("message"), err.get("details")) if x),
                    received_value=extra.get("received_value"),
                    node_title=title,
                )
            )
    return tuple(out)

