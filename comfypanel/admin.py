"""The admin gate: who may run destructive actions on the Admin page. No Streamlit here.

Two ways in, both configured by the operator in ``.streamlit/secrets.toml``::

    [comfyui.admin]
    # a hash made with:  python -m comfypanel.admin hash-password
    password_hash = "scrypt$16384$8$1$<salt>$<hash>"
    # or, when the operator configured st.login (OIDC): these e-mails are admins without a password
    allowed_emails = ["alice@example.com", "bob@example.com"]

(``password_sha256 = "<hex>"`` is accepted too, for operators who cannot run Python; scrypt is
better because it is salted and slow.) A plain ``password`` is refused on purpose.

Wrong passwords are rate-limited twice: per browser session (5 tries, then a lockout that doubles
with every further miss) and per process (a looser limit shared by every session, so opening new
sessions does not give an attacker fresh tries). The comparison is constant-time.

Everyone who is not an admin still sees the read-only health of the server.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import secrets as _secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = [
    "AdminConfig",
    "AttemptLimiter",
    "GateResult",
    "check_password",
    "hash_password",
    "verify_password",
    "main",
]

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_MAX_PASSWORD = 1024


# -- hashing ---------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = _SCRYPT_N, r: int = _SCRYPT_R, p: int = _SCRYPT_P,
                  salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (URL-safe base64, no padding): what goes into ``password_hash``."""
    if not password:
        raise ValueError("The admin password must not be empty.")
    salt = salt or _secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (a ``scrypt$…`` string or a SHA-256 hex digest,
    optionally written ``sha256$<hex>``). Constant-time; a malformed ``stored`` never matches."""
    if not isinstance(password, str) or not isinstance(stored, str) or len(password) > _MAX_PASSWORD:
        return False
    stored = stored.strip()
    try:
        if stored.startswith("scrypt$"):
            _, n, r, p, salt, want = stored.split("$")
            n_i, r_i, p_i = int(n), int(r), int(p)
            if not (2 <= n_i <= 2**20 and 1 <= r_i <= 32 and 1 <= p_i <= 16):
                return False
            expected = _unb64(want)
            got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=n_i, r=r_i, p=p_i,
                                 dklen=len(expected), maxmem=128 * 1024 * 1024)
            return hmac.compare_digest(got, expected)
        hex_digest = stored.split("$", 1)[1] if stored.startswith("sha256$") else stored
        if len(hex_digest) != 64:
            return False
        got_hex = hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(got_hex, hex_digest.lower())
    except (ValueError, TypeError):
        return False


# -- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdminConfig:
    """What the operator configured under ``[comfyui.admin]``."""

    password_hash: str | None = field(default=None, repr=False)
    allowed_emails: frozenset[str] = frozenset()
    problem: str | None = None  # a configuration mistake, one sentence for the operator

    @property
    def has_password(self) -> bool:
        return bool(self.password_hash)

    @property
    def configured(self) -> bool:
        return self.has_password or bool(self.allowed_emails)

    @classmethod
    def from_secrets(cls, section: Mapping[str, Any] | None) -> "AdminConfig":
        if not isinstance(section, Mapping):
            return cls()
        problem = None
        pw_hash = None
        for key in ("password_hash", "password_sha256"):
            value = section.get(key)
            if isinstance(value, str) and value.strip():
                pw_hash = value.strip()
                break
        if pw_hash and not (pw_hash.startswith("scrypt$") or len(pw_hash.split("$")[-1]) == 64):
            problem = ("The admin password hash in the secrets is not in a known format; make a new one with "
                       "“python -m comfypanel.admin hash-password”.")
            pw_hash = None
        if section.get("password") and not pw_hash:
            problem = ("The secrets hold a plain admin password, which the panel does not accept. Replace it "
                       "with password_hash from “python -m comfypanel.admin hash-password”.")
        emails = section.get("allowed_emails") or ()
        if isinstance(emails, str):
            emails = [e for e in emails.replace(";", ",").split(",")]
        allowed = frozenset(str(e).strip().lower() for e in emails if str(e).strip())
        return cls(pw_hash, allowed, problem)

    def email_allowed(self, email: str | None) -> bool:
        """True when ``email`` (from ``st.user.email`` after ``st.login``) is on the allow-list."""
        return bool(email) and isinstance(email, str) and email.strip().lower() in self.allowed_emails


# -- rate limiting ----------------------------------------------------------------------------------
class AttemptLimiter:
    """Counts wrong attempts; after ``free_tries`` misses, each further miss locks for
    ``base_lockout * 2**(misses - free_tries)`` seconds (capped at ``max_lockout``). A success resets.

    Thread-safe: the per-process instance is shared by every session.
    """

    def __init__(self, free_tries: int = 5, base_lockout: float = 30.0, max_lockout: float = 15 * 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_tries = free_tries
        self.base_lockout = base_lockout
        self.max_lockout = max_lockout
        self._clock = clock
        self._lock = threading.Lock()
        self._misses = 0
        self._locked_until = 0.0

    @property
    def misses(self) -> int:
        return self._misses

    def wait_seconds(self) -> float:
        """Seconds until another attempt is allowed (0 = allowed now)."""
        with self._lock:
            return max(0.0, self._locked_until - self._clock())

    def failed(self) -> None:
        with self._lock:
            self._misses += 1
            over = self._misses - self.free_tries
            if over >= 0:
                delay = min(self.max_lockout, self.base_lockout * (2 ** over))
                self._locked_until = self._clock() + delay

    def succeeded(self) -> None:
        with self._lock:
            self._misses = 0
            self._locked_until = 0.0


def session_limiter(clock: Callable[[], float] = time.monotonic) -> AttemptLimiter:
    """One per browser session: 5 tries, then 30 s, 60 s, 120 s … up to 15 min."""
    return AttemptLimiter(5, 30.0, 15 * 60.0, clock)


def process_limiter(clock: Callable[[], float] = time.monotonic) -> AttemptLimiter:
    """One per panel process (all sessions): 20 tries, then 60 s doubling up to 15 min."""
    return AttemptLimiter(20, 60.0, 15 * 60.0, clock)


@dataclass(frozen=True, slots=True)
class GateResult:
    ok: bool
    message: str


def _wait_text(seconds: float) -> str:
    s = int(seconds + 0.999)
    return f"{s} seconds" if s < 120 else f"{(s + 59) // 60} minutes"


def check_password(config: AdminConfig, password: str, limiters: Sequence[AttemptLimiter]) -> GateResult:
    """Check a typed password against the configuration, honouring every limiter.

    While any limiter is locked the password is not even looked at (so a lockout cannot be used to
    probe it). A wrong password counts against every limiter.
    """
    if not config.has_password:
        return GateResult(False, config.problem or (
            "No admin password is configured. The operator sets password_hash under [comfyui.admin] in "
            ".streamlit/secrets.toml (make one with “python -m comfypanel.admin hash-password”)."))
    wait = max((lim.wait_seconds() for lim in limiters), default=0.0)
    if wait > 0:
        return GateResult(False, f"Too many wrong passwords. Try again in {_wait_text(wait)}.")
    if verify_password(password or "", config.password_hash or ""):
        for lim in limiters:
            lim.succeeded()
        return GateResult(True, "Admin actions are unlocked for this browser session.")
    for lim in limiters:
        lim.failed()
    wait = max((lim.wait_seconds() for lim in limiters), default=0.0)
    if wait > 0:
        return GateResult(False, f"Wrong password. Too many wrong passwords: try again in {_wait_text(wait)}.")
    left = min(max(0, lim.free_tries - lim.misses) for lim in limiters) if limiters else 0
    return GateResult(False, f"Wrong password. {left} {'try' if left == 1 else 'tries'} left before a pause.")


# -- command line ----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfypanel.admin",
                                     description="Admin helpers for Comfy Panel.")
    sub = parser.add_subparsers(dest="command", required=True)
    hp = sub.add_parser("hash-password", help="make password_hash for [comfyui.admin] in secrets.toml")
    hp.add_argument("--stdin", action="store_true", help="read the password from standard input (no prompt)")
    args = parser.parse_args(argv)
    if args.command == "hash-password":
        if args.stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("New admin password: ")
            if getpass.getpass("Once more: ") != password:
                print("The two passwords differ; nothing was made.", file=sys.stderr)
                return 1
        if len(password) < 8:
            print("Use at least 8 characters.", file=sys.stderr)
            return 1
        print("[comfyui.admin]")
        print(f'password_hash = "{hash_password(password)}"')
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
