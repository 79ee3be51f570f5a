"""The engine's process ends with the process that started it, when that parent asks (the Slicer module's Cancel kills
PythonSlicer's launcher, which does not pass its end on to the interpreter it started)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gastric_propagate import cli, parent_watch
from gastric_propagate.protocol import EXIT_CANCELLED, EXIT_WITH_PARENT_ENV, PARENT_PID_ENV

ENGINE = str(Path(parent_watch.__file__).resolve().parents[1])

# A launcher as PythonSlicer is one: it starts the real program as its own child, says its id, and waits for it.
LAUNCHER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
child.wait()
"""
# The engine's stand-in: a long run, with or without the watch.
RUN = "import time; from gastric_propagate.parent_watch import exit_with_parent; {watch}; time.sleep(60)"


def _running(pid: int) -> bool:
    """True while ``pid`` runs (an orphan that ended may wait as a zombie where nothing reaps it: that counts as
    ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _orphan_after_launcher_killed(watch: str) -> tuple[int, float | None]:
    """Starts RUN under LAUNCHER, kills the launcher as Cancel does, and returns the run's id and how long it took to
    end (None: still running after 3 s)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([ENGINE, os.environ.get("PYTHONPATH", "")])}
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, RUN.format(watch=watch)], stdout=subprocess.PIPE,
                                env=environment, text=True)
    pid = int(launcher.stdout.readline())
    time.sleep(0.5)  # the run has started its watch
    assert _running(pid)
    launcher.kill()
    launcher.wait()
    killed = time.monotonic()
    while time.monotonic() - killed < 3.0:
        if not _running(pid):
            return pid, time.monotonic() - killed
        time.sleep(0.02)
    return pid, None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_run_whose_launcher_was_killed_ends_within_half_a_second_with_the_watch_and_not_without():
    pid, ended_after = _orphan_after_launcher_killed("exit_with_parent(130)")
    assert ended_after is not None and ended_after < 0.5, ended_after

    pid, ended_after = _orphan_after_launcher_killed("pass")
    try:
        assert ended_after is None, "without the watch the orphan runs on (what Cancel left behind before)"
    finally:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_orphan_is_sent_sigterm_first_so_that_it_can_unwind(tmp_path):
    """The command line unwinds on SIGTERM (temporary outputs removed): the watch sends it before ending the process
    outright."""
    marker = tmp_path / "unwound"
    handler = (f"import signal, sys; signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w').close(), "
               "sys.exit(143))); exit_with_parent(130)")
    _pid, ended_after = _orphan_after_launcher_killed(handler)
    assert ended_after is not None and ended_after < 0.5 and marker.is_file()


@pytest.mark.parametrize("command, asked, watched", [
    ("segment", "1", True), ("serve", "1", True), ("segment", None, False), ("evaluate", "1", False)])
def test_only_segment_and_serve_watch_their_parent_and_only_when_it_asks(monkeypatch, tmp_path, command, asked,
                                                                         watched):
    calls = []
    monkeypatch.setattr(parent_watch, "exit_with_parent", lambda code: calls.append(code))
    if asked is None:
        monkeypatch.delenv(EXIT_WITH_PARENT_ENV, raising=False)
    else:
        monkeypatch.setenv(EXIT_WITH_PARENT_ENV, asked)
    monkeypatch.setitem(cli._COMMANDS, command, lambda args: 0)  # the command itself is not what is tested here

    arguments = {"segment": ["--image", str(tmp_path / "ct.nrrd"), "--annotation", str(tmp_path / "a.nrrd"),
                             "--output", str(tmp_path / "out.nrrd")],
                 "serve": [], "evaluate": ["--out", str(tmp_path / "report")]}[command]
    assert cli.main([command, *arguments]) == 0
    assert calls == ([EXIT_CANCELLED] if watched else [])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX parent ids")
