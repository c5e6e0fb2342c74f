"""The workaround for nbclient's lost wake-ups (tests/nbclient_polling.py) slices waits and keeps deadlines."""

import asyncio
import queue
import time
from types import SimpleNamespace

import pytest
from nbclient import NotebookClient

from nbclient_polling import SLICE_SECONDS, install, sliced


def fake_channel(answer_after: int):
    """An async get_msg that has a message only from its `answer_after`-th call on; records the timeouts."""
    calls = []

    async def get_msg(timeout=None):
        calls.append(timeout)
        if len(calls) > answer_after:
            return {"msg": len(calls)}
        await asyncio.sleep(0 if timeout is None else min(timeout, 0.01))
        raise queue.Empty

    return get_msg, calls


def test_an_unbounded_wait_becomes_bounded_polls_until_the_message_comes():
    get_msg, calls = fake_channel(answer_after=3)
    msg = asyncio.run(sliced(get_msg, slice_seconds=0.5)(timeout=None))
    assert msg == {"msg": 4} and calls == [0.5] * 4  # never an unbounded poll


def test_a_bounded_wait_keeps_its_deadline_and_still_raises_empty():
    get_msg, calls = fake_channel(answer_after=10**9)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        asyncio.run(sliced(get_msg, slice_seconds=0.02)(timeout=0.1))
    assert 0.1 <= time.monotonic() - start < 2
    assert len(calls) >= 2 and all(t <= 0.02 for t in calls)


def test_install_patches_notebook_client_once():
    install()
    patched = NotebookClient.async_start_new_kernel_client
    install()
    assert NotebookClient.async_start_new_kernel_client is patched and NotebookClient._course_sliced_polls
    with pytest.raises(ValueError, match="slice_seconds"):
        sliced(lambda timeout=None: None, slice_seconds=0)


def test_the_patched_client_slices_the_shell_and_iopub_waits_only(monkeypatch):
    """What install() wraps: the kernel client the original method returns gets sliced shell and IOPub waits."""
    channels = {name: SimpleNamespace() for name in ("shell_channel", "iopub_channel", "stdin_channel")}
    for ch in channels.values():
        ch.get_msg, ch.calls = fake_channel(answer_after=2)
    kc = SimpleNamespace(**channels)
    stdin_wait = kc.stdin_channel.get_msg

    async def original(self):
        return kc

    monkeypatch.setattr(NotebookClient, "async_start_new_kernel_client", original)  # restored after the test
    monkeypatch.setattr(NotebookClient, "_course_sliced_polls", False)
    install()
    assert asyncio.run(NotebookClient.async_start_new_kernel_client(object())) is kc
    for ch in (kc.shell_channel, kc.iopub_channel):
        assert asyncio.run(ch.get_msg(timeout=None)) == {"msg": 3} and ch.calls == [SLICE_SECONDS] * 3
    assert kc.stdin_channel.get_msg is stdin_wait
