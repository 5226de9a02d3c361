"""A one-node SLURM cluster on this machine, for the tests marked ``slurm``.

Debian's ``slurm-wlm`` and ``munge`` (which ``.ci/run`` installs): ``munged`` with its
own socket, then ``slurmctld`` and ``slurmd`` from a ``slurm.conf`` written into a
scratch folder (proctrack/linuxproc, task/none, no accounting, no cgroups). The same
file is installed as ``/etc/slurm/slurm.conf``, as on a real cluster: the
snakemake-executor-plugin-slurm job step drops every ``SLURM_*`` variable (``SLURM_CONF``
included) before its ``srun``, so only the default location reaches it. An existing
file there that this module did not write is never touched (the cluster does not
start). :meth:`OneNodeCluster.stop` stops exactly the daemons it started, by their
pids, and removes the file it installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by insight's tests/slurm_cluster.py\n"


def missing_tools() -> list[str]:
    return [tool for tool in DAEMONS if shutil.which(tool) is None]


def slurm_conf(folder: Path, node: str, cpus: int, memory_mb: int, munge_socket: Path) -> str:
    return f"""{MARKER}\
ClusterName=insight-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=main Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class OneNodeCluster:
    def __init__(self, folder: Path):
        self.folder = folder
        self.pids: dict[str, int] = {}
        self.installed_conf = False
        self.env = dict(os.environ, SLURM_CONF=str(folder / "slurm.conf"))

    def start(self, timeout: float = 60.0) -> OneNodeCluster:
        folder = self.folder
        for sub in ("state", "spool", "munge"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(folder / "munge", 0o755)
        munge_socket = folder / "munge/munge.socket"
        node = socket.gethostname().split(".")[0]
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
        conf_text = slurm_conf(folder, node, os.cpu_count() or 1, memory_mb, munge_socket)
        (folder / "slurm.conf").write_text(conf_text)
        if SYSTEM_CONF.exists() and not SYSTEM_CONF.read_text().startswith(MARKER):
            raise RuntimeError(
                f"{SYSTEM_CONF} exists and belongs to another cluster; not touching it"
            )
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.write_text(conf_text)
        self.installed_conf = True
        self._run(
            "munged",
            [
                "munged",
                "--force",
                f"--socket={munge_socket}",
                f"--pid-file={folder}/munge/munged.pid",
                f"--log-file={folder}/munge/munged.log",
                f"--seed-file={folder}/munge/munged.seed",
            ],
            folder / "munge/munged.pid",
        )
        conf = str(folder / "slurm.conf")
        self._run("slurmctld", ["slurmctld", "-f", conf], folder / "slurmctld.pid")
        self._run("slurmd", ["slurmd", "-f", conf, "-N", node], folder / "slurmd.pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True
            )
            if state.returncode == 0 and state.stdout.strip() in {"idle", "mixed", "allocated"}:
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the SLURM node did not come up: {self.logs()}")

    def _run(self, name: str, command: list[str], pid_file: Path) -> None:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            self.stop()
            raise RuntimeError(f"{name} failed to start: {result.stderr.strip()} {self.logs()}")
        # The daemon creates its pid file before it writes the number: wait for the number.
        deadline = time.monotonic() + 15
        while (pid := _read_pid(pid_file)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is None:
            self.stop()
            raise RuntimeError(f"{name} wrote no pid to {pid_file}: {self.logs()}")
        self.pids[name] = pid

    def logs(self) -> str:
        parts = []
        for log in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            path = self.folder / log
            if path.exists():
                parts.append(f"--- {log}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    def squeue(self) -> list[tuple[str, str, str]]:
        """(job id, name, state) of the queued and running jobs."""
        result = subprocess.run(
            ["squeue", "-h", "-o", "%i|%j|%T|%k"], env=self.env, capture_output=True, text=True
        )
        return [tuple(line.split("|")) for line in result.stdout.splitlines() if line]

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        if self.installed_conf and SYSTEM_CONF.exists():
            SYSTEM_CONF.unlink()
            self.installed_conf = False


def _read_pid(pid_file: Path) -> int | None:
    """The process id in a daemon's pid file, or None while the file is missing or not yet written."""
    try:
        text = pid_file.read_text()
    except FileNotFoundError:
        return None
    # munged and the slurm daemons write "<pid>\n"; without the newline the number may be cut.
    words = text.split()
    return int(words[0]) if text.endswith("\n") and words and words[0].isdigit() else None
