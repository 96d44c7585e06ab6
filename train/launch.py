"""Start N training processes on this machine, one multi-process run (a smoke test of what N machines do).

    python -m train.launch --workers 2 -- --data data/GTSRB --epochs 1 --out runs/two
    python -m train.launch --workers 2 -- --resume --out runs/two

Each process is ``python -m train ARGS --backend jax --distribute multiworker --coordinator
127.0.0.1:PORT --num-processes N --process-id I``, the line each machine of a real cluster runs with
process 0's address (README: "Past one machine"). Process 0's output is shown as it is, the others'
behind ``[process I]``. When one process fails, the others stop within the heartbeat timeout
(``train.distribute.HEARTBEAT_SECONDS``) with a line saying so, and this command exits 1.

Every multi-process ``python -m train`` runs its training in a child process and reads its stderr:
when JAX's coordination service gives up on a dead peer it aborts the process with a page of native
log; the parent turns that into one line (the page goes to a log file it names).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from runtime.cli import HelpFormatter
from runtime.errors import cli_errors

WORKER_ENV = "SIGNKIT_WORKER"  # set in the child that trains: it does not supervise itself
NATIVE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|\s+@ |\*\*\* |\[Gloo\]|WARNING: All log messages)")
# what the child's log says when it stopped because a peer did: a collective's connection reset, or no heartbeat
PEER_LOST = ("heartbeat", "distributed service detected fatal errors", "Shutdown barrier has failed",
             "Connection reset by peer", "Connection closed by peer")


def _pump(stream: IO[str], out: IO[str], log: IO[str]) -> list[str]:
    """Lines of the child's stderr to ours; native log lines (and everything after a fatal one) only to the log; a
    Python traceback held back and returned (the caller decides whether it is news or a lost peer's echo)."""
    fatal = False
    held: list[str] = []
    for line in stream:
        log.write(line)
        if fatal or NATIVE.match(line):
            fatal = fatal or line.startswith(("F", "E"))
            continue
        if held or line.startswith("Traceback (most recent call last)"):
            held.append(line)
            continue
        out.write(line)
        out.flush()
    log.flush()
    return held


def supervise(argv: Sequence[str], process_id: int, processes: int) -> int:
    """Run ``python -m train ARGV`` as a child and say in one line why it stopped, if it did not finish."""
    log_path = Path(tempfile.gettempdir()) / f"signkit-process{process_id}-{os.getpid()}.log"
    env = {**os.environ, WORKER_ENV: "1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, "-m", "train", *argv], env=env, stderr=subprocess.PIPE, text=True)

        def forward(signum: int, _frame: object) -> None:
            child.send_signal(signum)

        handlers = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            assert child.stderr is not None
            held = _pump(child.stderr, sys.stderr, log)
            rc = child.wait()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
    text = log_path.read_text(errors="replace")
    if rc == 0:
        log_path.unlink(missing_ok=True)
        return 0
    where = f"process {process_id} of {processes}"
    if any(k in text for k in PEER_LOST):
        print(f"python -m train: error: {where} stopped: another process of the run stopped (its connection closed, or "
              f"no heartbeat came for a while); the finished epochs are checkpointed: start every process again with "
              f"--resume (details: {log_path})", file=sys.stderr)
        return 1
    sys.stderr.writelines(held)
    if rc < 0:
        print(f"python -m train: error: {where} was stopped by signal {-rc}; the finished epochs are checkpointed: start "
              f"every process again with --resume", file=sys.stderr)
        return 1
    return rc  # the child said why in its own one line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefixed(stream: IO[str], prefix: str) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def launch(workers: int, train_args: Sequence[str], port: int | None = None, grace: float | None = None) -> int:
    """Start ``workers`` processes of one run on 127.0.0.1; wait for all; 0 when every one finished.

    ``grace``: how long the others may take to stop after one failed (default: the heartbeat timeout and a half),
    after which they are terminated."""
    from train.distribute import HEARTBEAT_SECONDS

    port = port or free_port()
    grace = 1.5 * HEARTBEAT_SECONDS if grace is None else grace
    procs = []
    for i in range(workers):
        cmd = [sys.executable, "-m", "train", *train_args, "--backend", "jax", "--distribute", "multiworker",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(workers), "--process-id", str(i)]
        quiet = i > 0
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None,
                                text=True)
        if quiet:
            assert proc.stdout is not None
            threading.Thread(target=_prefixed, args=(proc.stdout, f"[process {i}] "), daemon=True).start()
        procs.append(proc)
    failed_at: float | None = None
    while any(p.poll() is None for p in procs):
        codes = [p.poll() for p in procs]
        if failed_at is None and any(c not in (None, 0) for c in codes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > grace:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        time.sleep(0.2)
    codes = [p.returncode for p in procs]
    bad = [i for i, c in enumerate(codes) if c != 0]
    if bad:
        print(f"python -m train.launch: error: process{'es' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of "
              f"{workers} failed (exit {', '.join(str(codes[i]) for i in bad)}); see their lines above", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.launch", formatter_class=HelpFormatter,
        description="Start N training processes on this machine, one multi-process run.\n\n"
                    "Everything after -- goes to each `python -m train`, with the multi-process flags added.",
        epilog="examples:\n  python -m train.launch --workers 2 -- --data data/GTSRB --epochs 1 --out runs/two\n"
               "  python -m train.launch --workers 2 -- --resume --out runs/two",
    )
    p.add_argument("--workers", type=int, default=2, help="processes to start")
    p.add_argument("--port", type=int, default=None, help="the coordinator's port on 127.0.0.1 (default: a free one)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the flags of python -m train")
    return p


@cli_errors("python -m train.launch")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.workers < 2:
        parser.error("--workers must be at least 2 (one process is plain python -m train)")
    taken = {"--distribute", "--coordinator", "--num-processes", "--process-id", "--backend"} & set(train_args)
    if taken:
        parser.error(f"{', '.join(sorted(taken))}: the launcher sets these itself; leave them out")
    return launch(args.workers, train_args, args.port)


if __name__ == "__main__":
    sys.exit(main())
