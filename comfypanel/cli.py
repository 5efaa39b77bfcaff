"""``comfypanel`` — the same core as the panel, scriptable.

    comfypanel status [--server URL | --cloud]
    comfypanel run WORKFLOW [--server URL | --cloud] [--set NODE_ID.INPUT=VALUE ...] --out DIR
    comfypanel convert WORKFLOW [--server URL | --cloud]   (API JSON on stdout)
    comfypanel inspect WORKFLOW [--server URL | --cloud]   (simple and advanced parameters)
    comfypanel local-server [--port 8188]        (the CPU ComfyUI the tests use; see devserver)

Credentials come from the environment (``COMFYUI_TOKEN``, ``COMFY_CLOUD_API_KEY``), never from
the command line, where other users of the machine could read them in the process list.
Exit codes: 0 success, 1 the job failed or was refused, 2 bad usage or input, 3 connection problem.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import errors as E
from .client import ComfyClient
from .connection import Connection
from . import schema as S
from . import workflow as W
from .generation import fetch_models
from .jobs import JobProgress, submit_and_wait

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECTION = 0, 1, 2, 3


def _connection(args: argparse.Namespace) -> Connection:
    if args.cloud:
        key = os.environ.get("COMFY_CLOUD_API_KEY", "").strip()
        if not key:
            raise E.ConfigError("Set COMFY_CLOUD_API_KEY in the environment to use --cloud.")
        return Connection.cloud(key, os.environ.get("COMFY_CLOUD_URL") or "https://cloud.comfy.org")
    if args.server:
        return Connection.local(args.server, os.environ.get("COMFYUI_TOKEN"),
                                partner_key=os.environ.get("COMFY_PARTNER_API_KEY"))
    return Connection.from_env()


def _gib(n: int) -> str:
    return f"{n / 1024 ** 3:.1f} GiB"


def cmd_status(args: argparse.Namespace) -> int:
    client = ComfyClient(_connection(args))
    stats = client.system_stats()
    remaining = client.queue_remaining()
    print(f"Server:   {client.connection.display_url} ({'Comfy Cloud' if client.is_cloud else 'local ComfyUI'})")
    print(f"ComfyUI:  {stats.comfyui_version}   Python {stats.python_version}   PyTorch {stats.pytorch_version}")
    print(f"RAM:      {_gib(stats.ram_total - stats.ram_free)} used of {_gib(stats.ram_total)}")
    for d in stats.devices:
        print(f"Device:   {d.name} ({d.type})  VRAM {_gib(d.vram_total - d.vram_free)} used of {_gib(d.vram_total)}")
    print(f"Queue:    {remaining} job{'s' if remaining != 1 else ''} running or waiting")
    return EXIT_OK


_PROMPT_ROLES = ("positive", "negative")  # a prompt set by name goes to every encoder of that role


def _targets(target: str, prompt: Mapping[str, Any], params: Any) -> list[tuple[str, str]]:
    """``(node_id, input)`` pairs named by ``NODE_ID.INPUT``, ``Node title.INPUT`` or a simple
    parameter name (``seed``, ``positive``, ``steps``, or a label such as ``Steps (Refiner)``)."""
    node_ref, dot, name = target.rpartition(".")
    if dot and node_ref and name:
        if node_ref in prompt:
            return [(node_ref, name)]
        wanted = node_ref.strip().casefold()
        matches = [nid for nid, node in prompt.items()
                   if _title_of(node).casefold() == wanted]
        if len(matches) == 1:
            return [(matches[0], name)]
        if len(matches) > 1:
            raise E.InvalidInput(f"Several nodes are titled “{node_ref}” ({', '.join(matches)}); use NODE_ID.{name} instead.")
    if params is not None:
        key = target.strip().casefold()
        visible = list(params)
        # a simple parameter wins over an advanced one of the same role (SDXL: the refiner's seed)
        by_role = [p for p in params.simple if (p.role or "").casefold() == key] or [
            p for p in visible if (p.role or "").casefold() == key]
        if by_role and (len(by_role) == 1 or key in _PROMPT_ROLES):
            return [(p.node_id, p.input_name) for p in by_role]
        by_label = [p for p in visible if p.label.casefold() == key]
        if len(by_label) == 1:
            return [(by_label[0].node_id, by_label[0].input_name)]
        candidates = by_role or by_label
        if candidates:
            labels = ", ".join(f"{p.label} ({p.id})" for p in candidates)
            raise E.InvalidInput(f"“{target}” matches several parameters: {labels}; name one as NODE_ID.INPUT.")
        if not dot:
            names = ", ".join(sorted({p.role for p in params.simple if p.role}))
            raise E.InvalidInput(f"The workflow has no parameter called “{target}”"
                                 + (f"; simple names here are: {names}." if names else "."))
    if not dot:
        raise E.InvalidInput(f"“{target}” is not of the form NODE_ID.INPUT or a simple parameter name.")
    raise E.InvalidInput(f"The workflow has no node with id or title “{node_ref}”.")


def _title_of(node: Mapping[str, Any]) -> str:
    meta = node.get("_meta") if isinstance(node.get("_meta"), Mapping) else {}
    title = meta.get("title") if isinstance(meta.get("title"), str) else ""
    return re.sub(r"\s*\[[^\]]*\]\s*", " ", title).strip()


def parse_set(items: Sequence[str], prompt: Mapping[str, Any], params: Any = None) -> dict[str, Any]:
    """Apply ``--set TARGET=VALUE`` edits to a copy of an API-format prompt.

    TARGET is ``NODE_ID.INPUT``, ``Node title.INPUT``, or (with ``params`` from
    ``schema.discover``) a simple parameter name: ``seed=42``, ``"positive=a red fox"``.
    Values are parsed as JSON when they can be (``20``, ``7.5``, ``true``), else taken as text; the
    type must match the current value (a number stays a number).

    Raises:
        InvalidInput: unknown target, a linked input, or a value of the wrong type.
    """
    out = json.loads(json.dumps(prompt))
    for item in items:
        target, sep, raw = item.partition("=")
        if not sep or not target.strip():
            raise E.InvalidInput(f"“{item}” is not of the form TARGET=VALUE (TARGET: NODE_ID.INPUT, a node title.INPUT, or a name like seed).")
        for node_id, name in _targets(target, out, params):
            _set_one(out, node_id, name, raw)
    return out


def _set_one(out: dict[str, Any], node_id: str, name: str, raw: str) -> None:
    node = out[node_id]
    inputs = node.setdefault("inputs", {})
    if name not in inputs:
        raise E.InvalidInput(f"Node {node_id} ({node.get('class_type')}) has no input called “{name}”.")
    current = inputs[name]
    if isinstance(current, list):
        raise E.InvalidInput(f"Input “{name}” of node {node_id} is connected to another node; it cannot be set.")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise E.InvalidInput(f"Input “{name}” of node {node_id} needs true or false.")
    elif isinstance(current, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise E.InvalidInput(f"Input “{name}” of node {node_id} needs a whole number.")
    elif isinstance(current, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise E.InvalidInput(f"Input “{name}” of node {node_id} needs a number.")
        value = float(value)
    elif isinstance(current, str) and not isinstance(value, str):
        value = raw
    inputs[name] = value


def read_workflow(path: Path) -> "W.LoadedWorkflow":
    """Read any workflow file the panel accepts (API JSON, Save JSON, a ComfyUI PNG/WebP/JPEG).

    Raises:
        InvalidInput: with one sentence on what the file is and what to export instead.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise E.InvalidInput(f"There is no file {path}.") from None
    except OSError:
        raise E.InvalidInput(f"{path} cannot be read.") from None
    return W.load(data, path.name)


