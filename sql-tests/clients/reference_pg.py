"""A real PostgreSQL server (15 on Debian 12) for differential tests: the same statements
run against it and against Runnel must answer alike.

`ReferencePostgres()` makes a throw-away cluster (initdb) owned by the
`postgres` system user when run as root (initdb refuses root), starts it on
a free port of 127.0.0.1 with user and database `runnel`, and `stop()`
removes it.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

def _pg_bin():
    """The server binaries: PostgreSQL 15 where installed (Debian 12's
    `postgresql`), else the newest version present."""
    versions = sorted((d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int)
    if not versions:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql (apt install postgresql)")
    return f"/usr/lib/postgresql/{'15' if '15' in versions else versions[-1]}/bin"


PG_BIN = _pg_bin()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(command):
    """Runs `command` as the postgres system user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


class ReferencePostgres:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="runnel-pg15-")
        os.chmod(self.dir, 0o755)
        data = os.path.join(self.dir, "data")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_owner([f"{PG_BIN}/initdb", "-D", data, "-U", "runnel", "-A", "trust",
                                  "--no-sync", "-E", "UTF8", "--locale", "C"]),
                       check=True, capture_output=True, text=True)
        self.port = _free_port()
        self.proc = subprocess.Popen(
            _as_owner([f"{PG_BIN}/postgres", "-D", data, "-p", str(self.port), "-k", self.dir,
                       "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "TimeZone=UTC"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            ready = subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                break
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("PostgreSQL 15 did not start")
            time.sleep(0.1)
        subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "runnel",
                        "postgres", "-c", "CREATE DATABASE runnel"], check=True, capture_output=True)

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} user=runnel dbname=runnel"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
