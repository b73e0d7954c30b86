"""The team server's private PostgreSQL cluster: Debian's server programs run on the state folder."""

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.files import atomic_path
from mnist_pipeline.server import studies
from mnist_pipeline.server.config import PG_PORT, ServerError, ServerPaths
from mnist_pipeline.server.studies import StudiesAccess

DATABASES = ("mlflow", "mlflow_auth")  # runs and models; basic-auth's users and permissions
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian keeps the server programs off PATH
PG_PROGRAMS = ("initdb", "pg_ctl", "psql", "createdb")
SOCKET_PATH_MAX = 107  # bytes in a Unix socket path on Linux
SETTINGS = "mnist_pipeline.conf"  # in the data folder, included by postgresql.conf; rewritten on every start


@dataclass(frozen=True)
class Postgres:
    """Debian's PostgreSQL server programs, run on the cluster in the state folder."""

    bin: Path
    owner: pwd.struct_passwd | None  # the user to run them as; None: this process's user
    paths: ServerPaths

    @classmethod
    def find(cls, paths: ServerPaths, pattern: str = PG_BIN_GLOB) -> "Postgres":
        return cls(find_pg_bin(pattern), pg_owner(), paths)

    def running(self) -> bool:
        # pg_ctl status: 0 running, 3 not running.
        return self._run("pg_ctl", "status", "-D", str(self.paths.data), check=False).returncode == 0

    def listening(self) -> tuple[str, int] | None:
        """The running cluster's TCP address ('' for none) and port, from its postmaster.pid."""
        if not (self.paths.has_cluster() and self.running()):
            return None
        lines = (self.paths.data / "postmaster.pid").read_text().split("\n")
        return lines[5].strip(), int(lines[3])  # PostgreSQL's LOCK_FILE_LINE_LISTEN_ADDR and _PORT

    def prepare(self, port: int) -> None:
        """Create the state folder, and the cluster's folder in it owned by PostgreSQL's user."""
        socket_path = self.paths.pg / f".s.PGSQL.{port}"
        if len(str(socket_path).encode()) > SOCKET_PATH_MAX:
            raise ServerError(
                f"{self.paths.root} is too deep for PostgreSQL's socket ({socket_path} is over "
                f"{SOCKET_PATH_MAX} bytes): set MLFLOW_SERVER_DIR to a shorter path"
            )
        if self.owner:
            self._check_passable(self.paths.root)
        if not self.paths.root.exists():
            self.paths.root.mkdir(parents=True)
            # Only a folder made here: PostgreSQL's user (when we are root) must pass through it to its own.
            self.paths.root.chmod(0o711 if self.owner else 0o700)
        self.paths.pg.mkdir(mode=0o700, exist_ok=True)
        if self.owner:
            os.chown(self.paths.pg, self.owner.pw_uid, self.owner.pw_gid)

    def start(self, access: StudiesAccess | None) -> None:
        """Start the cluster listening where `access` says (on no TCP address without it)."""
        if not self.paths.has_cluster():
            self._create_cluster()
        wanted = (access.host, access.port) if access else ("", PG_PORT)
        if self.running() and self.listening() != wanted:
            self.stop()  # listen_addresses and port change only with a restart
        if not self.running():
            self._configure(access)
            self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-s",
                "-D",
                str(self.paths.data),
                "-l",
                str(self.paths.pg_log),
                failure=f"PostgreSQL did not start; see {self.paths.pg_log}",
            )
        self._create_databases(wanted[1])
        print(f"postgres: running, socket in {self.paths.pg}", flush=True)
        if access:
            self._psql(wanted[1], studies.open_sql(access.password), failure="cannot open the studies database")

    def stop(self) -> None:
        self._run(
            "pg_ctl",
            "stop",
            "-w",
            "-s",
            "-m",
            "fast",
            "-D",
            str(self.paths.data),
            failure=f"PostgreSQL did not stop; see {self.paths.pg_log}",
        )

    def _create_cluster(self) -> None:
        shutil.rmtree(self.paths.data, ignore_errors=True)  # what an interrupted initdb left, if anything
        # `trust` on the socket is safe because it sits in a folder only its owner (and root) can
        # enter: whoever reaches it owns the files anyway. TCP follows pg_hba.conf (see _configure).
        self._run(
            "initdb",
            "-D",
            str(self.paths.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            failure="initdb could not create the PostgreSQL cluster",
        )
        print(f"postgres: created a cluster in {self.paths.data}", flush=True)

    def _configure(self, access: StudiesAccess | None) -> None:
        """Where the cluster listens and who may connect over TCP: written afresh on every start."""
        listen, port = (access.host, access.port) if access else ("", PG_PORT)
        folder = str(self.paths.pg).replace("'", "''")
        self._write(
            self.paths.data / SETTINGS,
            "# mnist_pipeline.server: a private cluster, reached through this socket, and over TCP only\n"
            "# where the studies database is open (pg_hba.conf lets its role alone in).\n"
            f"unix_socket_directories = '{folder}'\nlisten_addresses = '{listen}'\nport = {port}\n"
            "password_encryption = 'scram-sha-256'\n",
        )
        self._write(self.paths.data / "pg_hba.conf", studies.hba_conf(access))
        conf = self.paths.data / "postgresql.conf"
        include = f"include = '{SETTINGS}'\n"
        if include not in conf.read_text():  # last, so that it wins over the lines before it
            self._write(conf, conf.read_text() + "\n" + include)

    def _write(self, path: Path, text: str) -> None:
        with atomic_path(path, mode=0o600) as tmp:
            tmp.write_text(text)
            if self.owner:
                os.chown(tmp, self.owner.pw_uid, self.owner.pw_gid)

    def _create_databases(self, port: int) -> None:
        listed = self._psql(port, "SELECT datname FROM pg_database", failure="cannot list PostgreSQL's databases")
        for name in DATABASES:
            if name not in listed.split():
                self._run(
                    "createdb", *self._client(port), name, as_owner=False, failure=f"cannot create database {name}"
                )

    def _psql(self, port: int, script: str, failure: str) -> str:
        """Run SQL given on psql's standard input, never on its command line; return what it printed."""
        return self._run(
            "psql",
            *self._client(port),
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
            "-f",
            "-",
            script=script,
            as_owner=False,
            failure=failure,
        ).stdout

    def _client(self, port: int) -> tuple[str, ...]:
        return "-h", str(self.paths.pg), "-p", str(port), "-U", "postgres"

    def _run(
        self,
        program: str,
        *args: str,
        script: str | None = None,
        as_owner: bool = True,
        check: bool = True,
        failure: str = "",
    ) -> subprocess.CompletedProcess:
        owner = self.owner if as_owner else None
        env = {name: value for name, value in os.environ.items() if name != studies.PASSWORD}
        done = subprocess.run(
            [str(self.bin / program), *args],
            input=script,
            capture_output=True,
            text=True,
            cwd=self.paths.pg,
            env=env,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
        )
        if check and done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise ServerError(f"{failure or program + ' failed'}: {said[-1] if said else f'exit {done.returncode}'}")
        return done

    def _check_passable(self, folder: Path) -> None:
        """PostgreSQL's user must pass through every folder above its own; say which it cannot."""
        assert self.owner
        for each in [*reversed(folder.parents), folder]:
            if not each.exists():
                return  # made here, passable (see prepare)
            info = each.stat()
            # The kernel asks the owner's bits of the owner, else the group's of its group (the programs
            # run with no other group, see _run), else the others'.
            bit = 0o100 if info.st_uid == self.owner.pw_uid else 0o010 if info.st_gid == self.owner.pw_gid else 0o001
            if not info.st_mode & bit:
                raise ServerError(
                    f"PostgreSQL runs as `{self.owner.pw_name}`, which cannot pass through {each} "
                    f"(mode {info.st_mode & 0o777:o}): let it (chmod o+x {each}), or set "
                    "MLFLOW_SERVER_DIR to a folder it can reach"
                )


def find_pg_bin(pattern: str = PG_BIN_GLOB) -> Path:
    """The folder of PostgreSQL's programs: pg_ctl's on PATH, else Debian's newest version."""
    on_path = shutil.which("pg_ctl")
    # A symlink on PATH leads to the real folder, where the client programs sit beside it.
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(
        (Path(p) for p in glob.glob(pattern)),
        reverse=True,
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    for folder in candidates:
        if all((folder / program).exists() for program in PG_PROGRAMS):
            return folder
    raise ServerError(
        f"PostgreSQL's programs ({', '.join(PG_PROGRAMS)}) are not installed: "
        "run `apt-get install postgresql`, or put them on PATH"
    )


def pg_owner() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:  # PostgreSQL refuses to run as root: Debian's package made this user for it
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError(
            "PostgreSQL refuses to run as root and there is no `postgres` user: "
            "run `apt-get install postgresql`, or start the server as another user"
        ) from None
