"""Ctrl-C stops a long kernel at once: one line, exit code 130, no output file touched."""

import signal
import subprocess
import sys
import time

import h5py
import numba
import numpy as np

import fastquad as fq


def _wait_for_kernel(proc, seconds):
    """Wait until the process has been busy for a while (its kernel is running)."""
    import psutil

    ps = psutil.Process(proc.pid)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if sum(ps.cpu_times()[:2]) > seconds:
            return
        time.sleep(0.1)


def test_ctrl_c_during_simulate_stops_in_a_second_and_leaves_the_old_file(tmp_path):
    out = tmp_path / "r.h5"
    W_t, v_t = fq.make_teacher(20, 2, seed=1)
    W0, v0 = fq.make_student(20, 2, seed=2)
    fq.save(out, fq.simulate_sgd(W0, v0, W_t, v_t, 0.1, 1.0))
    before = out.read_bytes()
    # about a minute of online SGD on one thread: far longer than the test waits
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastquad.cli",
            "simulate",
            "--d",
            "500",
            "--t-max",
            "20000",
            "--n-runs",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
            "--overwrite",
            "--no-progress",  # a loaded machine reaches the bar's 5 s before the signal
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_kernel(proc, 4.0)
    assert proc.poll() is None, proc.communicate()
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.perf_counter() - t0 < 5
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        f"fastquad: interrupted; nothing was written ({out} is unchanged)"
    ]
    assert out.read_bytes() == before
    with h5py.File(out, "r") as f:
        assert np.isfinite(f["eps_g"][()]).all()


def test_a_kernel_called_from_the_main_thread_gives_the_same_numbers_and_its_errors():
    from fastquad.threads import call_kernel

    W_t, v_t = fq.make_teacher(30, 2, seed=1)
    W0, v0 = fq.make_student(30, 2, scale=0.3, seed=2)
    a = fq.simulate_sgd(W0, v0, W_t, v_t, 0.1, 3.0, seeds=[1, 2], num_threads=1)
    b = fq.simulate_sgd(
        W0, v0, W_t, v_t, 0.1, 3.0, seeds=[1, 2], num_threads=numba.config.NUMBA_NUM_THREADS
    )
    np.testing.assert_array_equal(a.eps_g, b.eps_g)

    def boom(first, step, x):
        raise ZeroDivisionError(x)

    try:
        call_kernel(boom, "raised in the kernel's thread")
    except ZeroDivisionError as exc:
        assert "kernel's thread" in str(exc)
    else:
        raise AssertionError("the kernel's exception was lost")


class _SlowCompile:
    """A stand-in for a Numba dispatcher of the kernels' convention (``first, step``, then the
    arrays): its first call 'compiles' for ``seconds``, then adds 1 to its share of ``out``."""

    __name__ = "toy_kernel"

    def __init__(self, seconds):
        self.seconds = seconds
        self.overloads = {}

    def typeof_pyval(self, value):
        return type(value)

    def __call__(self, first, step, out):
        key = (int, int, type(out))
        if key not in self.overloads:
            time.sleep(self.seconds)
            self.overloads[key] = "machine code"
        out[first::step] += 1


def test_a_long_first_compile_says_so_once_on_stderr(monkeypatch, capsys):
    from fastquad import threads

    monkeypatch.setattr(threads, "COMPILE_NOTICE_SECONDS", 0.2)
    slow = _SlowCompile(0.6)
    out = np.zeros(5)
    threads.call_kernel(slow, out, num_threads=2)
    assert out.tolist() == [1.0] * 5  # each thread did its share, once
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compiling toy_kernel" in err and "NUMBA_CACHE_DIR" in err
    # compiled now: the next call says nothing, however long it runs
    threads.call_kernel(slow, out)
    assert out.tolist() == [2.0] * 5
    # a quick first compile says nothing either
    threads.call_kernel(_SlowCompile(0.0), out)
    assert capsys.readouterr().err == ""

    # a real Numba kernel with machine code for these types has nothing pending
    @numba.njit
    def add_one(first, step, out):
        for i in range(first, out.shape[0], step):
            out[i] += 1.0

    args = (0, 1, out)
    assert threads._pending_signature(add_one, args) is not None
    threads.call_kernel(add_one, out, num_threads=1)
    assert out.tolist() == [4.0] * 5
    assert threads._pending_signature(add_one, args) is None
