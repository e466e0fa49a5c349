"""A single-node SLURM cluster with accounting on this machine, in one folder (issue 11).

    python -m runners.services.slurm_cluster up       # install if missing (apt, as root), start, wait for the node
    python -m runners.services.slurm_cluster status   # what runs; exit 0 when the node takes jobs
    python -m runners.services.slurm_cluster down     # cancel its jobs, stop every daemon, remove the folder

For the SLURM test and for trying ``hydra/launcher=slurm`` by hand, not for production: one node
(this machine) serving its own controller. munged runs as the ``munge`` user on a socket of its
own; MariaDB (as ``mysql``) holds the accounting database behind slurmdbd, which ``sacct`` needs:
without it submitit never learns that a job was cancelled before it wrote a result. Its ports,
paths and configuration (127.0.0.1 only, no cgroups): ``runners.services.slurm_config``.

Everything lives under ``root`` (default ``$PTYCHO_SLURM_DIR`` or ``/tmp/ptycho-slurm``):
``slurm.conf`` and ``slurmdbd.conf``, ``munge/`` (key, socket), ``mysql/`` (database),
``state/``, ``spool/``, ``run/`` (pid files), ``log/``. Clients find the cluster through
``SLURM_CONF=<root>/slurm.conf``. ``up`` is idempotent (it starts what is not running); when it
cannot bring the cluster up, it says why and leaves the reason in ``<root>/unavailable`` for the
test to report.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runners.services.slurm_config import (
    ACCOUNT, CLUSTER, KILL_WAIT_S, PARTITION, PORTS, ClusterUnavailable, Layout, db_password, default_root,
    write_config,
)

PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server", "mariadb-client")
BINARIES = ("munged", "mungekey", "mariadb-install-db", "mariadbd", "mariadb", "mariadb-admin", "slurmdbd",
            "slurmctld", "slurmd", "sbatch", "sacct", "sacctmgr", "scancel", "squeue", "sinfo", "runuser")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")  # in start order
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15


@dataclass(frozen=True)
class Status:
    """What runs (daemon -> pid or None), the node's state (``idle``, ``mixed``, ...; None when
    unknown) and, when the cluster does not take jobs, why."""

    daemons: dict[str, int | None]
    node_state: str | None
    reason: str | None

    @property
    def up(self) -> bool:
        return self.reason is None


def up(root: Path | None = None, install: bool = True) -> Status:
    """Bring the cluster up (install with apt first if ``install``); raises ClusterUnavailable."""
    layout = Layout((root or default_root()).resolve())
    try:
        _check_machine(install)
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.unavailable.unlink(missing_ok=True)
        write_config(layout)
        for daemon in DAEMONS:
            if _alive(layout, daemon) is None:
                _check_port(daemon)
                STARTERS[daemon](layout)
        _register_accounting(layout)
        return _wait_for_node(layout)
    except ClusterUnavailable as exc:
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.unavailable.write_text(f"{exc}\n", encoding="utf-8")
        raise


def down(root: Path | None = None) -> None:
    """Cancel the cluster's jobs, stop its daemons and remove ``root``."""
    layout = Layout((root or default_root()).resolve())
    if not layout.root.exists():
        return
    if _alive(layout, "slurmctld") is not None:
        _cancel_jobs(layout)
    _stop(layout)
    shutil.rmtree(layout.root)


def status(root: Path | None = None) -> Status:
    """The cluster's state; ``reason`` says why it takes no jobs (the failed ``up``'s reason when
    there was one)."""
    layout = Layout((root or default_root()).resolve())
    daemons = {daemon: _alive(layout, daemon) for daemon in DAEMONS}
    if layout.unavailable.is_file():
        return Status(daemons, None, layout.unavailable.read_text(encoding="utf-8").strip())
    if not layout.slurm_conf.is_file():
        return Status(daemons, None, f"no cluster in {layout.root}: `python -m runners.services.slurm_cluster up` starts one")
    stopped = [daemon for daemon, pid in daemons.items() if pid is None]
    if stopped:
        return Status(daemons, None, f"not running: {', '.join(stopped)} (`python -m runners.services.slurm_cluster up` "
                                     f"starts them; logs in {layout.root / 'log'})")
    state = _node_state(layout)
    ready = state is not None and state.rstrip("*~#") in ("idle", "mixed", "allocated", "completing")
    return Status(daemons, state, None if ready else f"the node is {state or 'unknown'} (sinfo)")


def _check_machine(install: bool) -> None:
    if sys.platform != "linux":
        raise ClusterUnavailable(f"needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise ClusterUnavailable("needs root: slurmd starts jobs as their users and munged runs as 'munge' "
                                 "(run `sudo python -m runners.services.slurm_cluster up`)")
    missing = _missing_binaries()
    if missing and install:
        _apt_install(missing)
        missing = _missing_binaries()
    if missing:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (Debian/Ubuntu: apt-get install "
                                 f"{' '.join(PACKAGES)}; `python -m runners.services.slurm_cluster up` does it as root)")