def prepared(args: argparse.Namespace, client: ComfyClient) -> tuple["W.LoadedWorkflow", dict[str, Any], S.Schema]:
    """Load the workflow, convert it, apply --set: what run and inspect share."""
    loaded = read_workflow(Path(args.workflow))
    object_info = client.object_info()
    schema = S.Schema.from_object_info(object_info)
    graph = W.to_api(loaded, object_info)
    params = S.discover(graph, schema)
    return loaded, parse_set(getattr(args, "set", None) or [], graph, params), schema


def cmd_run(args: argparse.Namespace) -> int:
    client = ComfyClient(_connection(args))
    loaded, prompt, schema = prepared(args, client)
    problems = S.preflight(prompt, schema, fetch_models(client, prompt, schema))
    for problem in problems:
        print(("error: " if problem.blocking else "warning: ") + problem.message, file=sys.stderr)
    if any(p.blocking for p in problems):
        return EXIT_USAGE
    out_dir = Path(args.out)
    listener = client.listener()
    listener.start()
    shown = {"line": ""}

    def show(p: JobProgress) -> None:
        parts = [p.state]
        if p.position and p.state == "queued":
            parts.append(f"position {p.position}")
        if p.current_node:
            node = prompt.get(p.current_node, {})
            parts.append(f"node {p.current_node} {node.get('class_type', '')}".strip())
        if p.step:
            parts.append(f"step {p.step[0]:g}/{p.step[1]:g}")
        if p.fraction is not None:
            parts.append(f"{p.fraction * 100:.0f}%")
        if p.connection == "reconnecting":
            parts.append("reconnecting…")
        line = " · ".join(parts)
        if line != shown["line"]:
            print(line, file=sys.stderr, flush=True)
            shown["line"] = line

    try:
        result = submit_and_wait(client, prompt, listener=listener, timeout=args.timeout, on_update=show,
                                 workflow=loaded.ui)
    finally:
        listener.stop()
    if result.queued and result.queued.node_errors:
        for err in result.queued.node_errors:
            print(f"warning: skipped part of the workflow: {err.message}", file=sys.stderr)
    if not result.ok:
        print(result.user_message, file=sys.stderr)
        return EXIT_FAILED
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for ref in result.files:
        data = client.view(ref)
        name = Path(ref.filename).name  # never let a server name escape the folder
        target = out_dir / (f"{ref.subfolder.replace('/', '_')}_{name}" if ref.subfolder else name)
        target.write_bytes(data)
        print(target)
        written += 1
    print(f"{result.user_message} Wrote {written} file{'s' if written != 1 else ''} to {out_dir}.", file=sys.stderr)
    return EXIT_OK


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= 70 else text[:67] + "…"