@pytest.mark.parametrize("starter, ends", [("1", False), ("4242", True), (None, True)])
def test_a_child_of_process_1_runs_on_when_process_1_started_it_and_ends_when_it_was_orphaned(starter, ends):
    """A batch script run as a container's first process (PID 1) starts the engine as its own child: the engine's
    parent is 1 from the start, and ending it at once failed every run. An engine whose parent (another process, or
    one that did not say) was gone before the watch began still ends."""
    code = ("import os, time; os.getppid = lambda: 1; from gastric_propagate.parent_watch import exit_with_parent; "
            "exit_with_parent(130); time.sleep(0.6)")  # the watch looks every 0.1 s
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([ENGINE, os.environ.get("PYTHONPATH", "")])}
    environment.pop(PARENT_PID_ENV, None)
    if starter is not None:
        environment[PARENT_PID_ENV] = starter
    completed = subprocess.run([sys.executable, "-c", code], env=environment, timeout=60)
    assert (completed.returncode != 0) == ends, completed.returncode


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_run_whose_launcher_was_killed_before_its_watch_began_ends_and_one_under_its_starter_runs_on():
    """Killed before the watch began, the launcher leaves the run to a subreaper (a desktop's systemd --user), which
    lives on: the run's parent at the watch's start is then no descendant of the process that says it started it. The
    stand-in: a starter that is alive but no ancestor (a sibling). Under its real starter, through a launcher, the run
    goes on."""
    code = ("import time; from gastric_propagate.parent_watch import exit_with_parent; exit_with_parent(130); "
            "time.sleep(0.6)")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([ENGINE, os.environ.get("PYTHONPATH", "")])}
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        orphan = subprocess.run([sys.executable, "-c", code], env={**environment, PARENT_PID_ENV: str(sibling.pid)},
                                timeout=60)
    finally:
        sibling.kill()
        sibling.wait()
    launcher = "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', sys.argv[1]]))"
    under_launcher = subprocess.run([sys.executable, "-c", launcher, code],
                                    env={**environment, PARENT_PID_ENV: str(os.getpid())}, timeout=60)
    assert orphan.returncode != 0 and under_launcher.returncode == 0, (orphan.returncode, under_launcher.returncode)


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("unshare") is None, reason="Linux namespaces")
def test_an_engine_started_by_process_1_through_the_module_s_environment_is_not_ended():
    """The same as a container runs it: a new PID namespace whose first process starts the engine with the environment
    the module's launchers give (GastricPropagateLib.launchers.childEnvironment sets both variables)."""
    parent = ("import os, subprocess, sys; assert os.getpid() == 1; "
              f"env = dict(os.environ, {EXIT_WITH_PARENT_ENV}='1', {PARENT_PID_ENV}=str(os.getpid())); "
              "code = 'import time; from gastric_propagate.parent_watch import exit_with_parent; "
              "exit_with_parent(130); time.sleep(0.6)'; "
              "sys.exit(subprocess.run([sys.executable, '-c', code], env=env).returncode)")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([ENGINE, os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run(["unshare", "-Urpf", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user and PID namespaces here: {probe.stderr.decode(errors='replace').strip()}")
    completed = subprocess.run(["unshare", "-Urpf", sys.executable, "-c", parent], env=environment, timeout=60,
                               capture_output=True, text=True)
    assert completed.returncode == 0, (completed.returncode, completed.stderr)


class _Kernel32:
    """OpenProcess failing with ``error``, as Windows' kernel32 would."""

    def __init__(self, error: int) -> None:
        self.error = error
        self.OpenProcess = lambda *args: None
        self.WaitForSingleObject = lambda *args: 0


@pytest.mark.parametrize("error, watched", [(parent_watch.NO_SUCH_PROCESS_ERROR, "ended"), (5, None)])
def test_on_windows_a_parent_already_gone_ends_the_run_and_one_that_cannot_be_opened_is_not_watched(
        monkeypatch, error, watched):
    """Windows keeps no orphan's parent id: a launcher killed (Cancel) before the watch began cannot be opened
    ("no such process"), and the run must end, as an orphan does on Linux; access denied (5) leaves it unwatched."""
    import ctypes

    kernel32 = _Kernel32(error)
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error=False: kernel32, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: kernel32.error, raising=False)
    ended = parent_watch._windows_parent_ended(12345)
    if watched is None:
        assert ended is None
    else:
        assert ended(0.01) is True
