"""Results files on disk: locks, full disks, glob characters in names, damaged files.

Every defect here is reproduced with the real thing where the machine allows it: two real
`fastquad sweep` processes on one --out, a small tmpfs that fills up (needs root; skipped
outside CI when it cannot be mounted, a failure under CI=true), real folders and files.
Whatever can crash the interpreter (HDF5 on a full disk) runs in a subprocess.
"""

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import sweep_files

import fastquad as fq
from fastquad.cli import main
from fastquad.config import run_many
from fastquad.errors import InputError, StorageError
from fastquad.sweep import parse_sweep, run_sweep
from fastquad.sweep.store import SweepStore

FASTQUAD = [sys.executable, "-m", "fastquad.cli"]
CRASHES = (-signal.SIGSEGV, -signal.SIGABRT, 128 + signal.SIGSEGV, 128 + signal.SIGABRT)

SMALL = sweep_files.SMALL
# several seconds of work on one worker, in many chunks: a second process started while the
# first one runs finds it still running
LONG = sweep_files.slow(t_max=300.0, n_runs=10, order_parameters=False)

# a file of about 0.9 MiB (order parameters): on a 2 MiB disk the second copy of a fold
# does not fit
LARGE = """
[fixed]
method = "sgd"
d = 100
K = 2
M = 2
teacher_v = [1.0, 0.5]
t_max = 5.0
n_times = 61
n_runs = 40
label_noise = 0.1

[axes]
lr = [0.05, 0.1, 0.2]
init_scale = [0.01, 0.3]

[sweep]
order_parameters = true
chunk_runs = 5
"""

SIMULATE = [
    "--method",
    "sgd",
    "--d",
    "100",
    "--K",
    "2",
    "--M",
    "2",
    "--t-max",
    "5",
    "--n-runs",
    "40",
]  # a file of about 290 kB


def _direct(sweep):
    return np.concatenate(
        [run_many([c] * c.n_runs, np.arange(c.n_runs)).eps_g for c in sweep.points]
    )


def _write(path, text):
    path.write_text(text)
    return path


def _env():
    # Dask warns when another program holds its default HTTP port (other test sessions on
    # the same machine): not a line of ours
    return dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONWARNINGS="ignore:Port 8787 is already in use:UserWarning",
    )


def _one_line_error(proc, code, needle):
    """The process ended with ``code`` and one line of error naming ``needle``."""
    assert proc.returncode not in CRASHES, f"crashed ({proc.returncode}): {proc.stderr[-3000:]}"
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr and "HDF5-DIAG" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert needle in lines[0], lines[0]
    return lines[0]


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _leftovers(folder, keep=()):
    """Files in ``folder`` other than ``keep``: temporaries, locks, journals."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in keep)


# ------------------------------------------------------------------ a small disk


def _mount_tmpfs(path, options):
    path.mkdir(exist_ok=True)
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        why = proc.stderr.strip() or f"exit code {proc.returncode}"
        ok = proc.returncode == 0
    except FileNotFoundError:
        ok, why = False, "no mount command"
    if not ok:
        reason = f"cannot mount a tmpfs at a test folder ({why}): needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _unmount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a disk that fills up."""
    disk = _mount_tmpfs(tmp_path / "disk", "size=2m")
    yield disk
    _unmount(disk)


