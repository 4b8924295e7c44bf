"""The Dask clusters fastquad starts: TLS only, no HTTP, clear errors, Ctrl-C that keeps results.

The security checks probe every port the cluster's processes listen on from a separate process
that holds no certificate: none may answer HTTP, none may accept a Dask client (plain, or with
a certificate of its own), and every one must be a TLS server (so the probe reached live ports).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import sweep_files
from conftest import runner_module

import fastquad as fq
from fastquad.errors import InputError
from fastquad.sweep import load_sweep, parse_sweep, run_sweep
from fastquad.sweep import run as sweep_run

ROOT = Path(__file__).resolve().parent.parent
FASTQUAD = [sys.executable, "-m", "fastquad.cli"]

TINY = """
[fixed]
method = "sgd"
d = 20
K = 2
M = 2
t_max = 1.0
n_times = 5
n_runs = 2

[axes]
lr = [0.05, 0.1]
"""


def _stored(out):
    """Runs whose results are in the file or its journal (done or diverged)."""
    n = 0
    journal = Path(str(out) + ".journal")
    for entry in journal.glob("*.npz") if journal.exists() else []:
        try:
            with np.load(entry) as z:
                n += _finished(z["status"])
        except (OSError, ValueError, KeyError):  # folded into the file meanwhile
            pass
    try:
        with h5py.File(out, "r") as f:
            return n + _finished(f["status"][()])
    except (OSError, KeyError):
        return n


def _finished(status):
    return int(((status == fq.STATUS_DONE) | (status == fq.STATUS_DIVERGED)).sum())


def _nothing_written(out):
    """No results file, journal, lock or temporary beside where ``out`` would be."""
    out = Path(out)
    return not [p.name for p in out.parent.iterdir() if p.name.startswith(out.name)]


def _listening_ports(pids):
    ports = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            conns = (
                proc.net_connections if hasattr(proc, "net_connections") else proc.connections
            )(kind="inet")
        except psutil.Error:
            continue
        ports |= {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}
    return ports


def _tree(pid):
    try:
        return [pid] + [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


# Runs in a fresh process without any certificate; prints one JSON object per port.
_PROBE = r"""
import asyncio, http.client, json, os, socket, ssl, sys

from distributed import Client
from distributed.security import Security


def http_answer(port):
    for https in (False, True):
        if https:
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=3,
                                               context=ssl._create_unverified_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        try:
            conn.request("GET", "/health")
            return f"{'https' if https else 'http'} {conn.getresponse().status}"
        except Exception:
            pass
        finally:
            conn.close()
    return None


