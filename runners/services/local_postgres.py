"""A PostgreSQL cluster of this machine's binaries, in one folder, for an MLflow tracking server.

Layout of the folder (``root``): ``data/`` (the cluster), ``password`` (the password of the
``mlflow`` role, mode 0600) and ``postgres.log``. The cluster is made on first use
(``initdb``, database ``mlflow``) and reused by later starts, so run metadata survives a
restart. It listens on 127.0.0.1 only, without a Unix socket, and asks for the password
(scram-sha-256).

PostgreSQL refuses to run as root: started by root, every PostgreSQL command runs as the
``postgres`` user (``runuser``), who then owns ``root`` and must be able to reach it.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

ROLE = "mlflow"
DATABASE = "mlflow"
SYSTEM_USER = "postgres"  # the account PostgreSQL runs under when started by root
SEARCH_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then the distributions'
    usual places, newest version first), or None when PostgreSQL is not installed."""
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").is_file():
        return Path(on_path).resolve().parent
    for pattern in SEARCH_DIRS:
        found = sorted(Path("/").glob(pattern.lstrip("/")), key=_version_key, reverse=True)
        for folder in found:
            if (folder / "pg_ctl").is_file() and (folder / "initdb").is_file():
                return folder
    return None


def _version_key(folder: Path) -> tuple[int, str]:
    digits = "".join(ch for ch in folder.parent.name if ch.isdigit())
    return (int(digits) if digits else 0, str(folder))


class LocalPostgres:
    """The cluster in ``root``, served on ``127.0.0.1:port`` between :meth:`start` and :meth:`stop`."""

    def __init__(self, root: Path, port: int, bin_dir: Path | None = None):
        self.root = Path(root).resolve()
        self.port = port
        self.bin_dir = bin_dir or find_bin_dir()
        if self.bin_dir is None:
            raise FileNotFoundError(
                "no PostgreSQL binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin: "
                "install PostgreSQL (Debian: apt-get install postgresql) or give a database URI instead")
        self.as_owner = _owner_prefix()
        self.data = self.root / "data"
        self.created = False

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI of the ``mlflow`` database, password included."""
        password = (self.root / "password").read_text(encoding="utf-8").strip()
        return f"postgresql+psycopg2://{ROLE}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> str:
        """Create the cluster if ``root`` holds none, start it, make sure the database exists;
        returns :attr:`uri`."""
        self._prepare_root()
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w",
                  "-t", str(START_TIMEOUT_S), "-o", f"-p {self.port}", "start")
        try:
            self._ensure_database()
        except BaseException:
            self.stop()
            raise
        return self.uri

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: open sessions are ended, nothing is lost)."""
        if (self.data / "postmaster.pid").is_file():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.as_owner:
            return
        shutil.chown(self.root, SYSTEM_USER, SYSTEM_USER)
        reachable = subprocess.run([*self.as_owner, "test", "-w", str(self.root)], cwd="/")
        if reachable.returncode != 0:
            raise PermissionError(
                f"the '{SYSTEM_USER}' user cannot write {self.root}: PostgreSQL refuses to run as root, so its "
                f"folder and every folder above it must be open to '{SYSTEM_USER}' (`namei -l {self.root}` shows "
                f"which is not); choose one under /var/tmp or /srv, or run as a normal user")

    def _initdb(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
        password_file.chmod(0o600)
        if self.as_owner:
            shutil.chown(password_file, SYSTEM_USER, SYSTEM_USER)
        self._run("initdb", "-D", str(self.data), "-U", ROLE, "-A", "scram-sha-256",
                  f"--pwfile={password_file}", "-E", "UTF8", "--no-locale")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# runners.services.local_postgres: loopback only, no Unix socket\n"
                       "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
        self.created = True

    def _ensure_database(self) -> None:
        import psycopg2

        server_uri = self.uri.replace("postgresql+psycopg2://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
        connection = psycopg2.connect(server_uri)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            connection.close()

    def _run(self, tool: str, *args: str) -> None:
        """A PostgreSQL tool as the cluster's owner; a failure names the tool and shows its output
        and the server log's tail."""
        done = subprocess.run([*self.as_owner, str(self.bin_dir / tool), *args], cwd=self.root,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{tool} failed (exit {done.returncode}) for the cluster in {self.root}:\n"
                               f"{done.stdout.strip()}\n{tail}".rstrip())


def _owner_prefix() -> list[str]:
    """The command prefix that runs a PostgreSQL tool as its owner: none for a normal user,
    ``runuser -u postgres --`` for root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("PostgreSQL refuses to run as root and 'runuser' is missing: run as a normal user")
    try:
        import pwd

        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise RuntimeError(
            f"PostgreSQL refuses to run as root and there is no '{SYSTEM_USER}' user to run it as: "
            f"create one (useradd --system {SYSTEM_USER}) or run as a normal user") from None
    return [runuser, "-u", SYSTEM_USER, "--"]
