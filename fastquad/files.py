"""Writing results files safely: output checks, atomic replacement, full disks and a lock.

- :func:`check_output`: whether a file can be written at a path, asked before computing.
- :func:`atomic_output`: a temporary file in the same folder, renamed over the target only
  once it is complete and on disk; a failed write removes it and leaves the target as it was.
- :func:`guarded`: a file object for h5py whose failed writes never reach HDF5. When a write
  fails (a full disk), HDF5 cannot close the file; it keeps it open and closes it again at
  interpreter exit, which crashes the process (a segmentation fault after pages of HDF5
  errors). Here the first failure is recorded, the data HDF5 still writes are kept in memory
  so that it sees a consistent file and closes cleanly, and the failure is raised afterwards.
- :func:`check_space`: free space against what a write needs, where that can be known.
- :class:`OutputLock`: an exclusive lock on a results file (a sidecar ``<file>.lock``),
  released by the operating system when its process dies.
- :func:`temporaries`: the temporaries of one file, matched by name (never by a glob pattern
  built from a path, which may contain ``*``, ``?`` or ``[``).

Failures to store are :class:`~fastquad.errors.StorageError` with one line naming the file and
what is intact; problems with what the caller gave are :class:`~fastquad.errors.InputError`.
"""

import errno
import io
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, StorageError

try:
    import fcntl
except ImportError:  # no flock (Windows): sweeps there run without the lock
    fcntl = None

TMP_INFIX = ".tmp-"
LOCK_SUFFIX = ".lock"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


# ------------------------------------------------------------------ checks before computing


