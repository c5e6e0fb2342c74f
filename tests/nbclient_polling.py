"""Work around a lost wake-up when nbclient executes cells that create ipywidgets (jupyter/nbclient#312).

nbclient waits for a cell's reply with ``await channel.get_msg(timeout=None)``: one unbounded ``poll`` on
the kernel's ZMQ socket. While an ``interact`` explorer runs, nbclient's Output-widget mirror also *sends*
on the shell socket, and now and then the waiting ``poll`` is never woken although the reply has arrived:
the cell hangs until the test's timeout. Measured on the course's 2-core CI machine under load: 9 of 27
runs of a notebook with 24 ``interact`` cells hung, 0 of 20 with this patch (chapters 02 and 05 hung the
same way in their explorer cells). The patch makes every wait a loop of polls of at most one second (up to
the same deadline), so a missed wake-up costs at most a second. Installed by ``tests/conftest.py`` (nbmake, i.e. ``make test``) and
by ``.ci/execute_notebook.py`` (full-profile runs); it changes nothing else.
"""

from __future__ import annotations

import queue
import time

from nbclient import NotebookClient

SLICE_SECONDS = 1.0


def sliced(get_msg, slice_seconds: float = SLICE_SECONDS):
    """``get_msg`` whose wait is a loop of polls of at most ``slice_seconds`` each, up to the same deadline
    (none for ``timeout=None``), raising ``queue.Empty`` as before when the deadline passes."""
    if not slice_seconds > 0:
        raise ValueError(f"slice_seconds must be > 0, got {slice_seconds}")

    async def get_msg_sliced(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = slice_seconds if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await get_msg(timeout=min(slice_seconds, left))
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get_msg_sliced


def install() -> None:
    """Patch ``NotebookClient`` so that its kernel client's shell and IOPub waits are sliced (idempotent)."""
    if getattr(NotebookClient, "_course_sliced_polls", False):
        return
    start = NotebookClient.async_start_new_kernel_client

    async def start_with_sliced_polls(self):
        kc = await start(self)
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = sliced(channel.get_msg)
        return kc

    NotebookClient.async_start_new_kernel_client = start_with_sliced_polls
    NotebookClient._course_sliced_polls = True