def _missing_binaries() -> list[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in BINARIES if shutil.which(name, path=search) is None]


def _apt_install(missing: list[str]) -> None:
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)}, and no apt-get to install "
                                 f"{' '.join(PACKAGES)} with")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:  # an old or empty package list: update it once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, stdin=subprocess.DEVNULL, capture_output=True)
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed (exit {done.returncode}; "
                                 f"no network or no package source?):\n{tail}")
    _say(f"installed {' '.join(PACKAGES)} in {time.monotonic() - started:.0f} s")


def _check_port(daemon: str) -> None:
    port = PORTS.get(daemon)
    if port is None:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise ClusterUnavailable(f"port 127.0.0.1:{port}, {daemon}'s, is taken by another process (a cluster "
                                     "in another folder? `python -m runners.services.slurm_cluster down --root <folder>`)")


def _start_munged(layout: Layout) -> None:
    folder = layout.munge_socket.parent
    folder.mkdir(exist_ok=True)
    key = folder / "munge.key"
    if not key.is_file():
        _run(["mungekey", "--create", f"--keyfile={key}"], "mungekey")
    for path in (folder, key):
        shutil.chown(path, "munge", "munge")
    key.chmod(0o600)
    folder.chmod(0o755)
    _spawn(layout, "munged", ["runuser", "-u", "munge", "--", "munged", f"--socket={layout.munge_socket}",
                              f"--key-file={key}", f"--pid-file={layout.pid_file('munged')}",
                              f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munged.seed'}"])
    _wait(lambda: layout.munge_socket.exists() and _alive(layout, "munged"), "munged",
          folder / "munged.log")


def _start_mariadb(layout: Layout) -> None:
    folder = layout.mysql_socket.parent
    data = folder / "data"
    folder.mkdir(exist_ok=True)
    shutil.chown(folder, "mysql", "mysql")
    if not (data / "mysql").is_dir():
        _run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}",
              "--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve"],
             "mariadb-install-db")
    _spawn(layout, "mariadbd", [
        "mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}", f"--socket={layout.mysql_socket}",
        f"--port={PORTS['mariadbd']}", "--bind-address=127.0.0.1", f"--pid-file={layout.pid_file('mariadbd')}",
        f"--log-error={layout.log('mariadbd')}", "--skip-name-resolve", "--skip-log-bin",
        "--innodb-buffer-pool-size=32M", "--innodb-use-native-aio=0"], detach=True)
    ping = ["mariadb-admin", "--no-defaults", f"--socket={layout.mysql_socket}", "ping"]
    _wait(lambda: subprocess.run(ping, capture_output=True).returncode == 0, "mariadbd", layout.log("mariadbd"))
    password = db_password(layout)
    sql = (f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
           "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
    _run(["mariadb", "--no-defaults", f"--socket={layout.mysql_socket}", "-u", "root", "-e", sql], "mariadb")


def _start_slurmdbd(layout: Layout) -> None:
    _spawn(layout, "slurmdbd", ["slurmdbd"])
    _wait(lambda: _client(layout, "sacctmgr", "-n", "list", "cluster").returncode == 0, "slurmdbd",
          layout.log("slurmdbd"))


def _start_slurmctld(layout: Layout) -> None:
    _register_accounting(layout)  # before the controller, so that it finds its cluster registered
    _spawn(layout, "slurmctld", ["slurmctld"])
    _wait(lambda: _client(layout, "scontrol", "ping").returncode == 0, "slurmctld", layout.log("slurmctld"))


def _start_slurmd(layout: Layout) -> None:
    _spawn(layout, "slurmd", ["slurmd", "-N", socket.gethostname().split(".")[0]])
    _wait(lambda: _alive(layout, "slurmd"), "slurmd", layout.log("slurmd"))


STARTERS = {"munged": _start_munged, "mariadbd": _start_mariadb, "slurmdbd": _start_slurmdbd,
            "slurmctld": _start_slurmctld, "slurmd": _start_slurmd}


def _register_accounting(layout: Layout) -> None:
    """The cluster, an account and root's association in the accounting database (once)."""
    if CLUSTER in _client(layout, "sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").stdout.split():
        return
    for args in (["add", "cluster", CLUSTER],
                 ["add", "account", ACCOUNT, f"cluster={CLUSTER}", "description=ptycho", "organization=ptycho"],
                 ["add", "user", "root", f"account={ACCOUNT}", f"cluster={CLUSTER}"]):
        done = _client(layout, "sacctmgr", "-i", *args)
        if done.returncode != 0 and "already exists" not in done.stdout + done.stderr:
            raise ClusterUnavailable(f"sacctmgr {' '.join(args)} failed: {(done.stdout + done.stderr).strip()}")


def _wait_for_node(layout: Layout) -> Status:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = status(layout.root)
        if state.up:
            return state
        if state.node_state and state.node_state.rstrip("*~#") in ("down", "drained", "draining"):
            _client(layout, "scontrol", "update", f"nodename={socket.gethostname().split('.')[0]}", "state=resume")
        time.sleep(0.2)
    raise ClusterUnavailable(f"the node did not become idle in {START_TIMEOUT_S} s: {state.reason} "
                             f"(see {layout.log('slurmd')} and {layout.log('slurmctld')})")


def _node_state(layout: Layout) -> str | None:
    done = _client(layout, "sinfo", "-h", "-N", "-o", "%T")
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() else None


def _cancel_jobs(layout: Layout) -> None:
    """Cancel every job and wait until they are gone, so that no job step outlives slurmd."""
    _client(layout, "scancel", f"--partition={PARTITION}")
    deadline = time.monotonic() + KILL_WAIT_S + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        listed = _client(layout, "squeue", "-h", "-o", "%i")
        if listed.returncode != 0 or not listed.stdout.strip():
            return
        time.sleep(0.5)
    _say(f"jobs still listed after {KILL_WAIT_S + STOP_TIMEOUT_S} s: {listed.stdout.split()}")


def _client(layout: Layout, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), env=layout.env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30)