def _grow(disk, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def _fill(disk, leave=0):
    """Fill ``disk`` up to ``leave`` bytes with a filler file; return the filler."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


# ------------------------------------------------------------------ item 4: one --out, two sweeps


def _sweep_cmd(sweep_file, out, *extra):
    return FASTQUAD + [
        "sweep",
        str(sweep_file),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
        *extra,
    ]


def _assert_complete(out, sweep):
    res = fq.read(out)
    assert (res.status == fq.STATUS_DONE).all()
    np.testing.assert_array_equal(res.eps_g, _direct(sweep))


def test_a_second_sweep_on_the_same_out_is_refused_while_the_first_completes(tmp_path):
    """The second process, started while the first one runs, stops with one line naming
    the first one's pid; the first completes and holds every run once."""
    sweep_file = _write(tmp_path / "s.toml", LONG)
    sweep = parse_sweep(LONG)
    out = tmp_path / "r.h5"
    first = subprocess.Popen(
        _sweep_cmd(sweep_file, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        t0 = time.time()
        while not out.exists() and first.poll() is None and time.time() - t0 < 120:
            time.sleep(0.05)
        assert first.poll() is None, "the first sweep ended before the test could start another"
        second = subprocess.run(
            _sweep_cmd(sweep_file, out), capture_output=True, text=True, env=_env(), timeout=300
        )
        assert first.poll() is None, "the first sweep ended before the second one was checked"
        line = _one_line_error(second, 2, "is being written by another fastquad sweep")
        assert f"(pid {first.pid})" in line and str(out) in line and "--out" in line
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    _assert_complete(out, sweep)
    assert _leftovers(tmp_path, keep=("s.toml", "r.h5")) == []


def test_two_sweeps_started_together_one_runs_and_the_other_is_refused(tmp_path):
    sweep_file = _write(tmp_path / "s.toml", LONG)
    sweep = parse_sweep(LONG)
    out = tmp_path / "r.h5"
    procs = [
        subprocess.Popen(
            _sweep_cmd(sweep_file, out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(2)
    ]
    try:
        results = [(p, p.communicate(timeout=300)[1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = sorted(p.returncode for p, _ in results)
    assert codes == [0, 2], [(p.returncode, err[-2000:]) for p, err in results]
    loser = next(err for p, err in results if p.returncode == 2)
    assert "is being written by another fastquad sweep" in loser and "Traceback" not in loser
    _assert_complete(out, sweep)
    assert _leftovers(tmp_path, keep=("s.toml", "r.h5")) == []


_HOLD = """
import sys, time
from fastquad.sweep import parse_sweep
from fastquad.sweep.store import SweepStore
store = SweepStore(sys.argv[1], parse_sweep(open(sys.argv[2]).read()))
print("locked", flush=True)
time.sleep(600)
"""


def test_the_lock_goes_with_a_killed_holder_and_a_closed_store_leaves_no_lock_file(tmp_path):
    sweep_file = _write(tmp_path / "s.toml", SMALL)
    sweep = parse_sweep(SMALL)
    out = tmp_path / "r.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out), str(sweep_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError) as err:
            SweepStore(out, sweep)
        assert str(err.value) == (
            f"--out: {out} is being written by another fastquad sweep "
            f"(pid {holder.pid}); wait for it or use another --out"
        )
    finally:
        holder.kill()
        holder.wait()
    # the operating system released the dead holder's lock
    store = SweepStore(out, sweep)
    store.close()
    store.close()  # closing twice is harmless
    assert _leftovers(tmp_path, keep=("s.toml", "r.h5")) == []


# ------------------------------------------------------------------ item 4: duplicate journal


def _arrays(sweep, runs):
    from fastquad.store import result_arrays

    cfgs = [sweep.run_config(int(r))[0] for r in runs]
    reps = [sweep.run_config(int(r))[1] for r in runs]
    res = run_many(cfgs, np.array(reps))
    return {
        k: v
        for k, v in result_arrays(res).items()
        if k not in ("W_final", "v_final", "Q", "R", "v") and v is not None
    }


def test_the_fold_keeps_one_of_duplicate_journal_entries_for_the_same_runs(tmp_path):
    """Two journal entries for the same runs (what two sweeps on one file left behind) fold
    into one copy of each run; a success beats a failure recorded for the same runs."""
    sweep = parse_sweep(SMALL)
    out = tmp_path / "r.h5"
    store = SweepStore(out, sweep, consolidate_every=1e9)
    store._fold_runs = 10**9  # fold only when asked
    runs = np.arange(3, 9)
    arrays = _arrays(sweep, runs)
    store.add(runs, arrays)
    store.add(runs[2:], {k: v[2:] for k, v in arrays.items()})  # the same runs, again
    store.add_failure(np.arange(0, 4), "boom")
    store.add(np.arange(0, 3), _arrays(sweep, np.arange(0, 3)))
    journal = Path(str(out) + ".journal")
    assert len(list(journal.glob("*.npz"))) == 4
    st = store.status()
    assert (st[:9] == fq.STATUS_DONE).all() and (st[9:] == fq.STATUS_PENDING).all()
    assert store.consolidate() == 4
    store.close()
    res = fq.read(out)
    direct = _direct(sweep)
    np.testing.assert_array_equal(res.eps_g[:9], direct[:9])
    assert (res.status[:9] == fq.STATUS_DONE).all() and np.isnan(res.eps_g[9:]).all()
    assert (res.status[9:] == fq.STATUS_PENDING).all()


# ------------------------------------------------------------------ item 6: glob characters


@pytest.mark.parametrize("name", ["r[1].h5", "*", "r?.h5"])
def test_out_names_with_glob_characters_remove_only_their_own_temporaries(tmp_path, name):
    folder = tmp_path / "d"
    folder.mkdir()
    others = ["r1.h5.tmp-0badc0de", "x.h5.tmp-12345678", "r1.h5", "r1.h5.journal"]
    for other in others:
        (folder / other).write_bytes(b"someone else's")
    out = folder / name
    (folder / f"{name}.tmp-deadbeef").write_bytes(b"HDF\x89 torn")  # this file's own
    store = SweepStore(out, parse_sweep(SMALL))
    store.close()
    assert _leftovers(folder) == sorted(others + [name])
    for other in others:
        assert (folder / other).read_bytes() == b"someone else's"


# ------------------------------------------------------------------ item 5: full disk

_SAVE = """
import sys
import fastquad as fq
from fastquad import config as C
from fastquad.errors import StorageError
res = C.run(C.make_config(dict(method="sgd", d=100, K=2, M=2, t_max=5.0, n_runs=40)))
try:
    fq.save(sys.argv[1], res, overwrite=sys.argv[2] == "overwrite")
except StorageError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


def _save_in_subprocess(out, overwrite):
    return subprocess.run(
        [sys.executable, "-c", _SAVE, str(out), "overwrite" if overwrite else "new"],
        capture_output=True,
        text=True,
        env=_env(),
    )


def test_simulate_overwrite_on_a_full_disk_keeps_the_previous_file(small_disk):
    out = small_disk / "r.h5"
    assert main(["simulate", *SIMULATE[:-1], "10", "--out", str(out)]) == 0  # about 100 kB
    before, res = _digest(out), fq.read(out)
    _fill(small_disk, leave=16 * 1024)
    # the new file does not fit even in the old one's place (the old code truncated it first)
    proc = subprocess.run(
        FASTQUAD + ["simulate", *SIMULATE, "--out", str(out), "--overwrite"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    line = _one_line_error(proc, 1, "no space left on")
    assert str(out) in line and "the previous file is intact" in line
    assert _digest(out) == before
    np.testing.assert_array_equal(fq.read(out).eps_g, res.eps_g)
    assert _leftovers(small_disk, keep=("r.h5", "filler")) == []


def test_a_new_file_on_a_full_disk_leaves_nothing_and_the_retry_works(small_disk):
    out = small_disk / "new.h5"
    filler = _fill(small_disk, leave=16 * 1024)
    proc = _save_in_subprocess(out, overwrite=False)
    line = _one_line_error(proc, 1, "no space left on")
    assert str(out) in line and "nothing was written" in line
    assert _leftovers(small_disk, keep=("filler",)) == []
    filler.unlink()
    proc = _save_in_subprocess(out, overwrite=False)
    assert proc.returncode == 0, proc.stderr
    from fastquad import config as C

    cfg = C.make_config(dict(method="sgd", d=100, K=2, M=2, t_max=5.0, n_runs=40))
    np.testing.assert_array_equal(fq.read(out).eps_g, C.run(cfg).eps_g)
    assert _leftovers(small_disk, keep=("new.h5",)) == []


def test_a_sweep_that_fills_the_disk_stops_in_one_line_and_resumes_when_there_is_space(
    small_disk, tmp_path
):
    sweep_file = _write(tmp_path / "s.toml", LARGE)
    sweep = parse_sweep(LARGE)
    out = small_disk / "r.h5"
    proc = subprocess.run(_sweep_cmd(sweep_file, out), capture_output=True, text=True, env=_env())
    line = _one_line_error(proc, 1, "no space left on")
    assert str(out) in line and "the previous file is intact and the sweep resumes" in line
    with h5py.File(out, "r") as f:  # the file is whole and says which runs it holds
        done_before = int((f["status"][()] == fq.STATUS_DONE).sum())
    assert 0 < done_before < sweep.total_runs
    # resuming on the still full disk: the same line, nothing lost
    proc = subprocess.run(_sweep_cmd(sweep_file, out), capture_output=True, text=True, env=_env())
    _one_line_error(proc, 1, "no space left on")
    with h5py.File(out, "r") as f:
        assert int((f["status"][()] == fq.STATUS_DONE).sum()) == done_before
    assert not [n for n in _leftovers(small_disk) if ".tmp-" in n or n.endswith(".lock")]
    _grow(small_disk, "16m")
    proc = subprocess.run(_sweep_cmd(sweep_file, out), capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_complete(out, sweep)
    assert _leftovers(small_disk, keep=("r.h5",)) == []


_FOLD = """
import sys
import numpy as np
from fastquad import files
from fastquad.config import run_many
from fastquad.errors import StorageError
from fastquad.store import result_arrays
from fastquad.sweep import parse_sweep
from fastquad.sweep.store import SweepStore

out, text, leave = sys.argv[1], open(sys.argv[2]).read(), int(sys.argv[3])
sweep = parse_sweep(text)
store = SweepStore(out, sweep, consolidate_every=1e9)
store._fold_runs = 10**9
for p, cfg in enumerate(sweep.points):
    res = run_many([cfg] * cfg.n_runs, np.arange(cfg.n_runs))
    store.add(p * cfg.n_runs + np.arange(cfg.n_runs), result_arrays(res))
print("journaled", flush=True)
sys.stdin.readline()  # the test fills the disk meanwhile
files.check_space = lambda *a, **k: None  # as if the free space could not be known
try:
    store.consolidate()
except StorageError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
finally:
    store.close()
"""


def test_hdf5_writes_that_fail_mid_fold_end_in_one_line_with_file_and_journal_intact(
    small_disk, tmp_path
):
    """The copy fits, HDF5's writes into it do not: without the guard, HDF5 could not close
    the copy and the process crashed at exit."""
    sweep_file = _write(tmp_path / "s.toml", LARGE)
    sweep = parse_sweep(LARGE)
    out = small_disk / "r.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", _FOLD, str(out), str(sweep_file), "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout.readline().strip() == "journaled", proc.stderr.read()
    before = _digest(out)
    journal = sorted(p.name for p in Path(str(out) + ".journal").iterdir())
    filler = _fill(small_disk, leave=out.stat().st_size + 64 * 1024)
    _, err = proc.communicate("go\n", timeout=300)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    line = _one_line_error(result, 1, "no space left on")
    assert line.endswith(
        f"to store {out}; the previous file is intact and the sweep resumes when run again"
    )
    assert _digest(out) == before
    assert sorted(p.name for p in Path(str(out) + ".journal").iterdir()) == journal
    assert _leftovers(small_disk, keep=("r.h5", "r.h5.journal", "filler")) == []
    filler.unlink()
    _grow(small_disk, "16m")  # the journal of every run and two copies of the file
    SweepStore(out, sweep).close()  # folds the journal
    _assert_complete(out, sweep)


def test_a_new_sweep_on_a_full_disk_stops_in_one_line(small_disk, tmp_path):
    sweep_file = _write(tmp_path / "s.toml", LARGE)
    out = small_disk / "r.h5"
    _fill(small_disk, leave=4096)
    proc = subprocess.run(_sweep_cmd(sweep_file, out), capture_output=True, text=True, env=_env())
    line = _one_line_error(proc, 1, "no space left on")
    assert str(out) in line
    assert _leftovers(small_disk, keep=("filler",)) == []


_INJECTED = """
import errno, os, sys
import numpy as np
import fastquad as fq
from fastquad import files
from fastquad import config as C
from fastquad.errors import StorageError

res = C.run(C.make_config(dict(method="sgd", d=100, K=2, M=2, t_max=5.0, n_runs=40)))
budget = [int(sys.argv[2])]
real = os.pwrite

def pwrite(fd, data, offset):  # a disk with budget[0] bytes left
    if len(data) > budget[0]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    budget[0] -= len(data)
    return real(fd, data, offset)

files.os.pwrite = pwrite
try:
    fq.save(sys.argv[1], res, overwrite=True)
except StorageError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.parametrize("budget", [0, 3000, 100_000])
def test_an_injected_enospc_at_any_point_of_a_save_keeps_the_previous_file(tmp_path, budget):
    """HDF5 never sees the failed write (a failed close leaves it a file to close at exit,
    which crashed the interpreter); the previous file is untouched, no temporary is left."""
    out = tmp_path / "r.h5"
    out.write_bytes(b"previous contents")
    proc = subprocess.run(
        [sys.executable, "-c", _INJECTED, str(out), str(budget)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    line = _one_line_error(proc, 1, "no space left on")
    assert line.endswith(f"to store {out}; the previous file is intact")
    assert out.read_bytes() == b"previous contents"
    assert _leftovers(tmp_path, keep=("r.h5",)) == []


def test_a_guarded_file_reads_back_what_was_written_after_a_failed_write(tmp_path, monkeypatch):
    """After the first failed write, what HDF5 writes is kept in memory: reads, seeks and
    truncations see one consistent file (compared with an in-memory model)."""
    import io

    from fastquad import files

    budget = [50_000]
    real = os.pwrite

    def pwrite(fd, data, offset):
        if len(data) > budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(data)
        return real(fd, data, offset)

    monkeypatch.setattr(files.os, "pwrite", pwrite)
    rng = np.random.default_rng(3)
    model = io.BytesIO()
    with files.guarded(tmp_path / "g.bin", create=True) as g:
        for step in range(300):
            pos = int(rng.integers(0, 300_000))
            if step % 20 == 19:  # HDF5 truncates to its end of file, which may extend it
                g.truncate(pos)
                model.truncate(pos)
                model.seek(0, os.SEEK_END)
                model.write(bytes(max(0, pos - model.tell())))
                continue
            data = rng.bytes(int(rng.integers(1, 20_000)))
            g.seek(pos)
            g.write(data)
            model.seek(pos)
            model.write(data)
            size = len(model.getvalue())
            assert g.seek(0, os.SEEK_END) == size
            start = int(rng.integers(0, size + 10))
            buf = bytearray(int(rng.integers(1, 40_000)))
            g.seek(start)
            g.readinto(buf)
            want = model.getvalue()[start : start + len(buf)]
            assert bytes(buf[: len(want)]) == want and not any(buf[len(want) :])
        assert g.error is not None and g.error.errno == errno.ENOSPC
        with pytest.raises(OSError):
            g.check()
        g.error = None  # let the block end normally: the error is checked above


def test_a_failed_fold_keeps_the_file_and_journal_and_close_is_safe(tmp_path, monkeypatch):
    from fastquad.sweep import store as SS

    sweep = parse_sweep(SMALL)
    out = tmp_path / "r.h5"
    store = SweepStore(out, sweep, consolidate_every=1e9)
    store._fold_runs = 10**9
    store.add(np.arange(3), _arrays(sweep, np.arange(3)))
    before = _digest(out)

    def full(src, dst, *a, **k):
        Path(dst).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(SS.shutil, "copyfile", full)
    with pytest.raises(StorageError) as err:
        store.consolidate()
    assert str(err.value).startswith("no space left on ")
    assert str(err.value).endswith(
        f"to store {out}; the previous file is intact and the sweep resumes when run again"
    )
    store.close()  # after a failure: releases the lock, does not fail again
    store.close()
    assert _digest(out) == before
    assert _leftovers(tmp_path, keep=("r.h5", "r.h5.journal")) == []
    monkeypatch.undo()
    summary = run_sweep(sweep, out, workers=1, progress=False)
    assert summary.skipped == 3
    _assert_complete(out, sweep)


def test_a_journal_entry_that_does_not_fit_is_one_line_and_leaves_no_temporary(
    tmp_path, monkeypatch
):
    from fastquad.sweep import store as SS

    sweep = parse_sweep(SMALL)
    out = tmp_path / "r.h5"
    store = SweepStore(out, sweep, consolidate_every=1e9)
    store._fold_runs = 10**9
    store.add(np.arange(3), _arrays(sweep, np.arange(3)))
    journal = sorted(p.name for p in Path(str(out) + ".journal").iterdir())

    def savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half an entry")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(SS.np, "savez", savez)
    with pytest.raises(StorageError) as err:
        store.add(np.arange(3, 6), _arrays(sweep, np.arange(3, 6)))
    assert str(err.value).endswith(
        f"to store {out}; the previous file is intact and the sweep resumes when run again"
    )
    monkeypatch.undo()
    store.close()
    assert sorted(p.name for p in Path(str(out) + ".journal").iterdir()) == journal
    assert _leftovers(tmp_path, keep=("r.h5", "r.h5.journal")) == []


def test_the_fold_checks_free_space_before_copying(tmp_path, monkeypatch):
    import shutil as _shutil

    from fastquad import files

    sweep = parse_sweep(SMALL)
    out = tmp_path / "r.h5"
    store = SweepStore(out, sweep, consolidate_every=1e9)
    store._fold_runs = 10**9
    store.add(np.arange(3), _arrays(sweep, np.arange(3)))
    usage = _shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        files.shutil, "disk_usage", lambda p: usage._replace(free=out.stat().st_size)
    )
    copies = []
    monkeypatch.setattr(files.shutil, "copyfile", lambda *a: copies.append(a))
    with pytest.raises(StorageError, match="no space left on .* to store .* file is intact"):
        store.consolidate()
    assert copies == []
    store.close()
    monkeypatch.undo()
    with SweepStore(out, sweep) as again:  # the journal is still there and folds now
        assert (again.status()[:3] == fq.STATUS_DONE).all()


# ------------------------------------------------------------------ item 8: --out and damaged files


def test_check_output_refuses_what_cannot_be_written_in_one_line(tmp_path):
    from fastquad.files import check_output

    (tmp_path / "afile").write_text("x")
    (tmp_path / "old.h5").write_text("x")
    cases = {
        tmp_path / "missing" / "r.h5": f"--out: folder {tmp_path / 'missing'} does not exist",
        tmp_path / "afile" / "r.h5": f"--out: {tmp_path / 'afile'} is not a folder",
        tmp_path: f"--out: {tmp_path} is a folder",
        tmp_path / "old.h5": f"--out: {tmp_path / 'old.h5'} exists (use --overwrite",
    }
    for path, msg in cases.items():
        with pytest.raises(InputError) as err:
            check_output(path, overwrite=False)
        assert str(err.value).startswith(msg) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="is a folder"):
        check_output(tmp_path, overwrite=True)
    assert check_output(tmp_path / "old.h5", overwrite=True) == tmp_path / "old.h5"
    assert check_output(tmp_path / "new.h5", overwrite=False) == tmp_path / "new.h5"
    assert _leftovers(tmp_path) == ["afile", "old.h5"]  # the write probe left nothing


def test_check_output_refuses_a_read_only_folder(tmp_path):
    """Root ignores permission bits, so the folder is a read-only mount."""
    from fastquad.files import check_output

    ro = _mount_tmpfs(tmp_path / "ro", "size=1m,ro")
    try:
        with pytest.raises(InputError, match=f"--out: cannot write in folder {ro} "):
            check_output(ro / "r.h5", overwrite=False)
    finally:
        _unmount(ro)


@pytest.mark.parametrize("where", ["missing", "folder"])
def test_simulate_refuses_a_bad_out_before_computing(tmp_path, capsys, monkeypatch, where):
    from fastquad import config as C

    def run(*args, **kwargs):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(C, "run", run)
    out = tmp_path / "missing" / "r.h5" if where == "missing" else tmp_path
    rc = main(["simulate", "--t-max", "1", "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--out:" in err, err


def _good_file(tmp_path):
    res = fq.simulate_sgd(*_networks(), np.array([0.05, 0.1]), 3.0, seeds=2)
    path = tmp_path / "good.h5"
    fq.save(path, res, weights=True)
    return path, res


def _networks():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((2, 2, 30)), np.ones(2), rng.standard_normal((2, 30)), np.ones(2))


def _foreign(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    return path


def _incomplete(tmp_path):
    path, _ = _good_file(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["eps_g"]
    return path


def _truncated(tmp_path):
    path, _ = _good_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _flipped_chunk(tmp_path):
    """One byte of eps_g's compressed data flipped (gzip notices when the chunk is read)."""
    path, _ = _good_file(tmp_path)
    with h5py.File(path, "r") as f:
        info = f["eps_g"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    return path


def _flipped_signature(tmp_path):
    path, _ = _good_file(tmp_path)
    with open(path, "r+b") as fh:
        fh.seek(1)
        fh.write(b"X")
    return path


BAD_FILES = {
    "foreign": (_foreign, "is not a fastquad results file"),
    "incomplete": (_incomplete, "is an incomplete fastquad results file (missing eps_g)"),
    "truncated": (_truncated, "is damaged or not an HDF5 file"),
    "bit-flipped chunk": (_flipped_chunk, "is damaged"),
    "bit-flipped signature": (_flipped_signature, "is damaged or not an HDF5 file"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_reading_a_foreign_incomplete_or_damaged_file_is_one_line(tmp_path, kind):
    make, needle = BAD_FILES[kind]
    path = make(tmp_path)
    for reader in (fq.read, fq.load):
        with pytest.raises(InputError) as err:
            reader(path)
        msg = str(err.value)
        assert msg.startswith(f"{path} ") and needle in msg and "\n" not in msg, msg
    for cmd in (["info", str(path)], ["plot", str(path), "--out", str(tmp_path / "figs")]):
        proc = subprocess.run(FASTQUAD + cmd, capture_output=True, text=True, env=_env())
        if kind == "bit-flipped chunk" and cmd[0] == "info":
            # info reads the status, not the learning curves: the damage is not in its way
            assert proc.returncode == 0, proc.stderr
            continue
        line = _one_line_error(proc, 2, str(path))
        assert line.startswith("fastquad: error: ") and needle in line


_FLIPS = """
import sys
import numpy as np
import fastquad as fq
from fastquad.errors import InputError
from fastquad.sweep import info

good = open(sys.argv[1], "rb").read()
flip = sys.argv[1] + ".flip"
positions = list(range(0, 4096, 37)) + list(np.random.default_rng(0).integers(0, len(good), 40))
caught = 0
for pos in positions:
    data = bytearray(good)
    data[pos] ^= 0xFF
    open(flip, "wb").write(data)
    for reader in (fq.read, fq.load, info):
        try:
            reader(flip)
        except InputError as exc:
            assert flip in str(exc) and "\\n" not in str(exc), str(exc)
            caught += 1
print(caught, 3 * len(positions))
"""


def test_single_byte_flips_anywhere_read_or_raise_input_error(tmp_path):
    """A damaged file reads (a flip in the numbers goes unnoticed: HDF5 has no checksums in
    this layout) or raises InputError; never another exception, never a crash."""
    path, _ = _good_file(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", _FLIPS, str(path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    caught, tried = map(int, proc.stdout.split())
    assert 0 < caught < tried


def test_a_damaged_journal_entry_is_dropped_and_its_runs_computed_again(tmp_path):
    sweep = parse_sweep(SMALL)
    out = tmp_path / "r.h5"
    store = SweepStore(out, sweep, consolidate_every=1e9)
    store._fold_runs = 10**9
    store.add(np.arange(3), _arrays(sweep, np.arange(3)))
    store.add(np.arange(3, 6), _arrays(sweep, np.arange(3, 6)))
    del store  # a kill: the journal stays
    journal = Path(str(out) + ".journal")
    damaged = sorted(journal.iterdir())[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert "3 run(s) still in the journal" in fq.sweep.info(out)
    summary = run_sweep(sweep, out, workers=1, progress=False)
    assert summary.skipped == 3 and summary.done == sweep.total_runs - 3
    _assert_complete(out, sweep)
    assert not journal.exists()


def test_good_files_read_back_bit_for_bit_through_the_safe_writer(tmp_path):
    path, res = _good_file(tmp_path)
    back = fq.read(path)
    for name in ("eps_g", "Q", "R", "v", "T", "v_teacher", "W", "v_final", "t_stop", "status"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name), err_msg=name)
    ds = fq.load(path)
    np.testing.assert_array_equal(ds.eps_g.values, res.eps_g)
    # overwrite=False refuses an existing file, and leaves it alone
    before = _digest(path)
    with pytest.raises(InputError, match="exists"):
        fq.save(path, res)
    assert _digest(path) == before
    fq.save(path, res, overwrite=True)
    np.testing.assert_array_equal(fq.read(path).eps_g, res.eps_g)
    assert _leftovers(tmp_path) == ["good.h5"]
