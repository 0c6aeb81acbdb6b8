"""Foreign-target execution: the artifact's object code linked for AArch64 and run under qemu-user.

    executor = CrossExecutor(artifact)        # links libmodel.so and a runner in a private temp dir
    executor.run([x], [y])                     # one request/reply with the runner (runner.c)
    executor.shared_library                    # the .so for deployment; copy it before close()
    executor.close()                           # stops the runner, removes the temp dir

The runner program stays alive across calls and speaks a small binary protocol over its
stdin/stdout (see runner.c). Calls are serialized by a lock (there is one runner). A crash or a
timeout raises RunnerError with qemu's stderr, and the runner restarts on the next call.

A forked child (multiprocessing's "fork") never talks to its parent's runner: after a fork every
executor gets a new lock (the parent's may have been held by another thread) and forgets the
parent's runner and pipes; its first call links the parent's runner and weights into a directory of
its own and starts its own runner there. Only the process that made a directory removes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import NativeError, RunnerError, RunnerTimeoutError, ToolMissingError

DEFAULT_TIMEOUT_SECONDS = 120.0  # per call; qemu runs a large model slowly, a hung one forever
BUILD_TIMEOUT_SECONDS = 300.0
STDERR_TAIL = 4000  # characters of qemu's stderr quoted in an error


@dataclass(frozen=True)
class CrossTools:
    """The programs that link and run code for one foreign architecture."""

    compiler: str  # path of the cross gcc
    qemu: str  # path of qemu-user for the architecture
    sysroot: str | None  # the target's libraries (qemu -L), when installed


# arch -> (cross gcc, its Debian package, qemu names, their Debian package, sysroot)
CROSS_TOOLCHAINS = {
    "aarch64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", ("qemu-aarch64", "qemu-aarch64-static"),
                "qemu-user", "/usr/aarch64-linux-gnu"),
}


def find_cross_tools(arch: str, path: str | None = None) -> CrossTools:
    """Locate the cross compiler and qemu for `arch` on `path` (default $PATH), or say what to install."""
    if arch not in CROSS_TOOLCHAINS:
        raise NotImplementedError(f"running {arch} code on this machine is not supported "
                                  f"(foreign architectures: {', '.join(CROSS_TOOLCHAINS)})")
    compiler_name, compiler_package, qemu_names, qemu_package, sysroot = CROSS_TOOLCHAINS[arch]
    compiler = shutil.which(compiler_name, path=path)
    if compiler is None:
        raise ToolMissingError(f"running {arch} code needs the cross compiler {compiler_name}: "
                               f"install the Debian package {compiler_package} (apt-get install {compiler_package})")
    qemu = next((found for name in qemu_names if (found := shutil.which(name, path=path))), None)
    if qemu is None:
        raise ToolMissingError(f"running {arch} code on this machine needs {' or '.join(qemu_names)}: "
                               f"install the Debian package {qemu_package} (apt-get install {qemu_package})")
    return CrossTools(compiler, qemu, sysroot if os.path.isdir(sysroot) else None)


def _byte_view(array: np.ndarray) -> memoryview:
    return memoryview(array.reshape(-1).view(np.uint8))


def _wait(fd: int, event: int, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, event)
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not poller.poll(remaining * 1000):
        raise TimeoutError


def _write_all(fd: int, views: Sequence[memoryview], deadline: float) -> None:
    for view in views:
        while view.nbytes:
            _wait(fd, select.POLLOUT, deadline)
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue


def _read_into(fd: int, view: memoryview, deadline: float) -> None:
    while view.nbytes:
        _wait(fd, select.POLLIN, deadline)
        try:
            count = os.readv(fd, [view])
        except BlockingIOError:
            continue
        if count == 0:
            raise EOFError
        view = view[count:]


class _Resources:
    """What a CrossExecutor must clean up (kept apart so the finalizer does not keep the executor alive).

    Only the process that created them cleans them up: a forked child's finalizers leave its parent's
    runner and directory alone."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.owner = os.getpid()

    def stop_runner(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                pipe.close()

    def cleanup(self) -> None:
        if os.getpid() != self.owner:
            return
        self.stop_runner()
        shutil.rmtree(self.directory, ignore_errors=True)

    def forget_after_fork(self) -> None:
        """In a forked child: drop (without killing) the parent's runner, closing this process's copies of its
        pipes, so that the runner sees the end of its input when the parent is done with it."""
        process, self.process = self.process, None
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                with contextlib.suppress(OSError):
                    pipe.close()


# Every live executor, for the fork handler below
_EXECUTORS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for executor in list(_EXECUTORS):
        executor._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class CrossExecutor:
    """Runs an artifact for a foreign target through a runner program under qemu-user."""

    def __init__(self, artifact, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS):
        self.target = artifact.target
        self.timeout_seconds = timeout_seconds
        self._threads = getattr(artifact, "threads", 1)
        self.tools = find_cross_tools(self.target.arch)
        entry = getattr(artifact, "entry", "tf_run")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", entry):
            raise ValueError(f"entry {entry!r} is not a C identifier")
        self.directory = Path(tempfile.mkdtemp(prefix="tensorforge-"))
        self._resources = _Resources(self.directory)
        weakref.finalize(self, self._resources.cleanup)
        self._lock = threading.Lock()
        self._closed = False
        self._inherited: Path | None = None  # after a fork: the parent's directory, until the child has its own
        self.shared_library = self.directory / "libmodel.so"
        self.runner = self.directory / "runner"
        self.weights_file = self.directory / "weights.bin"
        self._stderr_file = self.directory / "runner-stderr.log"
        try:
            (self.directory / "model.o").write_bytes(artifact.object_code())
            np.ascontiguousarray(artifact.weights).tofile(self.weights_file)
            (self.directory / "runner.c").write_text(resources.files(__package__).joinpath("runner.c").read_text())
            self._link(entry)
        except BaseException:
            self._resources.cleanup()
            raise
        sizes = [t.nbytes for t in artifact.input_types], [t.nbytes for t in artifact.output_types]
        self._arguments = [str(int(artifact.workspace_bytes)),
                           str(len(sizes[0])), *map(str, sizes[0]), str(len(sizes[1])), *map(str, sizes[1])]
        _EXECUTORS.add(self)

    def _after_fork(self) -> None:
        """In a forked child: a new lock, none of the parent's runner; the next call sets up this process's own."""
        self._lock = threading.Lock()
        self._resources.forget_after_fork()
        if self._closed:
            return
        self._inherited = self.directory

    def _own_directory(self) -> None:
        """A forked child's first call: the parent's runner and weights linked (or copied) into a new directory
        of this process, with its own finalizer."""
        parent, self._inherited = self._inherited, None
        directory = Path(tempfile.mkdtemp(prefix="tensorforge-"))
        try:
            for name in ("runner", "weights.bin", "libmodel.so"):
                if name == "libmodel.so" and not (parent / name).exists():
                    continue
                try:
                    os.link(parent / name, directory / name)
                except OSError:
                    shutil.copy2(parent / name, directory / name)
        except OSError as err:
            shutil.rmtree(directory, ignore_errors=True)
            raise RunnerError(f"this process was forked from the one that compiled the {self.target.name} model, "
                              f"and its runner's files are gone ({err}): the parent closed the model. Compile it in "
                              f"this process, or keep it open in the parent") from None
        self.directory = directory
        self._resources = _Resources(directory)
        weakref.finalize(self, self._resources.cleanup)
        self.runner, self.weights_file = directory / "runner", directory / "weights.bin"
        self.shared_library = directory / "libmodel.so"
        self._stderr_file = directory / "runner-stderr.log"

    def _link(self, entry: str) -> None:
        """Link libmodel.so and the (static) runner from model.o, both compilers at once.

        Threaded code (artifact.threads > 1) runs its own pthreads (codegen/threads/thread_pool.py).
        """
        libraries = ["-lm", *(["-lpthread"] if self._threads > 1 else [])]
        commands = {
            "the shared library": [self.tools.compiler, "-shared", "-o", "libmodel.so", "model.o", *libraries],
            "the runner": [self.tools.compiler, "-O2", "-static", f"-DTF_ENTRY={entry}", "-o", "runner",
                           "runner.c", "model.o", *libraries],
        }
        jobs = {what: subprocess.Popen(command, cwd=self.directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True) for what, command in commands.items()}
        failures = []
        for what, job in jobs.items():
            try:
                output, _ = job.communicate(timeout=BUILD_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                job.kill()
                output, _ = job.communicate()
            if job.returncode != 0:
                failures.append(f"linking {what} for {self.target.name} failed ({' '.join(commands[what])}):\n{output}")
        if failures:
            raise RunnerError("\n".join(failures))

    def _stderr_tail(self) -> str:
        try:
            text = self._stderr_file.read_text(errors="replace").strip()
        except OSError:
            return "(no stderr)"
        return (text[-STDERR_TAIL:] if text else "(empty)")

    def _fail(self, what: str, error: type[RunnerError] = RunnerError) -> RunnerError:
        """Stop the runner (it restarts on the next call) and describe why, with its stderr."""
        process = self._resources.process
        code = process.poll() if process is not None else None
        self._resources.stop_runner()
        if code is None:
            how = "killed by tensorforge"
        elif code < 0:
            how = f"signal {signal.Signals(-code).name}"
        else:
            how = f"exit status {code}"
        return error(f"the {self.target.name} runner (qemu) {what} ({how}); its stderr:\n{self._stderr_tail()}")

    def _start(self, deadline: float) -> subprocess.Popen:
        command = [self.tools.qemu, *(["-L", self.tools.sysroot] if self.tools.sysroot else []), str(self.runner),
                   str(self.weights_file), *self._arguments]
        with open(self._stderr_file, "wb") as stderr:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                       cwd=self.directory, bufsize=0)
        self._resources.process = process
        os.set_blocking(process.stdin.fileno(), False)
        os.set_blocking(process.stdout.fileno(), False)
        greeting = bytearray(4)
        try:
            _read_into(process.stdout.fileno(), memoryview(greeting), deadline)
        except TimeoutError:
            raise self._fail(f"did not start within {self.timeout_seconds} s", RunnerTimeoutError) from None
        except EOFError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            raise self._fail("failed to start") from None
        except BaseException:
            self._resources.stop_runner()
            raise
        if greeting != b"TFOK":
            raise self._fail(f"sent {bytes(greeting)!r} instead of its greeting")
        return process

    def bound(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> Callable[[], None]:
        """run(inputs, outputs) as a call of no arguments (each call sends the arrays' current values)."""
        return lambda: self.run(inputs, outputs)

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        """One request to the runner: send the checked `inputs`, receive into the preallocated `outputs`."""
        with self._lock:
            if self._closed:
                raise RunnerError(f"the {self.target.name} executor is closed")
            if self._inherited is not None:
                self._own_directory()
            deadline = time.monotonic() + self.timeout_seconds
            process = self._resources.process
            if process is None:
                process = self._start(deadline)
            status = bytearray(4)
            try:
                _write_all(process.stdin.fileno(), [memoryview(b"RUN\0"), *map(_byte_view, inputs)], deadline)
                _read_into(process.stdout.fileno(), memoryview(status), deadline)
                code = int.from_bytes(status, "little", signed=True)
                if code == 0:
                    for array in outputs:
                        _read_into(process.stdout.fileno(), _byte_view(array), deadline)
            except TimeoutError:
                raise self._fail(f"did not answer within {self.timeout_seconds} s", RunnerTimeoutError) from None
            except (EOFError, BrokenPipeError):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)  # let qemu finish dying so its exit status is known
                raise self._fail("crashed while running the model") from None
            except BaseException:  # e.g. KeyboardInterrupt mid-request: the protocol is out of step
                self._resources.stop_runner()
                raise
        if code != 0:
            raise NativeError(f"tf_run returned status {code} on {self.target.name} (0 means success)", code)

    def close(self) -> None:
        """Stop the runner and remove the temporary directory (shared_library goes with it)."""
        with self._lock:
            self._closed = True
            self._resources.cleanup()
