"""Fork server for tests/test_checkpoint_kill.py (not a test module).

It imports gpudnn once, then for each request (a JSON line on stdin) forks a child that runs
``gpudnn.cli.main(argv)`` -- what ``python -m gpudnn`` runs once its imports are done -- with its
stdout and stderr on a pipe, SIGKILLs the child when the request says, and answers with a JSON
line on stdout. Forking skips the 2-3 s of imports of each new Python process, so CI can kill the
trainer dozens of times in seconds. The child is killed only while it is this process's child
and not yet reaped (waitpid comes after the kill), so its pid cannot belong to anyone else.

Request: ``{"argv": [...], "env": {NAME: value or null}, "timeout": s, "kill": null
| {"after_s": s} | {"after_marker": STEP, "nth": n, "then_s": s}}``: kill ``after_s`` seconds
after the fork, or ``then_s`` seconds after the child printed its ``nth`` ``gpudnn-test:
checkpoint epoch E STEP`` line (the GPUDNN_CHECKPOINT_TEST_PAUSE hook; STEP: begin, written,
synced, replaced or end).
Answer: ``{"pid", "returncode" (-9 when killed), "killed", "timed_out", "seconds", "output"}``.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import sys
import time
import traceback

import gpudnn.cli
import gpudnn.models.training  # noqa: F401  (imported here, before the forks)

try:
    import threadpoolctl  # noqa: F401  (single_threaded_blas imports it)
except ImportError:
    pass


def _child(argv: list[str], env: dict, write_fd: int) -> None:
    """Runs in the forked child; never returns."""
    code = 70
    try:
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdout.reconfigure(line_buffering=True)  # lines reach the pipe before a kill
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        code = gpudnn.cli.main(argv)
    except BaseException:  # noqa: BLE001  (report anything, then leave without cleanup)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(request: dict) -> dict:
    kill = request.get("kill") or {}
    timeout = float(request.get("timeout", 120))
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(request["argv"], request.get("env", {}), write_fd)
    os.close(write_fd)
    start = time.monotonic()
    kill_at = start + kill["after_s"] if "after_s" in kill else None
    marker = re.compile(rb"gpudnn-test: checkpoint epoch \d+ %s\n"
                        % kill["after_marker"].encode()) if "after_marker" in kill else None
    output = bytearray()
    sent = timed_out = False
    while True:
        now = time.monotonic()
        if not sent and kill_at is not None and now >= kill_at:
            os.kill(pid, signal.SIGKILL)  # our unreaped child: the pid is still its own
            sent = True
        if not sent and now - start > timeout:
            os.kill(pid, signal.SIGKILL)
            sent = timed_out = True
        wait = 0.5 if sent or kill_at is None else max(0.0, kill_at - now)
        ready, _, _ = select.select([read_fd], [], [], min(wait, 0.5))
        if not ready:
            continue
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break  # the child is gone (its end of the pipe closed)
        output += chunk
        if (not sent and kill_at is None and marker is not None
                and len(marker.findall(output)) >= kill["nth"]):
            kill_at = time.monotonic() + kill["then_s"]
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return {"pid": pid, "returncode": code, "killed": killed and not timed_out,
            "timed_out": timed_out, "seconds": time.monotonic() - start,
            "output": output.decode("utf-8", "replace")}


def main() -> None:
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        print(json.dumps(run(request)), flush=True)


if __name__ == "__main__":
    main()
