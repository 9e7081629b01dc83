"""A policy in its own process: the control process keeps no model, no torch and no GIL of it.

``ChildProcessPolicy`` is a ``Policy`` (core/policy.py) whose calls run in a child process: a fresh
interpreter started with ``subprocess`` (spawned, not forked, so CUDA and the parent's ROS context
never reach it) running ``python -m vla_ros.core.policy_process``. The child builds the real policy
from a ``"module:callable"`` factory name (so this process imports neither the model nor torch) and
serves ``encode_instruction`` / ``predict_chunk`` / ``reset`` one at a time.

Transport: requests and replies are pickled tuples over a socket pair (multiprocessing's
``Connection``: framed messages, so a reply arrives whole or not at all: no half-received chunk);
images go through one anonymous shared-memory file (``memfd``) that both processes map: the parent
copies each image into it once, the child reads them in place. Instruction contexts (the prefix KV
cache) stay in the child; the parent's ``InstructionContext.cache`` is a handle to them.

Faults: a call not answered within ``call_timeout_s`` kills the child (SIGKILL); a child that dies
(any signal, any exit) or a factory that fails is reported by a ``PolicyProcessError`` naming what
happened, which the inference worker turns into a FAULT of the goal (the robot holds). The child is
started again at once after a first failure, and after a back-off (``backoff_s``, doubling) after
further failures in a row; after ``max_restarts`` failures in a row without a good chunk between
them it stays down and every call says why. Chunks are checked by the action buffer as any
policy's (shape, finiteness) before a command can come from them.
"""

from __future__ import annotations

import contextlib
import importlib
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
from typing import Any

import numpy as np

from vla_ros.core.policy import ActionChunk, InstructionContext, Observation, Policy, PolicySpec

CONTEXTS_KEPT = 16  # instruction contexts the child keeps (one per recent distinct goal)


class PolicyProcessError(RuntimeError):
    """The policy process failed: died, hung past its deadline, could not start, or raised."""


@dataclass(frozen=True)
class ContextHandle:
    """``InstructionContext.cache`` on the parent's side: which child holds the real context."""

    generation: int  # which start of the child made it (a restarted child does not have it)
    context_id: int


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class _Worker:
    """One start of the child process. Until ``started`` is set, the connection belongs to the
    thread that waits for the child's first message (ready or error); after it, to the caller."""

    def __init__(self, proc: subprocess.Popen, conn: Connection, generation: int) -> None:
        self.proc, self.conn, self.generation = proc, conn, generation
        self.started = threading.Event()
        self.spec: PolicySpec | None = None
        self.rtc: tuple[str, float] = ("off", 0.0)  # the child policy's real_time_chunking()
        self.start_error = ""

    def await_start(self, timeout_s: float) -> None:
        """The start thread: the child's first message, or why none came."""
        try:
            if self.conn.poll(timeout_s):
                kind, _, value = self.conn.recv()
                if kind == "ready":
                    self.spec = value["spec"]
                    self.rtc = tuple(value.get("rtc", self.rtc))
                else:
                    self.start_error = f"policy process could not start: {value}"
            else:
                pid = self.proc.pid
                self.start_error = f"policy process (pid {pid}) did not start within {timeout_s:g} s"
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(1.0)
            self.start_error = (f"policy process (pid {self.proc.pid}) could not start: "
                                f"{describe_exit(self.proc.poll())}")
        self.started.set()

    def stop(self, graceful: bool) -> None:
        if graceful and self.proc.poll() is None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.conn.send(("close", 0, ()))
                self.proc.wait(2.0)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()