def check_output(path, *, overwrite, name="--out"):
    """Check that a results file can be written at ``path``; raise in one line if not.

    Meant to be called before any computation, so that a run is never lost to an output that
    could not have been written. Nothing is left behind: writability is tested by creating and
    removing a temporary file in the folder (permission bits alone do not tell, e.g. for root
    or on a read-only mount). Nothing is reserved either: the disk can still fill up while
    computing (the writers then raise :class:`StorageError`), and whether another sweep is
    writing the file is found out by the sweep's lock (:class:`OutputLock`).

    Parameters
    ----------
    path : str or Path
        The file to write.
    overwrite : bool
        Whether an existing file may be replaced. A sweep, which resumes an existing file (and
        refuses one made by a different sweep itself), passes ``True``.
    name : str
        How the caller calls this path in messages (``"--out"`` for the command line).

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        The folder does not exist or is not a folder; ``path`` is a folder (also with
        ``overwrite``); ``path`` exists and ``overwrite`` is false; the folder cannot be
        written (read-only, no permission).
    StorageError
        The folder's disk is full (not even an empty file can be created).
    """
    path = Path(path)
    folder = path.parent
    if not folder.exists():
        raise InputError(f"{name}: folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise InputError(f"{name}: {folder} is not a folder")
    if path.is_dir():
        raise InputError(f"{name}: {path} is a folder; give the name of a file in it")
    if os.path.lexists(path) and not overwrite:
        how = "use --overwrite" if name.startswith("--") else "pass overwrite=True"
        raise InputError(f"{name}: {path} exists ({how} to replace it)")
    try:
        fd, probe = tempfile.mkstemp(prefix=path.name + TMP_INFIX, dir=folder)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise StorageError(_no_space(path, existed=path.exists())) from None
        raise InputError(f"{name}: cannot write in folder {folder} ({_reason(exc)})") from None
    os.close(fd)
    os.unlink(probe)
    return path


# ------------------------------------------------------------------ messages


def _reason(exc):
    return exc.strerror or str(exc).splitlines()[0]


def _mount_point(path):
    """The mount point holding ``path`` (names the disk in messages)."""
    p = Path(os.path.abspath(path)).parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def _intact(existed, hint):
    return ("the previous file is intact" if existed else "nothing was written") + hint


def _no_space(path, *, existed, hint="", detail=""):
    return (
        f"no space left on {_mount_point(path)}{detail} to store {path}; {_intact(existed, hint)}"
    )


def storage_error(exc, path, *, existed, hint=""):
    """The :class:`StorageError` for an :class:`OSError` raised while writing ``path``.

    ``existed``: whether a previous file is there (and intact); ``hint`` ends the message
    (e.g. ``" and the sweep resumes when run again"``).
    """
    if isinstance(exc, StorageError):
        return exc
    if exc.errno in _NO_SPACE:
        return StorageError(_no_space(path, existed=existed, hint=hint))
    return StorageError(f"could not write {path} ({_reason(exc)}); {_intact(existed, hint)}")


def check_space(path, need, *, hint=""):
    """Raise :class:`StorageError` if the disk of ``path`` has less than ``need`` bytes free.

    Meant for writes of a known size; when the free space cannot be found out, nothing is
    raised (the write itself then reports a full disk).
    """
    try:
        free = shutil.disk_usage(Path(os.path.abspath(path)).parent).free
    except OSError:
        return
    if free < need:
        raise StorageError(
            _no_space(
                path,
                existed=os.path.exists(path),
                hint=hint,
                detail=f" ({_size(free)} free, {_size(need)} needed)",
            )
        )


def _size(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


# ------------------------------------------------------------------ atomic replacement


def temporary_name(path):
    """A fresh temporary name beside ``path`` (recognised by :func:`temporaries`)."""
    path = Path(path)
    return path.parent / f"{path.name}{TMP_INFIX}{uuid.uuid4().hex[:8]}"


def temporaries(path):
    """The temporaries of ``path`` in its folder: names starting with ``<name>.tmp-``.

    The folder is listed and names are compared literally, so a path with glob characters
    (``r[1].h5``, ``*``) matches only its own temporaries.
    """
    path = Path(path)
    prefix = path.name + TMP_INFIX
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    return [path.parent / n for n in sorted(names) if n.startswith(prefix)]


def fsync_dir(folder):
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename itself is atomic
    finally:
        os.close(fd)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_output(path, *, overwrite=True, hint="", name=None):
    """Write ``path`` through a temporary file in the same folder, renamed into place.

    Yields the temporary path (not yet existing). When the block ends normally, the
    temporary is fsynced and renamed over ``path`` (and the folder fsynced), so ``path`` is
    at every moment either the previous file or the complete new one. When the block raises,
    the temporary is removed and ``path`` is left as it was; an :class:`OSError` (a full disk,
    a failed write) becomes a one-line :class:`StorageError` naming the file and saying what
    is intact, other exceptions pass unchanged.

    Parameters
    ----------
    path : str or Path
    overwrite : bool
        If false, the new file is put in place only if ``path`` still does not exist
        (atomically, by a hard link where the file system has them): :class:`InputError`.
    hint : str
        Appended to the failure message (``" and the sweep resumes when run again"``).
    name : str, optional
        How the caller calls ``path`` in the message of an existing file.
    """
    path = Path(path)
    existed = os.path.lexists(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if existed:
            try:
                shutil.copymode(path, tmp)  # a replaced file keeps its permissions
            except OSError:
                pass
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path, name)
        fsync_dir(path.parent)
    except OSError as exc:
        _remove(tmp)
        err = storage_error(exc, path, existed=existed, hint=hint)
        if err is exc:
            raise
        raise err from exc
    except BaseException:
        _remove(tmp)
        raise


def _publish_new(tmp, path, name):
    try:
        os.link(tmp, path)  # fails if path appeared meanwhile: never replaces a file
    except FileExistsError:
        how = "use --overwrite" if (name or "").startswith("--") else "pass overwrite=True"
        raise InputError(
            f"{name + ': ' if name else ''}{path} exists ({how} to replace it)"
        ) from None
    except OSError as exc:
        if exc.errno not in (
            errno.EPERM,
            errno.ENOTSUP,
            errno.EOPNOTSUPP,
            errno.EXDEV,
            errno.EMLINK,
        ):
            raise
        os.replace(tmp, path)  # no hard links on this file system
        return
    os.unlink(tmp)


# ------------------------------------------------------------------ h5py writes that cannot fail


class GuardedFile(io.RawIOBase):
    """A read-write file for h5py (``h5py.File(guarded_file, mode)``) whose writes never fail.

    The first failed write (or truncation) is recorded in :attr:`error`; from then on what is
    written is kept in memory, page by page, and reads see it, so HDF5 works on a consistent
    file and can close it. Call :meth:`check` between writes to stop early, and read
    :attr:`error` after closing the h5py file: the file on disk is then incomplete.
    """

    PAGE = 1 << 16

    def __init__(self, path, *, create):
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT | os.O_TRUNC
        self._fd = os.open(path, flags, 0o666)
        self._pos = 0
        self._size = os.fstat(self._fd).st_size  # the file's size as HDF5 sees it
        self._disk = self._size  # how much of it is on disk (the rest: pages or zeros)
        self._pages = {}  # page number -> bytearray, once a write has failed
        self.error = None

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=os.SEEK_SET):
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self):
        return self._pos

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        n = len(view)
        count = max(0, min(n, self._size - self._pos))
        on_disk = max(0, min(count, self._disk - self._pos))
        got = 0
        while got < on_disk and self._fd is not None:
            data = os.pread(self._fd, on_disk - got, self._pos + got)
            if not data:
                break
            view[got : got + len(data)] = data
            got += len(data)
        view[got:n] = bytes(n - got)  # beyond the end: zeros, as HDF5's own drivers give
        for page in self._pages_of(self._pos, n):
            self._copy_from_page(page, view, self._pos)
        self._pos += count
        return count

    def write(self, data):
        view = memoryview(data).cast("B")
        n = len(view)
        done = 0
        while done < n and self.error is None and self._fd is not None:
            try:
                done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as exc:
                self.error = exc
        self._disk = max(self._disk, self._pos + done) if done else self._disk
        if done < n:
            self._keep(view[done:], self._pos + done)
        self._pos += n
        self._size = max(self._size, self._pos)
        return n

    def truncate(self, size=None):
        size = self._pos if size is None else size
        if self.error is None and self._fd is not None:
            try:
                os.ftruncate(self._fd, size)
                self._disk = size
            except OSError as exc:
                self.error = exc
        self._disk = min(self._disk, size)  # what lies beyond on disk is no longer the file's
        for page in [p for p in self._pages if p * self.PAGE >= size]:
            del self._pages[page]
        tail = self._pages.get(size // self.PAGE)
        if tail is not None:
            tail[size % self.PAGE :] = bytes(self.PAGE - size % self.PAGE)
        self._size = size
        return size

    def flush(self):
        pass  # every write goes straight to the operating system (os.pwrite)

    def check(self):
        """Raise the recorded write failure, if any."""
        if self.error is not None:
            raise self.error

    def close(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        super().close()

    # pages kept in memory after a failed write
    def _pages_of(self, pos, n):
        if not self._pages or n == 0:
            return []
        first, last = pos // self.PAGE, (pos + n - 1) // self.PAGE
        return [p for p in range(first, last + 1) if p in self._pages]

    def _copy_from_page(self, page, view, pos):
        start = max(pos, page * self.PAGE)
        stop = min(pos + len(view), (page + 1) * self.PAGE)
        off = page * self.PAGE
        view[start - pos : stop - pos] = self._pages[page][start - off : stop - off]

    def _keep(self, view, pos):
        while len(view):
            page, off = divmod(pos, self.PAGE)
            buf = self._pages.get(page)
            if buf is None:
                buf = bytearray(self.PAGE)
                length = min(self.PAGE, self._disk - page * self.PAGE)
                if length > 0 and self._fd is not None:
                    on_disk = os.pread(self._fd, length, page * self.PAGE)
                    buf[: len(on_disk)] = on_disk
                self._pages[page] = buf
            k = min(len(view), self.PAGE - off)
            buf[off : off + k] = view[:k]
            view, pos = view[k:], pos + k


@contextmanager
def guarded(path, *, create=False):
    """A :class:`GuardedFile` on ``path`` for h5py; raises its recorded failure at the end.

    Open the h5py file inside the block and close it there (``with h5py.File(g, mode)``);
    when the block ends, a write that failed meanwhile is raised as the :class:`OSError` it
    was (an exception of the block is replaced by it: the failed write is the cause).
    """
    g = GuardedFile(path, create=create)
    try:
        try:
            yield g
        except Exception as exc:
            if g.error is not None and g.error is not exc:
                raise g.error  # noqa: B904 (the body's exception stays attached as the context)
            raise
        g.check()
    finally:
        g.close()


# ------------------------------------------------------------------ the lock


class OutputLock:
    """An exclusive lock on a results file, held from construction until :meth:`release`.

    The lock is ``flock`` on a sidecar file ``<path>.lock`` holding the holder's pid (for the
    message another process gets). The operating system releases it when the holder dies.
    The holder removes the lock file before releasing it, and a process that locked a file
    which is no longer at that name (removed meanwhile) tries again, so no lock file stays
    behind a process that ended normally and two processes never hold "the" lock at once.

    Parameters
    ----------
    path : str or Path
        The results file.
    name : str
        How the caller calls it in messages.

    Raises
    ------
    InputError
        Another process holds the lock, or the lock file cannot be created.
    StorageError
        The disk is full (the lock file cannot be created).
    """

    def __init__(self, path, *, name="--out"):
        self.target = Path(path)
        self.path = Path(str(path) + LOCK_SUFFIX)
        self._name = name
        self._fh = None
        self._pid = os.getpid()
        for _ in range(1000):
            if self._try():
                return
        raise InputError(
            f"{name}: could not lock {self.target} (its lock file {self.path} keeps being replaced)"
        )

    def _try(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise StorageError(_no_space(self.target, existed=self.target.exists())) from None
            raise InputError(
                f"{self._name}: cannot write in folder {self.target.parent} ({_reason(exc)})"
            ) from None
        # a file object: if this lock is dropped without release() (an object collected), the
        # descriptor is closed and the operating system releases the lock
        fh = open(fd, "r+b", buffering=0)
        try:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self._holder(fh)
            fh.close()
            raise InputError(
                f"{self._name}: {self.target} is being written by another "
                f"fastquad sweep (pid {pid}); wait for it or use another "
                f"{self._name}"
            ) from None
        except OSError as exc:
            fh.close()
            raise InputError(
                f"{self._name}: cannot lock {self.path} ({_reason(exc)}); the "
                "folder's file system does not support locks"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed this file before releasing it: try again
            fh.close()
            return False
        try:
            fh.truncate(0)
            fh.write(f"{os.getpid()}\n".encode())
        except OSError:
            pass  # a full disk: the lock holds all the same, only the pid is not told
        self._fh = fh
        return True

    @staticmethod
    def _holder(fh):
        # the holder writes its pid right after locking: give it a moment
        for _ in range(20):
            text = os.pread(fh.fileno(), 32, 0).decode(errors="replace").strip()
            if text.isdigit():
                return text
            time.sleep(0.05)
        return "unknown"

    @property
    def held(self):
        return self._fh is not None

    def release(self):
        """Remove the lock file and release the lock (safe to call more than once)."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            if os.getpid() == self._pid:  # a forked child's copy must not remove the file
                _remove(self.path)
        finally:
            fh.close()

    def __del__(self):
        try:
            self.release()
        except Exception:  # at interpreter exit, modules may be gone: the OS releases the lock
            pass


__all__ = [
    "check_output",
    "atomic_output",
    "guarded",
    "GuardedFile",
    "check_space",
    "storage_error",
    "OutputLock",
    "temporaries",
    "temporary_name",
    "fsync_dir",
    "TMP_INFIX",
    "LOCK_SUFFIX",
]
