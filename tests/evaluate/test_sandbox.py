"""Each escape attempt of model-written code is contained and scored as a failure."""

from __future__ import annotations

import time

import pytest

from gaperon.evaluate import sandbox
from gaperon.evaluate.sandbox import run_sandboxed, sandbox_mode


@pytest.fixture(params=["best", "python_guards"])
def layers(request, monkeypatch):
    """Run a test with the best layers of this machine, then with the no-namespace fallback."""
    if request.param == "python_guards":
        monkeypatch.setattr(sandbox, "_unshare_argv", lambda: None)
    return request.param


def test_a_correct_program_passes_and_its_output_comes_back():
    r = run_sandboxed(
        "import os, sys\nprint(sum(range(10)))\nprint('err', file=sys.stderr)\nprint(os.getcwd())"
    )
    assert r.status == "passed" and r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "45" and "gaperon-sandbox-" in lines[1]
    assert r.stderr.strip() == "err"


def test_a_failing_program_fails():
    r = run_sandboxed("def f():\n    return 1\nassert f() == 2, 'wrong'\n")
    assert r.status == "failed" and r.returncode == 1
    assert "AssertionError: wrong" in r.stderr


def test_home_and_tmp_are_private_and_removed():
    r = run_sandboxed(
        "import os, tempfile\nprint(os.environ['HOME'])\nprint(tempfile.gettempdir())\n"
        "open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())"
    )
    home, tmp, content = r.stdout.split()
    assert r.status == "passed" and home == tmp and content == "ok"
    assert "gaperon-sandbox-" in home
    import os

    assert not os.path.exists(home)


def test_writing_outside_its_directory_is_refused(tmp_path, layers):
    target = tmp_path / "escaped.txt"
    r = run_sandboxed(f"open({str(target)!r}, 'w').write('pwned')")
    assert r.status == "failed"
    assert not target.exists()
    r = run_sandboxed(f"import os\nos.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))")
    assert r.status == "failed" and not target.exists()
    assert run_sandboxed("open('inside.txt', 'w').write('fine')").status == "passed"


def test_opening_a_socket_fails(layers):
    prog = "import socket\ns = socket.create_connection(('127.0.0.1', 22), timeout=2)\nprint('connected')"
    r = run_sandboxed(prog)
    assert r.status == "failed" and "connected" not in r.stdout


def test_sleeping_forever_times_out_quickly():
    t = time.monotonic()
    r = run_sandboxed("import time\ntime.sleep(1000)", timeout_s=1.5)
    assert r.status == "timeout" and time.monotonic() - t < 10


def test_a_fork_bomb_is_contained(tmp_path):
    mode = sandbox_mode()
    if not (mode["pids_cgroup"] or mode["rlimit_nproc"]):
        pytest.skip("no process-count limit on this machine (root without a writable pids cgroup)")
    prog = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    t = time.monotonic()
    r = run_sandboxed(prog, timeout_s=2)
    assert r.status in ("timeout", "killed")
    assert time.monotonic() - t < 15


def test_a_child_that_leaves_the_process_group_dies_with_the_run(tmp_path):
    # The child detaches into its own session and would write a file 2 s later if it survived.
    marker = "survivor-" + str(time.time_ns())
    prog = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(2)\n"
        f"    os.system('echo alive > /dev/shm/{marker}')\n"
        "    os._exit(0)\n"
        "time.sleep(100)\n"
    )
    r = run_sandboxed(prog, timeout_s=1)
    assert r.status == "timeout"
    time.sleep(2.5)
    import os

    assert not os.path.exists(f"/dev/shm/{marker}")


def test_allocating_10_gb_fails():
    r = run_sandboxed("x = bytearray(10 * 1024**3)\nprint('allocated')", memory_mb=512)
    assert r.status in ("failed", "killed") and "allocated" not in r.stdout


def test_printing_1_gb_is_cut_and_killed():
    t = time.monotonic()
    r = run_sandboxed(
        "import sys\nfor _ in range(16384):\n    sys.stdout.write('x' * 65536)\n",
        max_output_bytes=100_000,
        timeout_s=30,
    )
    assert r.status == "killed" and len(r.stdout) <= 100_000
    assert time.monotonic() - t < 20


def test_writing_a_huge_file_in_its_own_directory_is_stopped():
    r = run_sandboxed(
        "f = open('big', 'wb')\nfor _ in range(64):\n    f.write(b'x' * (1 << 20))\nf.close()",
        max_file_bytes=4 << 20,
    )
    assert r.status in ("failed", "killed")