class ChildProcessPolicy(Policy):
    """A ``Policy`` served by a child process; see the module docstring.

    factory: ``"package.module:callable"``; ``callable(**kwargs)`` returns the Policy, in the child.
    python: the child's interpreter (default this one); another one (a venv of its own) must be able
    to import this package's core and the factory, and gets none of this interpreter's packages.
    Blocks until the child is ready (its spec is this policy's spec) or raises PolicyProcessError.
    Thread use as any Policy: one inference thread calls it; ``process_info()`` (which says whether a
    restarted child is ready: the runtime refuses goals until it is) and ``close`` from any thread.
    """

    def __init__(
        self,
        factory: str,
        kwargs: dict[str, Any] | None = None,
        *,
        call_timeout_s: float = 2.0,
        start_timeout_s: float = 120.0,
        max_restarts: int = 3,
        backoff_s: float = 0.5,
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        if ":" not in factory:
            raise ValueError(f"factory must be 'module:callable', got {factory!r}")
        if not call_timeout_s > 0 or not start_timeout_s > 0:
            raise ValueError("call_timeout_s and start_timeout_s must be > 0")
        self.factory, self.kwargs = factory, dict(kwargs or {})
        self.call_timeout_s, self.start_timeout_s = float(call_timeout_s), float(start_timeout_s)
        self.max_restarts, self.backoff_s = int(max_restarts), float(backoff_s)
        self._env = env
        # Another interpreter (a venv of its own, e.g. lerobot's with its pinned versions) gets only
        # this package on its path, none of this interpreter's packages.
        self.python = python or sys.executable
        # (abspath, not realpath: a venv's python is a link to the same binary as every other venv's)
        self._foreign = os.path.abspath(self.python) != os.path.abspath(sys.executable)
        self._lock = threading.Lock()  # guards _worker and _closed against close() from another thread
        self._worker: _Worker | None = None
        self._closed = False
        self._seq = 0
        self._next_context = 0
        self.starts = 0
        self.failures = 0  # all failures so far
        self.failures_in_a_row = 0  # since the last good chunk
        self.last_failure = ""
        self._restart: threading.Timer | None = None  # the pending restart after a failure
        self._given_up = False
        self._shm_fd = os.memfd_create("vla_ros_policy_images")
        self._shm_size = 0
        self._shm: mmap.mmap | None = None
        self.spec: PolicySpec | None = None
        try:
            self.spec = self._started(self._spawn())
        except BaseException:
            self.close()
            raise

    # --- Policy interface -----------------------------------------------------------------------
    def encode_instruction(self, text: str) -> InstructionContext:
        worker = self._ensure_running()
        context_id = self._next_context
        self._next_context += 1
        meta = self._call(worker, "encode", (context_id, text))
        return InstructionContext(text=text, num_tokens=meta["num_tokens"], truncated=meta["truncated"],
                                  dropped_tokens=meta["dropped_tokens"],
                                  cache=ContextHandle(worker.generation, context_id))

    def predict_chunk(self, observation: Observation, context: InstructionContext) -> ActionChunk:
        worker = self._ensure_running()
        handle = context.cache
        if not isinstance(handle, ContextHandle):
            raise ValueError("context was not made by this policy's encode_instruction")
        if handle.generation != worker.generation:
            raise PolicyProcessError("the instruction was encoded by a policy process that has since "
                                     "been restarted; the next goal encodes it again")
        layout = self._write_images(observation.images)
        state = np.asarray(observation.state, dtype=np.float32)
        t_obs, actions, dt, info = self._call(
            worker, "predict", (handle.context_id, float(observation.stamp), state, self._shm_size, layout,
                                observation.committed))
        self.failures_in_a_row = 0
        return ActionChunk(t_obs=t_obs, actions=actions, dt=dt, info=info)

    def reset(self) -> None:
        self._call(self._ensure_running(), "reset", ())

    def real_time_chunking(self) -> tuple[str, float]:
        """The child policy's, as it said when it started (("off", 0.0) while none runs)."""
        worker = self._worker
        return worker.rtc if worker is not None and worker.spec is not None else ("off", 0.0)

    def close(self) -> None:
        """Ask the child to exit (SIGKILL after 2 s) and free the shared memory. A call still running
        in another thread fails with "closed"."""
        with self._lock:
            worker, self._worker, self._closed = self._worker, None, True
        if self._restart is not None:
            self._restart.cancel()
        if worker is not None:
            worker.stop(graceful=True)
        if self._shm is not None:
            with contextlib.suppress(BufferError):
                self._shm.close()
            self._shm = None
        if self._shm_fd >= 0:
            os.close(self._shm_fd)
            self._shm_fd = -1

    def process_info(self) -> dict[str, Any]:
        """state: ready, starting, down (waiting to restart), given up or closed; pid, starts, failures."""
        worker = self._worker
        if self._closed:
            state = "closed"
        elif self._given_up:
            state = "given up"
        elif worker is None:
            state = "down"
        elif not worker.started.is_set():
            state = "starting"
        else:
            state = "ready" if worker.spec is not None else "down"
        return {"state": state, "pid": worker.proc.pid if worker is not None else 0, "starts": self.starts,
                "failures": self.failures, "failures_in_a_row": self.failures_in_a_row,
                "last_failure": self.last_failure}

    # --- the child's life ---------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        parent_conn, child_conn = Pipe(duplex=True)
        env = dict(os.environ if self._env is None else self._env)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        inherited = "" if self._foreign else env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, inherited) if p)
        fds = (child_conn.fileno(), self._shm_fd)
        try:
            proc = subprocess.Popen([self.python, "-m", "vla_ros.core.policy_process", *map(str, fds)],
                                    pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            child_conn.close()
            parent_conn.close()
            raise PolicyProcessError(f"cannot start the policy process with {self.python}: {exc}") from exc
        finally:
            child_conn.close()
        self.starts += 1
        worker = _Worker(proc, parent_conn, generation=self.starts)
        parent_conn.send(("load", self.factory, self.kwargs, [] if self._foreign else list(sys.path)))
        threading.Thread(target=worker.await_start, args=(self.start_timeout_s,), daemon=True,
                         name="vla_ros-policy-start").start()
        with self._lock:
            if self._closed:
                worker.stop(graceful=False)
                raise PolicyProcessError("policy process closed")
            self._worker = worker
        return worker

    def _started(self, worker: _Worker) -> PolicySpec:
        """Wait until ``worker`` is ready (its spec) or raise why not (and count the failure)."""
        worker.started.wait()
        if worker.start_error:
            self._failed(worker, worker.start_error)
        if self.spec is not None and worker.spec != self.spec:
            self._failed(worker, f"the restarted policy process has another spec ({worker.spec} instead of "
                                 f"{self.spec})")
        return worker.spec

    def _ensure_running(self) -> _Worker:
        if self._closed:
            raise PolicyProcessError("policy process closed")
        if self._given_up:
            raise PolicyProcessError(
                f"policy process is down for good after {self.failures_in_a_row} failures in a row "
                f"(last: {self.last_failure}); configure the node again to retry")
        if self._worker is None and self._restart is not None:
            self._restart.join()  # the back-off before the restart
        worker = self._worker
        if worker is None:
            raise PolicyProcessError(f"policy process is down: {self.last_failure}")
        self._started(worker)
        return worker

    def _call(self, worker: _Worker, kind: str, payload: tuple):
        self._seq += 1
        try:
            worker.conn.send((kind, self._seq, payload))
        except OSError:  # BrokenPipeError, ConnectionResetError, or closed under us
            self._died(worker, kind)
        reply_kind, seq, value = self._receive(worker, kind)
        if reply_kind == "error":
            raise PolicyProcessError(f"in the policy process (pid {worker.proc.pid}): {value}")
        if seq != self._seq:
            self._failed(worker, f"policy process answered request {seq} to request {self._seq} ({kind})")
        return value

    def _receive(self, worker: _Worker, kind: str):
        deadline = time.monotonic() + self.call_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._failed(worker, f"policy process (pid {worker.proc.pid}) did not answer {kind} within "
                                     f"{self.call_timeout_s:g} s; killed it")
            try:
                if worker.conn.poll(min(left, 0.5)):
                    return worker.conn.recv()
                if worker.proc.poll() is not None and not worker.conn.poll(0):
                    self._died(worker, kind)
            except (EOFError, OSError):
                self._died(worker, kind)

    def _died(self, worker: _Worker, kind: str):
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(1.0)
        self._failed(worker, f"policy process (pid {worker.proc.pid}) died during {kind}: "
                             f"{describe_exit(worker.proc.poll())}")

    def _failed(self, worker: _Worker, reason: str):
        """Count a failure of ``worker``, stop it, start or schedule the next; raises PolicyProcessError."""
        with self._lock:
            closed = self._closed
            if self._worker is worker:
                self._worker = None
        worker.stop(graceful=False)
        if closed:
            raise PolicyProcessError(f"policy process closed ({reason})")
        self.failures += 1
        self.failures_in_a_row += 1
        self.last_failure = reason
        if self.failures_in_a_row > self.max_restarts or self.spec is None:  # None: never started
            self._given_up = True
        else:  # start the replacement now or after the back-off: it loads while the next goal waits
            delay = 0.0 if self.failures_in_a_row == 1 else self.backoff_s * 2 ** (self.failures_in_a_row - 2)
            self._restart = threading.Timer(delay, self._respawn)
            self._restart.daemon = True
            self._restart.start()
        raise PolicyProcessError(reason)

    def _respawn(self) -> None:
        try:
            self._spawn()
        except (OSError, PolicyProcessError) as exc:
            self.last_failure += f"; restart failed: {exc}"

    # --- images through shared memory ---------------------------------------------------------------
    def _write_images(self, images: dict[str, np.ndarray]) -> list[tuple[str, int, tuple[int, ...], str]]:
        arrays = {name: np.asarray(img) for name, img in images.items()}
        needed = sum(a.nbytes for a in arrays.values())
        if needed > self._shm_size:
            if self._shm is not None:
                self._shm.close()
            self._shm_size = max(needed, 2 * self._shm_size)
            os.ftruncate(self._shm_fd, self._shm_size)
            self._shm = mmap.mmap(self._shm_fd, self._shm_size)
        layout, offset = [], 0
        for name, array in arrays.items():
            np.ndarray(array.shape, array.dtype, buffer=self._shm, offset=offset)[...] = array  # the one copy
            layout.append((name, offset, array.shape, array.dtype.str))
            offset += array.nbytes
        return layout


# ------------------------------------------------------------------------------ the child process
def _load_factory(name: str):
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def serve(conn: Connection, shm_fd: int) -> int:
    """The child's loop: build the policy, then answer one request at a time until told to stop."""
    _, factory, kwargs, parent_path = conn.recv()
    sys.path.extend(p for p in parent_path if p not in sys.path)
    try:
        policy = _load_factory(factory)(**kwargs)
    except BaseException as exc:
        traceback.print_exc()
        conn.send(("error", 0, f"{factory}: {type(exc).__name__}: {exc}"))
        return 1
    conn.send(("ready", 0, {"spec": policy.spec, "pid": os.getpid(), "rtc": policy.real_time_chunking()}))
    contexts: OrderedDict[int, InstructionContext] = OrderedDict()
    shm: mmap.mmap | None = None
    while True:
        try:
            kind, seq, payload = conn.recv()
        except EOFError:  # the parent is gone
            return 0
        if kind == "close":
            return 0
        try:
            if kind == "encode":
                context_id, text = payload
                ctx = policy.encode_instruction(text)
                contexts[context_id] = ctx
                while len(contexts) > CONTEXTS_KEPT:
                    contexts.popitem(last=False)
                reply = {"num_tokens": ctx.num_tokens, "truncated": ctx.truncated,
                         "dropped_tokens": ctx.dropped_tokens}
            elif kind == "predict":
                context_id, stamp, state, size, layout, committed = payload
                if shm is None or len(shm) != size:
                    shm = mmap.mmap(shm_fd, size)  # the old map goes when the last view of it does
                images = {name: np.ndarray(shape, np.dtype(dtype), buffer=shm, offset=offset)
                          for name, offset, shape, dtype in layout}
                chunk = policy.predict_chunk(Observation(stamp, images, state, committed),
                                             contexts[context_id])
                del images
                reply = (float(chunk.t_obs), np.asarray(chunk.actions), float(chunk.dt), dict(chunk.info))
            elif kind == "reset":
                policy.reset()
                reply = None
            else:
                raise ValueError(f"unknown request {kind!r}")
        except Exception as exc:
            traceback.print_exc()
            conn.send(("error", seq, f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", seq, reply))


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends us (close, or EOF when it dies)
    conn_fd, shm_fd = (int(a) for a in (argv if argv is not None else sys.argv[1:]))
    return serve(Connection(conn_fd), shm_fd)


if __name__ == "__main__":
    raise SystemExit(main())
