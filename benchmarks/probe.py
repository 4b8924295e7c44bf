"""Robustness probe: hostile inputs to every command, and a sweep client killed again and again.

Part 1 feeds each command-line parameter a list of hostile values (zero, negative, NaN, inf,
huge, text, empty, lists) and hostile files to ``info`` and ``plot`` (foreign HDF5, truncated,
bit-flipped, empty, a folder), each in a fresh process with a time limit, and sorts the
outcomes:

- *one line*: refused with exit code 1 or 2 and one line on stderr (no traceback);
- *accepted*: a valid value, the command finished (exit 0);
- *defect*: a traceback, a crash (signal), more than one line, or no answer in time.

Part 2 runs a sweep and SIGKILLs its client at random moments (some while it folds its
journal into the file), resuming each time, then checks that the file holds every run
exactly once and is bit-identical to a sweep that was never interrupted. Part 3 starts two
sweeps on one results file.

    python benchmarks/probe.py              # about 15 minutes on 2 cores
    python benchmarks/probe.py --quick      # fewer values and kills
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

FASTQUAD = [sys.executable, "-m", "fastquad.cli"]
HOSTILE = [
    "0",
    "-1",
    "nan",
    "inf",
    "-inf",
    "1e300",
    "1e9",
    "abc",
    "",
    "1,2,3",
    "0.5",
    str(2**63),
    "-0",
]
SWEEP = """
[fixed]
method = "sgd"
d = 400
K = 2
M = 2
t_max = 60.0
n_times = 31
n_runs = 4
[axes]
lr = [0.02, 0.04, 0.06, 0.08]
init_scale = [0.1, 0.3]
[sweep]
chunk_runs = 2
order_parameters = true
"""


def classify(args, timeout, cwd):
    try:
        p = subprocess.run(
            FASTQUAD + args, capture_output=True, text=True, timeout=timeout, cwd=cwd
        )
    except subprocess.TimeoutExpired:
        return "defect", "no answer in time"
    err = p.stderr.strip()
    if p.returncode == 0:
        return "accepted", ""
    if p.returncode in (1, 2) and "Traceback" not in err and len(err.splitlines()) == 1:
        return "one line", err
    return "defect", f"exit {p.returncode}: {err[-300:]}"


def hostile_inputs(work, quick):
    from fastquad.config import PARAMETERS

    values = HOSTILE[:6] if quick else HOSTILE
    good = work / "good.h5"
    subprocess.run(
        FASTQUAD + ["simulate", "--d", "20", "--t-max", "1", "--n-runs", "2", "--out", str(good)],
        check=True,
        capture_output=True,
    )
    (work / "s.toml").write_text(SWEEP.replace("d = 400", "d = 20").replace("60.0", "2.0"))
    cases = []
    flags = [("--" + k.replace("_", "-")) for k in PARAMETERS] + ["--threads"]
    for flag in flags:
        for v in values:
            cases.append(["simulate", flag, v, "--out", str(work / "o.h5"), "--overwrite"])
    for flag in ("--method", "--config", "--sweep", "--threads"):
        for v in values:
            cases.append(["warm-up", flag, v])
    for flag in ("--workers", "--chunk-runs", "--scheduler", "--scheduler-file", "--stall-timeout"):
        for v in values:
            cases.append(
                ["sweep", "s.toml", "--out", str(work / "sw.h5"), "--no-progress", flag, v]
            )
    for flag in ("--run", "--threshold", "--kind", "--quantity", "--x"):
        for v in values:
            cases.append(["plot", str(good), "--out", str(work / "fig"), flag, v])
    for flag in (
        "--K",
        "--M",
        "--teacher-v",
        "--lr",
        "--n-starts",
        "--seed",
        "--student-v",
        "--activation",
        "--teacher-activation",
    ):
        for v in values:
            cases.append(["fixed-points", "--n-starts", "5", flag, v])
    data = good.read_bytes()
    files = {
        "foreign.h5": None,
        "truncated.h5": data[: len(data) // 2],
        "empty.h5": b"",
        "text.h5": b"hello",
        "flipped.h5": None,
    }
    with h5py.File(work / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    flipped = bytearray(data)
    rng = random.Random(1)
    for _ in range(64):
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    files["flipped.h5"] = bytes(flipped)
    for name, content in files.items():
        if content is not None:
            (work / name).write_bytes(content)
        cases.append(["info", str(work / name)])
        cases.append(["plot", str(work / name), "--out", str(work / "fig")])
    (work / "folder.h5").mkdir(exist_ok=True)
    cases += [["info", str(work / "folder.h5")], ["plot", str(work / "folder.h5")]]
    counts = {"one line": 0, "accepted": 0, "defect": 0}
    defects = []
    for args in cases:
        kind, msg = classify(args, 120, work)
        counts[kind] += 1
        if kind == "defect":
            defects.append((args, msg))
    print(
        f"hostile inputs: {len(cases)} tried: {counts['one line']} refused in one line, "
        f"{counts['accepted']} accepted (valid values), {counts['defect']} defects"
    )
    for args, msg in defects:
        print("  defect:", " ".join(args), "->", msg)
    return counts


def kills(work, n_kills):
    sweep = work / "slow.toml"
    sweep.write_text(SWEEP)
    clean = work / "clean.h5"
    subprocess.run(
        FASTQUAD + ["sweep", str(sweep), "--out", str(clean), "--no-progress", "--workers", "2"],
        check=True,
        capture_output=True,
    )
    out = work / "killed.h5"
    rng = random.Random(7)
    survived = 0
    for _ in range(n_kills):
        p = subprocess.Popen(
            FASTQUAD + ["sweep", str(sweep), "--out", str(out), "--no-progress", "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(2.0, 12.0))
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        survived += 1
    done = subprocess.run(
        FASTQUAD + ["sweep", str(sweep), "--out", str(out), "--no-progress", "--workers", "2"],
        capture_output=True,
        text=True,
    )
    import fastquad as fq

    a, b = fq.read(out), fq.read(clean)
    same = (
        done.returncode == 0
        and np.array_equal(a.status, b.status)
        and np.array_equal(a.eps_g, b.eps_g, equal_nan=True)
        and np.array_equal(a.Q, b.Q, equal_nan=True)
    )
    print(
        f"kills: {survived} SIGKILLs of the sweep client, then resumed: every run stored "
        f"{'exactly once and bit-identical to an uninterrupted sweep' if same else 'WRONG'}"
    )
    return survived, same


def two_sweeps(work):
    sweep = work / "slow.toml"
    out = work / "shared.h5"
    first = subprocess.Popen(
        FASTQUAD + ["sweep", str(sweep), "--out", str(out), "--no-progress", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = Path(str(out) + ".lock")
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the first sweep holds its file
    second = subprocess.run(
        FASTQUAD + ["sweep", str(sweep), "--out", str(out), "--no-progress", "--workers", "1"],
        capture_output=True,
        text=True,
    )
    first.wait()
    print(
        f"two sweeps on one file: the second exited {second.returncode} with "
        f"{second.stderr.strip()!r}; the first exited {first.returncode}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.time()
        hostile_inputs(work, args.quick)
        kills(work, 4 if args.quick else 20)
        two_sweeps(work)
        print(f"probe finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
