"""Kill the trainer with SIGKILL at random moments, many of them inside a checkpoint write: after
every kill the checkpoint in the folder (if any) loads completely and is the last epoch whose
write reached its rename, no temporary file is taken for a checkpoint, and ``--resume`` goes on
from that epoch; the run ends on the same weights as one never interrupted.

The trainer runs as ``gpudnn.cli.main`` in processes forked by tests/checkpoint_kill_runner.py
(one import of torch for all of them), and once as ``python -m gpudnn`` (killed inside a write)
and once more to finish. GPUDNN_CHECKPOINT_TEST_PAUSE makes the production writer pause inside
every step of a write and name the steps on stderr, so that half the kills (sent a random time
after the start) often land inside a write, the other half is sent a random time after a write
began, and the test knows where each kill landed.

GPUDNN_KILL_TRIES (default 24, ~20 s; `make fuzz` runs 300) sets the number of kills,
GPUDNN_KILL_SEED (default 0) the seed of the kill times.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from gpudnn.models import training
from gpudnn.testing import assert_close
from test_models import write_tiny_mnist

TRIES = int(os.environ.get("GPUDNN_KILL_TRIES", "24"))
SEED = int(os.environ.get("GPUDNN_KILL_SEED", "0"))
# the hook sleeps PAUSE after each step of a write and PAUSE / 50 after each of the ~270 chunks
# torch.save writes: a write takes ~0.07 s, the rest of an epoch ~0.03 s, a run's start ~0.05 s
PAUSE = 0.005
CHUNKS_S = 0.06  # kills aimed at the chunks are sent up to this long after the write began
ANY_S = 0.6  # the other kills: up to this long after the start
STEPS = ("begin", "begin", "written", "synced", "replaced")  # what the aimed kills follow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "checkpoint_kill_runner.py")
MARKER = re.compile(r"gpudnn-test: checkpoint epoch (\d+) (\w+)")
TEMP = re.compile(r"^(checkpoint\.pt|metrics\.jsonl)\.tmp(\d+)$")
# the torch twin: the checkpoint path does not depend on the backend, and it is the fastest here
TRAIN = ["train", "cnn", "--widths", "4,8", "--hidden", "16", "--batch-size", "8",
         "--no-progress", "--device", "cpu", "--backend", "torch"]  # + --data a tiny MNIST
LOSSES = ("loss", "acc", "test_loss", "test_acc")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill runner forks")


def _env(pause: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT] + os.environ.get("PYTHONPATH", "").split(
                   os.pathsep)).rstrip(os.pathsep))
    env.pop(training.TEST_PAUSE_ENV, None)
    if pause:
        env[training.TEST_PAUSE_ENV] = str(PAUSE)
    return env


class Runner:
    """tests/checkpoint_kill_runner.py: forks trainers and kills them on request."""

    def __init__(self, log_path: str):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, RUNNER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=_env(pause=True), cwd=ROOT)
        assert "ready" in self._read(), "the kill runner did not start"

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            raise AssertionError("the kill runner died: " + open(self.log.name).read()[-3000:])
        return json.loads(line)

    def run(self, argv, kill=None, pause=True, timeout=120) -> dict:
        env = {training.TEST_PAUSE_ENV: str(PAUSE) if pause else None}
        self.proc.stdin.write(json.dumps({"argv": argv, "kill": kill, "env": env,
                                          "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()  # our own Popen child
            self.proc.wait()
        self.log.close()


def _run_python_m_gpudnn(argv, kill_after_write_s=None, timeout=300) -> dict:
    """``python -m gpudnn ARGV`` as a new process; killed ``kill_after_write_s`` seconds after
    its first checkpoint write began, if given."""
    proc = subprocess.Popen([sys.executable, "-m", "gpudnn", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=dict(_env(pause=kill_after_write_s is not None),
                                     PYTHONUNBUFFERED="1"))
    watchdog = threading.Timer(timeout, proc.kill)  # Popen.kill: only while not yet reaped
    watchdog.start()
    start = time.monotonic()
    lines = []
    try:
        if kill_after_write_s is not None:
            for line in proc.stdout:
                lines.append(line)
                if MARKER.search(line) and line.rstrip().endswith(" begin"):
                    time.sleep(kill_after_write_s)
                    proc.send_signal(signal.SIGKILL)
                    break
        rest, _ = proc.communicate()
    finally:
        watchdog.cancel()
    return {"pid": proc.pid, "returncode": proc.returncode, "output": "".join(lines) + rest,
            "killed": proc.returncode == -signal.SIGKILL, "seconds": time.monotonic() - start}


class Chain:
    """One training folder, killed again and again; ``check`` runs after every kill."""

    def __init__(self, out: str, train: list[str]):
        self.out, self.train = out, train
        self.ckpt = os.path.join(out, training.CHECKPOINT_NAME)
        self.epoch = 0  # the epoch of the checkpoint in the folder (0: none)
        self.histories: dict[int, list] = {}  # epoch -> the history its checkpoint held
        self.killed_pids: list[int] = []
        self.pending = 0  # kills whose checkpoint no run has continued from yet
        self.landed: dict[str, int] = {}  # the step of the write a kill landed after
        self.counts = dict(tried=0, in_write=0, recovered=0, resumes=0, torn_temps=0,
                           complete_temps=0, python_m=0, no_ckpt_resume=0)

    def argv(self, epochs: int) -> list[str]:
        resume = ["--resume"] if self.epoch else []
        return [*self.train, "--out", self.out, "--epochs", str(epochs), *resume]

    def check(self, result: dict, resumed: bool) -> None:
        out, pid = result["output"], result["pid"]
        where = f"run {pid} (killed: {result['killed']}):\n{out[-3000:]}"
        markers = [(int(e), stage) for e, stage in MARKER.findall(out)]
        started = bool(markers) or "resuming" in out or re.search(r"^epoch \d+/", out, re.M)

        # 1. the run went on from the last complete checkpoint (or started afresh without one)
        if resumed:
            match = re.search(r"resuming cnn from .* after epoch (\d+)", out)
            if match:
                assert int(match.group(1)) == self.epoch, where
                self.counts["resumes"] += 1
        if started:
            first = markers[0][0] if markers else None
            assert first in (None, self.epoch + 1), where
            self.counts["recovered"] += self.pending
            self.pending = 0

        if result["killed"]:
            self.counts["tried"] += 1
            self.pending += 1
            self.killed_pids.append(pid)
            if markers and markers[-1][1] != "end":
                self.counts["in_write"] += 1
                step = markers[-1][1]
                self.landed[step] = self.landed.get(step, 0) + 1
        else:
            assert result["returncode"] == 0, where

        # 2. the checkpoint: complete, and the last epoch whose write reached its rename
        renamed = [e for e, stage in markers if stage == "replaced"]
        synced = {e for e, stage in markers if stage == "synced"}
        if os.path.exists(self.ckpt):
            payload = training.load_checkpoint(self.ckpt, "cnn")  # raises if torn or corrupt
            epoch = payload["epoch"]
            assert epoch >= self.epoch, where
            # a new epoch was written by this run (the last run has no hook: no markers)
            assert epoch == self.epoch or epoch in synced or not result["killed"], where
            assert not [e for e in renamed if e > epoch], where
            history = payload["history"]
            assert [m["epoch"] for m in history] == list(range(1, epoch + 1)), where
            self.histories[epoch] = history
            self.epoch = epoch
        else:
            assert self.epoch == 0 and not renamed, where

        # 3. metrics.jsonl: whole lines, at most one epoch behind the checkpoint
        metrics = os.path.join(self.out, "metrics.jsonl")
        if os.path.exists(metrics):
            epochs = [json.loads(line)["epoch"] for line in open(metrics).read().splitlines()]
            assert epochs == list(range(1, len(epochs) + 1)), where
            assert len(epochs) in (self.epoch - 1, self.epoch), where
        else:
            assert self.epoch <= 1, where

        # 4. temporary files: only killed writers', older ones removed by a run that started;
        #    a torn one never loads, one whose bytes were all written loads as that epoch
        for name in os.listdir(self.out):
            if ".tmp" not in name:
                continue
            match = TEMP.match(name)
            assert match and int(match.group(2)) in self.killed_pids, (name, where)
            owner = int(match.group(2))
            assert owner == pid or not started, (f"stale {name} was not removed", where)
            if match.group(1) != "checkpoint.pt" or owner != pid:
                continue  # an older one was looked at after its own run
            writing = [stage for e, stage in markers if e == markers[-1][0]]
            try:
                temp = training.load_checkpoint(os.path.join(self.out, name), "cnn")
            except training.CheckpointError:
                assert "written" not in writing, where  # all bytes were written: must load
                self.counts["torn_temps"] += 1
            else:
                assert temp["epoch"] == markers[-1][0] == self.epoch + 1, where
                self.counts["complete_temps"] += 1

    def temp_is_not_a_checkpoint(self, runner: Runner) -> None:
        """No checkpoint, a killed writer's temporary file: ``--resume`` is the clear error."""
        result = runner.run([*self.train, "--out", self.out, "--epochs", "3", "--resume"])
        assert result["returncode"] == 2, result["output"]
        assert "gpudnn: error: no checkpoint at" in result["output"], result["output"]
        self.counts["no_ckpt_resume"] += 1


