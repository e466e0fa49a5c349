"""The files of the single-node SLURM cluster (``runners.services.slurm_cluster``): where they live under
its folder, and ``slurm.conf`` and ``slurmdbd.conf`` as written for this machine.

Ports and paths are the cluster's own, so a system munge, MariaDB or SLURM on the machine is left
alone: slurmctld and slurmd listen on 127.0.0.1 only, with ``proctrack/linuxproc``, ``task/none``
and ``select/cons_tres`` (no cgroups); accounting goes through slurmdbd to the cluster's MariaDB.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLUSTER = "ptycho"
PARTITION = "ptycho"
ACCOUNT = "ptycho"
PORTS = {"slurmctld": 16817, "slurmd": 16818, "slurmdbd": 16819, "mariadbd": 16306}  # all on 127.0.0.1
KILL_WAIT_S = 5  # SLURM's KillWait: a cancelled job's SIGTERM to SIGKILL


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be brought up here; the message says why and what would fix it."""


def default_root() -> Path:
    return Path(os.environ.get("PTYCHO_SLURM_DIR", "/tmp/ptycho-slurm"))


@dataclass(frozen=True)
class Layout:
    """The cluster's files under ``root``."""

    root: Path

    @property
    def slurm_conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket.2"

    @property
    def mysql_socket(self) -> Path:
        return self.root / "mysql" / "mysqld.sock"

    @property
    def unavailable(self) -> Path:
        return self.root / "unavailable"

    def pid_file(self, daemon: str) -> Path:
        """In a folder the daemon's user may write: munged's and mariadbd's beside their data."""
        folder = {"munged": "munge", "mariadbd": "mysql"}.get(daemon, "run")
        return self.root / folder / f"{daemon}.pid"

    def log(self, daemon: str) -> Path:
        return self.root / "log" / f"{daemon}.log"

    def env(self) -> dict[str, str]:
        """The environment of a SLURM client command (sbatch, sacct, ...) for this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf)}


def write_config(layout: Layout) -> None:
    """slurm.conf and slurmdbd.conf for this machine (rewritten on every ``up``)."""
    for folder in ("run", "log", "state", "spool"):
        (layout.root / folder).mkdir(exist_ok=True)
    layout.root.chmod(0o755)  # munged refuses a socket folder that others may write
    host = socket.gethostname().split(".")[0]
    node = _node_line(host)
    root = layout.root
    layout.slurm_conf.write_text(f"""\
# runners.services.slurm_cluster: one node, this machine, on 127.0.0.1
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={PORTS['slurmctld']}
SlurmdPort={PORTS['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={layout.munge_socket}
CommunicationParameters={_bind_options(host)}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={layout.pid_file('slurmctld')}
SlurmdPidFile={layout.pid_file('slurmd')}
SlurmctldLogFile={layout.log('slurmctld')}
SlurmdLogFile={layout.log('slurmd')}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait={KILL_WAIT_S}
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={PORTS['slurmdbd']}
AccountingStoragePass={layout.munge_socket}
{node} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""", encoding="utf-8")
    dbd_conf = root / "slurmdbd.conf"
    password = db_password(layout)
    dbd_conf.write_text(f"""\
# runners.services.slurm_cluster: accounting in the cluster's own MariaDB
AuthType=auth/munge
AuthInfo=socket={layout.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={PORTS['slurmdbd']}
SlurmUser=root
LogFile={layout.log('slurmdbd')}
PidFile={layout.pid_file('slurmdbd')}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={PORTS['mariadbd']}
StorageUser=slurm
StoragePass={password}
StorageLoc=slurm_acct_db
""", encoding="utf-8")
    dbd_conf.chmod(0o600)  # slurmdbd refuses a readable one: it holds the password


def _bind_options(host: str) -> str:
    """slurmctld on SlurmctldHost's 127.0.0.1; slurmd and srun too when this host's name resolves
    there (they bind to the name's address, which the controller must reach as NodeAddr)."""
    try:
        loopback = socket.gethostbyname(host) == "127.0.0.1"
    except OSError:
        loopback = False
    return "NoCtldInAddrAny,NoInAddrAny" if loopback else "NoCtldInAddrAny"


def _node_line(host: str) -> str:
    """``NodeName=<host> NodeAddr=127.0.0.1 CPUs=.. RealMemory=..`` as slurmd finds this machine."""
    done = subprocess.run(["slurmd", "-C"], capture_output=True, text=True)
    first = done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else ""
    fields = [item for item in first.split() if not item.startswith("NodeName=")]
    if not fields:
        raise ClusterUnavailable(f"`slurmd -C` could not describe this machine: {done.stderr.strip()}")
    return " ".join([f"NodeName={host}", "NodeAddr=127.0.0.1", *fields])


def db_password(layout: Layout) -> str:
    path = layout.root / "mysql.password"
    if not path.is_file():
        path.write_text(secrets.token_hex(16), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()
