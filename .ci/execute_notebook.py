#!/usr/bin/env python3
"""Execute one notebook with nbclient; log each cell's time and errors; save even when interrupted."""
import os, signal, sys, time
import nbformat
from nbclient import NotebookClient

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from nbclient_polling import install  # noqa: E402

install()  # explorer cells could hang forever without it (jupyter/nbclient#312; see tests/nbclient_polling.py)

src, dst = sys.argv[1], sys.argv[2]
nb = nbformat.read(src, as_version=4)
t0 = time.time()


def done(cell, cell_index, **kw):
    outs = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            outs.append(o.get("text", "")[-300:])
        elif o.get("output_type") == "error":
            outs.append("ERROR " + o.get("ename", "") + ": " + o.get("evalue", "")[:500])
    print(f"[{time.time() - t0:6.0f}s] cell {cell_index} done", " | ".join(x.replace("\n", " / ") for x in outs)[-600:], flush=True)


def on_term(*a):
    raise KeyboardInterrupt("timeout")


signal.signal(signal.SIGTERM, on_term)
client = NotebookClient(nb, timeout=None, kernel_name="python3", on_cell_executed=done,
                        resources={"metadata": {"path": os.path.dirname(src) or "."}})
try:
    client.execute()
    print("NOTEBOOK OK", flush=True)
finally:
    nbformat.write(nb, dst)
    print(f"saved after {time.time() - t0:.0f}s", flush=True)