def _spawn(layout: Layout, daemon: str, command: list[str], detach: bool = False) -> None:
    """Start a daemon in a session of its own, its output to its log (never to our pipes)."""
    layout.pid_file(daemon).unlink(missing_ok=True)
    with open(layout.log(daemon) if detach else os.devnull, "ab") as output:
        process = subprocess.Popen(command, env=layout.env(), cwd=layout.root, stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    if not detach:  # it forks and writes its pid file; the first process ends
        code = process.wait(START_TIMEOUT_S)
        if code != 0:
            raise ClusterUnavailable(f"{daemon} did not start (exit {code}): {_tail(layout.log(daemon))}")


def _wait(ready, daemon: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise ClusterUnavailable(f"{daemon} was not ready after {START_TIMEOUT_S} s: {_tail(log)}")


def _alive(layout: Layout, daemon: str) -> int | None:
    """The daemon's pid when its pid file names a live process of that name."""
    try:
        pid = int(layout.pid_file(daemon).read_text().split()[0])
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if name == daemon[:15] and state not in ("Z", "X") else None


def _stop(layout: Layout) -> None:
    """SIGTERM to every daemon at once (the folder goes next, so no order matters); SIGKILL to
    those still running after STOP_TIMEOUT_S."""
    pids = {daemon: pid for daemon in DAEMONS if (pid := _alive(layout, daemon)) is not None}
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids.values()):
        time.sleep(0.1)
    for daemon, pid in pids.items():
        if Path(f"/proc/{pid}").exists():
            _say(f"{daemon} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT_S} s: killed")
            os.kill(pid, signal.SIGKILL)


def _run(command: list[str], name: str) -> None:
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-1500:]
        raise ClusterUnavailable(f"{name} failed (exit {done.returncode}): {output}")


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else f"(no log {path})"
    return "\n".join(text.strip().splitlines()[-lines:])


def _say(text: str) -> None:
    print(f"slurm_cluster: {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.services.slurm_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--root", type=Path, default=None,
                        help="the cluster's folder (default: $PTYCHO_SLURM_DIR or /tmp/ptycho-slurm)")
    parser.add_argument("--no-install", action="store_true", help="fail rather than apt-get install what is missing")
    args = parser.parse_args(argv)
    layout = Layout((args.root or default_root()).resolve())
    started = time.monotonic()
    if args.action == "down":
        down(layout.root)
        _say(f"down: {layout.root} removed")
        return 0
    if args.action == "up":
        try:
            up(layout.root, install=not args.no_install)
        except ClusterUnavailable as exc:
            _say(f"cannot bring the cluster up: {exc}")
            return 1
        _say(f"up in {time.monotonic() - started:.1f} s")
    state = status(layout.root)
    for daemon, pid in state.daemons.items():
        _say(f"  {daemon:<10} {'pid ' + str(pid) if pid else 'not running'}")
    _say(f"node: {state.node_state or '-'}; partition {PARTITION}" if state.up else f"not up: {state.reason}")
    _say(f"clients: export SLURM_CONF={layout.slurm_conf}")
    return 0 if state.up else 1


if __name__ == "__main__":
    sys.exit(main())