def test_sigkill_at_random_moments_never_loses_the_last_checkpoint(tmp_path):
    start = time.monotonic()
    rng = random.Random(SEED)
    mnist = write_tiny_mnist(str(tmp_path / "mnist"), n_train=40, n_test=20)  # 5 steps/epoch
    train = [*TRAIN, "--data", mnist]
    chain = Chain(str(tmp_path / "run"), train)
    runner = Runner(str(tmp_path / "runner.log"))
    python_m_at = TRIES // 2  # one kill (inside a write) of a real `python -m gpudnn`
    try:
        for i in range(TRIES):
            resumed = bool(chain.epoch)
            if i == python_m_at:
                result = _run_python_m_gpudnn(chain.argv(100_000), rng.uniform(0, CHUNKS_S))
                chain.counts["python_m"] += 1
            elif rng.random() < 0.5:
                result = runner.run(chain.argv(100_000), {"after_s": rng.uniform(0, ANY_S)})
            else:
                step = rng.choice(STEPS)
                kill = {"after_marker": step, "nth": rng.randint(1, 2),
                        "then_s": rng.uniform(0, CHUNKS_S if step == "begin" else PAUSE)}
                result = runner.run(chain.argv(100_000), kill)
            assert result["killed"], f"run {i} was not killed:\n{result['output'][-3000:]}"
            chain.check(result, resumed)
            if not chain.epoch and any(".tmp" in n for n in os.listdir(chain.out)):
                chain.temp_is_not_a_checkpoint(runner)

        # the last run, as `python -m gpudnn` without the hook: resumes and finishes
        final = chain.epoch + 2
        resumed = bool(chain.epoch)
        result = _run_python_m_gpudnn(chain.argv(final))
        chain.check(result, resumed)
        assert f"epoch {final}/{final}" in result["output"], result["output"]
        assert not [n for n in os.listdir(chain.out) if ".tmp" in n]
        assert chain.pending == 0

        # an uninterrupted run to the same epoch: the same weights, the same losses every epoch
        reference = str(tmp_path / "reference")
        done = runner.run([*train, "--out", reference, "--epochs", str(final)], pause=False)
        assert done["returncode"] == 0, done["output"]
    finally:
        runner.close()
    ours = training.load_checkpoint(chain.ckpt, "cnn")
    theirs = training.load_checkpoint(os.path.join(reference, training.CHECKPOINT_NAME), "cnn")
    for key, value in theirs["model"].items():
        assert_close(ours["model"][key], value, "float32", name=key)
    for index, state in theirs["optimizers"]["model"]["state"].items():
        for name, value in state.items():
            assert_close(ours["optimizers"]["model"]["state"][index][name], value, "float32",
                         name=f"optimizer {name}")
    for epoch, history in [*chain.histories.items(), (final, ours["history"])]:
        for got, want in zip(history, theirs["history"][:epoch]):
            for key in LOSSES:
                assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (epoch, key)

    c = chain.counts
    summary = (f"checkpoint kill test: {c['tried']} kills tried ({c['python_m']} of `python -m "
               f"gpudnn`), {c['in_write']} landed inside a checkpoint write (after step: "
               f"{', '.join(f'{k} {v}' for k, v in sorted(chain.landed.items()))}; "
               f"{c['torn_temps']} torn temp files rejected, {c['complete_temps']} complete ones "
               f"ignored), "
               f"{c['recovered']} recovered ({c['resumes']} resumes seen; final epoch {final} "
               f"matches an uninterrupted run); {time.monotonic() - start:.1f} s")
    print("\n" + summary)
    assert c["tried"] == TRIES and c["recovered"] == TRIES
    assert c["in_write"] >= max(1, TRIES // 4), summary
