"""Run untrusted Python (model-written code) in a separate, confined process.

Layers, strongest available first (`sandbox_mode()` says which are active on this machine):

- Linux namespaces through `unshare` (util-linux), probed once: a new network namespace (no
  interface but a down loopback: every connect fails), a PID namespace whose init is killed with
  the runner (no process outlives a run, even one that left the process group), and a mount
  namespace where every mount but the private work directory (and /proc, /dev) is remounted
  read-only: writing outside the work directory fails with EROFS.
- Without `unshare`: Python-level guards in the program's preamble: `socket.socket` refuses to be
  created and `open`/`os.open` refuse to write outside the work directory. These stop mistakes,
  not a determined attacker (ctypes can go around them).
- Always: a new session (process group) killed as a whole at the wall-clock timeout; rlimits on
  CPU time, address space, file size and process count (RLIMIT_NPROC is ignored for root, so as
  root a pids cgroup caps the process count when the cgroup v1 `pids` controller is writable);
  stdout and stderr capped at `max_output_bytes` (the run is killed past it); a private temporary
  directory as cwd, HOME and TMPDIR, removed afterwards; `python -I` (no user site, no env vars).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "killed"]

MAX_PROCS = 32
CGROUP_PIDS = Path("/sys/fs/cgroup/pids")

_BOOTSTRAP = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
if cfg["namespaces"]:
    # In the new mount namespace: the work directory becomes its own writable mount, every other
    # mount is remounted read-only (keeping the flags a user namespace may not drop).
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    BIND, REMOUNT, RDONLY = 4096, 32, 1
    OPT = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
    w = cfg["workdir"].encode()
    if libc.mount(w, w, None, BIND, None) != 0:
        sys.exit(97)
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        mp = f[4].encode().decode("unicode_escape").encode("latin-1")
        if mp == w or mp in (b"/proc", b"/dev", b"/dev/pts") or mp.startswith(b"/proc/"):
            continue
        flags = BIND | REMOUNT | RDONLY
        for o in f[5].split(","):
            flags |= OPT.get(o, 0)
        libc.mount(None, mp, None, flags, None)
    os.chdir(cfg["workdir"])  # the inherited cwd still points into the read-only mount
for name, value in cfg["limits"].items():
    lim = getattr(resource, name)
    soft, hard = resource.getrlimit(lim)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(lim, (value, value))
if not cfg["namespaces"]:
    import builtins, socket
    root = os.path.realpath(cfg["workdir"])

    class _NoSocket(socket.socket):
        def __init__(self, *a, **k):
            raise PermissionError("network access is disabled in the sandbox")

    socket.socket = _NoSocket
    socket.create_connection = lambda *a, **k: _NoSocket()

    def _inside(path):
        if isinstance(path, int):
            return True
        p = os.path.realpath(os.fsdecode(path))
        return p == root or p.startswith(root + os.sep) or p == os.devnull

    _open, _os_open = builtins.open, os.open

    def _guarded_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and not _inside(file):
            raise PermissionError(f"writing outside the sandbox directory: {file}")
        return _open(file, mode, *a, **k)

    def _guarded_os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND) and not _inside(path):
            raise PermissionError(f"writing outside the sandbox directory: {path}")
        return _os_open(path, flags, *a, **k)

    builtins.open, os.open = _guarded_open, _guarded_os_open
src = open("program.py", encoding="utf-8").read()
sys.argv = ["program.py"]
exec(compile(src, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""

# Probe: the namespaces work when / is read-only and the work directory writable inside them.
_PROBE = """
import os
try:
    open("/x_gaperon_probe", "w")
except OSError:
    pass
else:
    os.remove("/x_gaperon_probe")
    raise SystemExit(1)