def tls_certificate(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with ctx.wrap_socket(raw) as s:
                return s.getpeercert(binary_form=True) is not None
    except Exception:
        return False


async def dask_access(port, protocol, security):
    async def attempt():
        client = await Client(f"{protocol}://127.0.0.1:{port}", asynchronous=True, timeout=3,
                              security=security)
        try:
            return f"ran code in process {await client.run_on_scheduler(os.getpid)}"
        except Exception as exc:
            return f"connected ({type(exc).__name__})"
        finally:
            await client.close()

    try:
        return await asyncio.wait_for(attempt(), 6)
    except Exception:  # refused, or no answer (a server of another kind waits for more bytes)
        return None


async def main(ports):
    own = Security.temporary()  # a certificate, but not the cluster's
    checks = await asyncio.gather(
        asyncio.gather(*(asyncio.to_thread(http_answer, p) for p in ports)),
        asyncio.gather(*(asyncio.to_thread(tls_certificate, p) for p in ports)),
        asyncio.gather(*(dask_access(p, "tcp", None) for p in ports)),
        asyncio.gather(*(dask_access(p, "tls", own) for p in ports)))
    for p, http, tls, plain, other in zip(ports, *checks):
        print(json.dumps({"port": p, "http": http, "tls": tls, "plain_client": plain,
                          "other_certificate_client": other}))


asyncio.run(main(json.loads(sys.argv[1])))
"""


def _probe(ports):
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(sorted(ports))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _assert_closed_to_outsiders(found):
    http = [(r["port"], r["http"]) for r in found if r["http"]]
    assert not http, f"ports answering HTTP: {http}"
    let_in = [
        (r["port"], r["plain_client"] or r["other_certificate_client"])
        for r in found
        if r["plain_client"] or r["other_certificate_client"]
    ]
    assert not let_in, f"ports that let a process without the certificate in: {let_in}"
    not_tls = [r["port"] for r in found if not r["tls"]]
    assert not not_tls, f"ports that are not TLS servers: {not_tls}"


def test_embedded_cluster_serves_no_http_and_lets_no_uncertified_process_in(tmp_path):
    """While a sweep runs, every port of its process tree is probed from outside."""
    sweep_file = sweep_files.write(tmp_path, sweep_files.slow(t_max=3000.0))  # killed once probed
    out = tmp_path / "r.h5"
    code = (
        "import sys; from fastquad.sweep import load_sweep, run_sweep; "
        "run_sweep(load_sweep(sys.argv[1]), sys.argv[2], workers=2, progress=False)"
    )
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(sweep_file), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        sweep_files.wait_for(
            lambda: proc.poll() is not None or _stored(out) > 0, 180, "first results"
        )
        assert proc.poll() is None, err_path.read_text()
        ports = _listening_ports(_tree(proc.pid))
        # the scheduler, and a nanny and a worker per worker process at least
        assert len(ports) >= 1 + 2 * 2, ports
        found = _probe(ports)
        assert proc.poll() is None, "the sweep ended while its cluster was probed"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert sorted(r["port"] for r in found) == sorted(ports)
    _assert_closed_to_outsiders(found)


def test_the_embedded_cluster_works_for_its_own_client_and_can_serve_a_dashboard(
    tmp_path, monkeypatch, capsys
):
    """The certificate is also the client's: a sweep completes. Asked for, a dashboard is
    served on loopback while the sweep runs, and its address printed."""
    import urllib.request

    answers = []

    class Store(sweep_run.SweepStore):
        def add(self, index, arrays):
            if not answers:  # the cluster is up: a result just came back
                text = capsys.readouterr().out
                link = text[text.index("http://127.0.0.1:") :].split()[0]
                answers.append(urllib.request.urlopen(link, timeout=10).status)
            super().add(index, arrays)

    monkeypatch.setattr(sweep_run, "SweepStore", Store)
    sweep = parse_sweep(TINY)
    summary = run_sweep(sweep, tmp_path / "r.h5", workers=1, progress=False, dashboard=True)
    assert summary.ok and summary.done == sweep.total_runs
    assert answers == [200]


def test_ctrl_c_stores_every_finished_run_and_the_same_command_resumes(tmp_path):
    """SIGINT to the process group of `fastquad sweep` (what a terminal sends) half-way: the
    finished runs are in the file, the cluster's processes are gone without noise, the message
    says how many runs are stored; the same command completes the file, every run once, equal
    to an uninterrupted sweep bit for bit."""
    sweep_file = sweep_files.write(tmp_path, sweep_files.slow(t_max=400.0))
    sweep = load_sweep(sweep_file)
    total = sweep.total_runs
    out = tmp_path / "r.h5"
    cmd = FASTQUAD + [
        "sweep",
        str(sweep_file),
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-progress",
    ]
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            sweep_files.wait_for(
                lambda: proc.poll() is not None or _stored(out) > 0, 180, "first results"
            )
            time.sleep(0.5)
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            children = _tree(proc.pid)[1:]
            assert children, "no worker processes"
            os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    stderr = err_path.read_text()
    sweep_files.wait_for(
        lambda: (
            not any(
                psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                for p in children
            )
        ),
        30,
        "the worker processes to end",
    )
    assert not Path(str(out) + ".journal").exists(), "the journal was not folded into the file"
    status = fq.read(out).status
    stored = _finished(status)
    assert 0 < stored < total, (stored, stderr)
    # the message: one line (exit code 130) once the command line prints it; until then the
    # exception's own line ends the traceback
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing said about the interruption"
    assert f"{stored} of {total} runs" in lines[-1] and "again" in lines[-1], stderr
    if rc == 130:
        assert len(lines) == 1, stderr
    else:
        assert lines[-1].startswith("fastquad.sweep.run.SweepInterrupted: "), stderr
        assert "distributed" not in stderr, stderr  # the cluster went down without a word
    # resume
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{stored} already stored; this time {total - stored} done" in again.stdout
    clean = tmp_path / "clean.h5"
    assert run_sweep(sweep, clean, workers=2, progress=False).ok
    with h5py.File(out, "r") as a, h5py.File(clean, "r") as b:
        assert set(a) == set(b)
        for name in a:
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
        assert (a["status"][()] == fq.STATUS_DONE).all()


def test_an_unreachable_scheduler_is_one_line_within_the_timeout_and_leaves_nothing(tmp_path):
    sweep_file = sweep_files.write(tmp_path, TINY)
    out = tmp_path / "r.h5"
    t0 = time.time()
    proc = subprocess.run(
        FASTQUAD
        + [
            "sweep",
            str(sweep_file),
            "--out",
            str(out),
            "--scheduler",
            "tcp://127.0.0.1:1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.time() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "fastquad: error: --scheduler: cannot reach a Dask scheduler at "
        "tcp://127.0.0.1:1 within 10 s ("
    ), lines[0]
    assert seconds < 25
    assert _nothing_written(out)


@pytest.mark.parametrize(
    "content",
    [
        "random text, not JSON\n",
        '{"type": "Scheduler"}',
        "",
        "[1, 2, 3]",
        b"\x89HDF\r\n\x1a\n\x00\xff",
        '{"address": 8786}',
    ],
)
def test_a_file_that_is_not_a_scheduler_file_is_an_input_error_and_leaves_nothing(
    tmp_path, content
):
    sched = tmp_path / "scheduler.json"
    if isinstance(content, bytes):
        sched.write_bytes(content)
    else:
        sched.write_text(content)
    out = tmp_path / "r.h5"
    with pytest.raises(InputError) as err:
        run_sweep(parse_sweep(TINY), out, scheduler_file=str(sched), progress=False)
    msg = str(err.value)
    assert msg.startswith(f"--scheduler-file: {sched} is not a Dask scheduler file ("), msg
    assert "\n" not in msg
    assert _nothing_written(out)


def test_a_scheduler_file_naming_a_gone_scheduler_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_run, "CONNECT_TIMEOUT", 2, raising=False)
    sched = tmp_path / "scheduler.json"
    sched.write_text(json.dumps({"type": "Scheduler", "address": "tcp://127.0.0.1:1"}))
    out = tmp_path / "r.h5"
    t0 = time.time()
    with pytest.raises(InputError) as err:
        run_sweep(parse_sweep(TINY), out, scheduler_file=str(sched), progress=False)
    assert time.time() - t0 < 15
    assert str(err.value).startswith(
        f"--scheduler-file: cannot reach the Dask scheduler "
        f"tcp://127.0.0.1:1 named in {sched} within 2 s ("
    ), err.value
    assert _nothing_written(out)


class _ClusterStarted(Exception):
    pass


@pytest.mark.parametrize("workers", [0, -3, 4 * (os.cpu_count() or 1) + 1, 100_000, 2.5])
def test_workers_outside_the_range_are_refused_before_anything_starts(
    tmp_path, monkeypatch, workers
):
    from distributed.deploy.spec import SpecCluster

    def no_cluster(self, *args, **kwargs):
        raise _ClusterStarted  # a cluster of that size must never be started

    monkeypatch.setattr(SpecCluster, "__init__", no_cluster)
    out = tmp_path / "r.h5"
    with pytest.raises(InputError) as err:
        run_sweep(parse_sweep(TINY), out, workers=workers, progress=False)
    assert f"--workers must be an integer in [1, {4 * (os.cpu_count() or 1)}]" in str(err.value)
    assert _nothing_written(out)
    # the largest count allowed gets as far as starting the cluster
    with pytest.raises(_ClusterStarted):
        run_sweep(
            parse_sweep(TINY), tmp_path / "ok.h5", workers=4 * (os.cpu_count() or 1), progress=False
        )


# ---------------------------------------------------------------------------- jobqueue runner
def _jobqueue_runner():
    return runner_module("jobqueue")


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_job_script_starts_tls_workers_without_http(kind, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "runners" / "jobqueue.py"),
            kind,
            "--dry-run",
            "--cores",
            "2",
            "--scheduler-host",
            "127.0.0.1",
            "--shared-temp-directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert "tls://127.0.0.1:" in script and "tcp://" not in script
    for option in (
        "--tls-ca-file",
        "--tls-cert",
        "--tls-key",
        "--no-dashboard",
        "--worker-class fastquad.sweep.run.NoHttpWorker",
    ):
        assert option in script, option
    # the temporary certificate lives as long as the cluster that made it
    assert not list(tmp_path.glob(".dask-jobqueue*"))


def test_jobqueue_cluster_is_tls_only_and_its_scheduler_file_works_with_the_credentials(tmp_path):
    """The runner's scheduler with a worker started by the job script's own command line:
    nothing answers HTTP or lets an uncertified process in; `fastquad sweep --scheduler-file`
    with the credentials the runner writes runs a sweep on it."""
    import shlex

    runner = _jobqueue_runner()
    args = runner.parser().parse_args(
        [
            "slurm",
            "--cores",
            "1",
            "--scheduler-host",
            "127.0.0.1",
            "--shared-temp-directory",
            str(tmp_path),
        ]
    )
    before = _listening_ports([os.getpid()])
    cluster = runner.make_cluster("slurm", args)
    worker = None
    try:
        script = cluster.job_script()
        line = next(ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln)
        command = shlex.split(line)
        for i, word in enumerate(command):  # the key files exist, readable by the user only
            if word in ("--tls-key", "--tls-cert", "--tls-ca-file"):
                assert os.stat(command[i + 1]).st_mode & 0o077 == 0, word
        env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
        worker = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        from distributed import Client

        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=120)
        ports = (_listening_ports([os.getpid()]) - before) | _listening_ports(_tree(worker.pid))
        assert len(ports) >= 3, ports  # scheduler, the job's nanny and its worker
        _assert_closed_to_outsiders(_probe(ports))
        # the scheduler file and the credentials for another shell
        sched = tmp_path / "scheduler.json"
        with Client(cluster) as client:
            client.write_scheduler_file(str(sched))
        creds = runner.write_client_credentials(cluster.security, str(sched))
        for path in {v for k, v in creds.items() if k.endswith(("FILE", "CERT", "KEY"))}:
            assert os.stat(path).st_mode & 0o077 == 0, path
        sweep_file = sweep_files.write(tmp_path, TINY)
        out = tmp_path / "r.h5"

        def cmd(out):
            return FASTQUAD + [
                "sweep",
                str(sweep_file),
                "--out",
                str(out),
                "--scheduler-file",
                str(sched),
                "--no-progress",
            ]

        done = subprocess.run(
            cmd(out), env=dict(os.environ, **creds), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert (fq.read(out).status == fq.STATUS_DONE).all()
        # without them: refused in one line, nothing written
        out2 = tmp_path / "r2.h5"
        refused = subprocess.run(cmd(out2), capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, (
            refused.stderr
        )
        assert "--scheduler-file: cannot reach the Dask scheduler tls://" in refused.stderr
        assert _nothing_written(out2)
        runner.remove_client_credentials(str(sched))
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("scheduler.json.")]
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        cluster.close()


def test_one_embedded_cluster_serves_several_sweeps_and_is_stopped_after(tmp_path):
    """``embedded_cluster()`` is the cluster ``run_sweep`` embeds (one Numba thread per worker,
    TLS on loopback); several sweeps share it and it is gone when the block ends."""
    from fastquad.sweep import embedded_cluster

    sweep = parse_sweep(TINY)
    with embedded_cluster(2) as client:
        info = client.scheduler_info()
        assert len(info["workers"]) == 2
        assert all(a.startswith("tls://127.0.0.1:") for a in info["workers"])
        threads = client.run(lambda: os.environ.get("NUMBA_NUM_THREADS"))
        assert set(threads.values()) == {"1"}
        first = run_sweep(sweep, tmp_path / "a.h5", client=client, progress=False)
        second = run_sweep(sweep, tmp_path / "b.h5", client=client, progress=False)
        assert first.ok and second.ok and first.done == second.done == sweep.total_runs
    assert client.status == "closed"
    a, b = fq.load(tmp_path / "a.h5"), fq.load(tmp_path / "b.h5")
    np.testing.assert_array_equal(a.eps_g.values, b.eps_g.values)
    with pytest.raises(InputError, match="--workers"):
        with embedded_cluster(0):
            pass
