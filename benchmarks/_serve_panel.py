"""``streamlit run`` with one addition for the load benchmark: on SIGUSR1 the server process writes the
names of its live threads (one per line) to ``$COMFYPANEL_THREAD_DUMP``. Nothing else changes:
the arguments are passed to Streamlit's own command line as they are.

    python benchmarks/_serve_panel.py run streamlit_app.py --server.port 8501 ...
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _dump(signum, frame) -> None:  # noqa: ANN001, ARG001
    path = os.environ.get("COMFYPANEL_THREAD_DUMP")
    if path:
        names = [t.name for t in threading.enumerate()]
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")
        os.replace(tmp, path)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _dump)
    from streamlit.web.cli import main

    sys.argv = ["streamlit", *sys.argv[1:]]
    sys.exit(main(prog_name="streamlit"))