open("ok", "w").write("ok")
"""


@dataclass
class SandboxResult:
    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    reason: str = ""


@functools.lru_cache(maxsize=1)
def _unshare_argv() -> tuple[str, ...] | None:
    """The unshare prefix when this machine allows unprivileged (or root) namespaces, else None."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return None
    argv = (exe, "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child")
    with tempfile.TemporaryDirectory() as d:
        Path(d, "program.py").write_text(_PROBE)
        cfg = {"limits": {}, "namespaces": True, "workdir": d}
        try:
            r = subprocess.run(
                [*argv, sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(cfg)],
                capture_output=True,
                timeout=20,
                cwd=d,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return argv if r.returncode == 0 and Path(d, "ok").exists() else None


def _cgroups_usable() -> bool:
    return os.geteuid() == 0 and CGROUP_PIDS.is_dir() and os.access(CGROUP_PIDS, os.W_OK)


def sandbox_mode() -> dict[str, bool]:
    """Which containment layers this machine gives (see the module docstring)."""
    ns = _unshare_argv() is not None
    return {
        "namespaces": ns,
        "python_guards": not ns,
        "rlimit_nproc": os.geteuid() != 0,
        "pids_cgroup": _cgroups_usable(),
    }


def _user_procs() -> int:
    uid = os.getuid()
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                n += p.stat().st_uid == uid
            except OSError:
                pass
    return n


class _Capped:
    """Drain a pipe in a thread, keeping at most `cap` bytes; `over` is set when it overflows."""

    def __init__(self, pipe, cap: int, over: threading.Event) -> None:
        self.buf = bytearray()
        self.cap, self.over = cap, over
        self.thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self.thread.start()

    def _drain(self, pipe) -> None:
        while chunk := pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536):
            room = self.cap - len(self.buf)
            if room > 0:
                self.buf += chunk[:room]
            if len(chunk) > room:
                self.over.set()
                break
        pipe.close()

    def text(self) -> str:
        self.thread.join(timeout=5)
        return self.buf.decode("utf-8", errors="replace")


def _make_cgroup() -> Path | None:
    if not _cgroups_usable():
        return None
    cg = CGROUP_PIDS / f"gaperon-sandbox-{uuid.uuid4().hex[:12]}"
    try:
        cg.mkdir()
        (cg / "pids.max").write_text(str(MAX_PROCS))
    except OSError:
        return None
    return cg


def _kill_all(proc: subprocess.Popen, cg: Path | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cg is not None:  # anything that left the process group is still in the cgroup
        for _ in range(50):
            try:
                pids = [int(p) for p in (cg / "cgroup.procs").read_text().split()]
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)


def run_sandboxed(
    program: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_output_bytes: int = 65536,
    max_file_bytes: int = 16 << 20,
) -> SandboxResult:
    """Run the Python source `program` confined; `passed` means it exited 0 within every limit."""
    ns = _unshare_argv()
    work = Path(tempfile.mkdtemp(prefix="gaperon-sandbox-"))
    cg = _make_cgroup()
    try:
        (work / "program.py").write_text(program, encoding="utf-8")
        limits = {
            "RLIMIT_CPU": max(1, int(timeout_s + 1)),
            "RLIMIT_AS": memory_mb << 20,
            "RLIMIT_FSIZE": max_file_bytes,
        }
        if os.geteuid() != 0 and Path("/proc").is_dir():  # the limit counts all the user's processes
            limits["RLIMIT_NPROC"] = _user_procs() + MAX_PROCS
        cfg = {"limits": limits, "namespaces": ns is not None, "workdir": str(work)}
        argv: list[str] = [*(ns or ()), sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(cfg)]
        if cg is not None:
            argv = ["sh", "-c", 'echo 0 > "$0/cgroup.procs" && exec "$@"', str(cg), *argv]
        env = {"HOME": str(work), "TMPDIR": str(work), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        return _run(argv, work, env, timeout_s, max_output_bytes, cg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if cg is not None:
            try:
                cg.rmdir()
            except OSError:
                pass


def _run(
    argv: list[str], work: Path, env: dict[str, str], timeout_s: float, max_output: int, cg: Path | None
) -> SandboxResult:
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    over = threading.Event()
    out, err = _Capped(proc.stdout, max_output, over), _Capped(proc.stderr, max_output, over)
    deadline = start + timeout_s
    status: Status | None = None
    reason = ""
    while proc.poll() is None:
        if over.is_set():
            status, reason = "killed", f"output over {max_output} bytes"
            break
        if time.monotonic() > deadline:
            status, reason = "timeout", f"still running after {timeout_s:g}s"
            break
        time.sleep(0.005)
    _kill_all(proc, cg)
    rc = proc.wait()
    duration = time.monotonic() - start
    stdout, stderr = out.text(), err.text()
    if status is None:
        status, reason = _classify(rc, over.is_set(), max_output)
    return SandboxResult(status, rc, stdout, stderr, duration, reason)


def _classify(rc: int, over: bool, max_output: int) -> tuple[Status, str]:
    if over:
        return "killed", f"output over {max_output} bytes"
    if rc == 0:
        return "passed", ""
    # A signal shows as -N directly, or as 128+N through unshare/sh.
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    if sig:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return "killed", f"signal {name}"
    return "failed", f"exit status {rc}"