def _kind(p: "S.Parameter") -> str:
    spec = p.spec
    if spec.kind in ("INT", "FLOAT"):
        rng = [f"{spec.min:g}" if spec.min is not None else "", f"{spec.max:g}" if spec.max is not None else ""]
        return f"{spec.kind} {rng[0]}..{rng[1]}" if any(rng) else spec.kind
    if spec.kind == "COMBO":
        if spec.model_folder:
            return f"model ({spec.model_folder})"
        if spec.upload:
            return f"{spec.upload} file"
        return f"choice of {len(spec.options)}"
    if spec.kind == "STRING":
        return "text (multiline)" if spec.multiline else "text"
    return spec.kind.lower()


def cmd_inspect(args: argparse.Namespace) -> int:
    client = ComfyClient(_connection(args))
    _loaded, graph, schema = prepared(args, client)
    params = S.discover(graph, schema)
    rows = [("Simple", params.simple)] + [(f"Advanced · {label}", ps) for label, ps in params.groups()]
    for heading, ps in rows:
        if not ps:
            continue
        print(heading)
        for p in ps:
            role = f" [{p.role}]" if p.role and heading == "Simple" else ""
            print(f"  {p.label}{role} = {_show(p.value)}    ({_kind(p)}; --set {p.id}=…)")
    if params.hidden:
        print(f"({len(params.hidden)} hidden value{'s' if len(params.hidden) != 1 else ''})")
    for problem in S.preflight(graph, schema, fetch_models(client, graph, schema)):
        print(("error: " if problem.blocking else "warning: ") + problem.message)
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    loaded = read_workflow(Path(args.workflow))
    client = ComfyClient(_connection(args)) if loaded.ui is not None else None
    report = W.ConversionReport()
    if loaded.ui is not None:
        graph = W.to_api(loaded, client.object_info(), report=report)
    else:
        graph = W.to_api(loaded)
    json.dump(graph, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if report.unknown_classes:
        print("warning: this server does not have the node types " + ", ".join(report.unknown_classes)
              + "; their widget values could not be converted.", file=sys.stderr)
    return EXIT_OK


def cmd_local_server(args: argparse.Namespace) -> int:
    from . import devserver

    return devserver.main(["start", "--port", str(args.port)] + (["--data-dir", args.data_dir] if args.data_dir else []))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfypanel", description="Comfy Panel command line")
    sub = parser.add_subparsers(dest="command", required=True)

    def target(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--server", help="local ComfyUI URL (default: $COMFYUI_URL or http://127.0.0.1:8188)")
        g.add_argument("--cloud", action="store_true", help="use Comfy Cloud with $COMFY_CLOUD_API_KEY")

    p = sub.add_parser("status", help="show server version, memory and queue")
    target(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="run an API-format workflow and save its outputs")
    p.add_argument("workflow", help="workflow .json (API or Save format) or a PNG/WebP made by ComfyUI")
    target(p)
    p.add_argument("--set", action="append", metavar="TARGET=VALUE",
                   help="change a value: NODE_ID.INPUT=V, 'Node title.INPUT=V' or a simple name like seed=42 (repeatable)")
    p.add_argument("--out", required=True, help="folder for the output files")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("convert", help="print the API-format JSON of a workflow file (Save JSON, PNG, or API)")
    p.add_argument("workflow", help="workflow .json (either format) or a PNG/WebP made by ComfyUI")
    target(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("inspect", help="list a workflow's simple and advanced parameters with their values")
    p.add_argument("workflow", help="workflow .json (either format) or a PNG/WebP made by ComfyUI")
    target(p)
    p.add_argument("--set", action="append", metavar="TARGET=VALUE", help="change a value first (repeatable)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("local-server", help="install (cached) and run the CPU ComfyUI used by the tests")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_local_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (E.ConfigError, E.InvalidInput) as exc:
        print(exc.user_message, file=sys.stderr)
        return EXIT_USAGE
    except (E.CannotConnect, E.RequestTimedOut) as exc:
        print(exc.user_message, file=sys.stderr)
        return EXIT_CONNECTION
    except E.ComfyPanelError as exc:
        print(exc.user_message, file=sys.stderr)
        for err in getattr(exc, "node_errors", ()):
            print(f"  - {err.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
