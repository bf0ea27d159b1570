"""The grader's guard inside a grading kernel (labs/README.md, "What the grader trusts").

:mod:`ondevice.grade_run` executes ``install(...)`` in every grading kernel before any cell,
so before any code of the submission. It adds an audit hook (PEP 578): Python calls it on
every audited operation, and a hook cannot be removed once added. From then on the kernel may
not

=================  ==========================================================================
touch a path       under a protected folder (the course, the references, the other
                   submissions, the grader's own files, the repository's ``labs/`` and
                   library) unless it is inside this kernel's own sandbox; nor any notebook
                   (``*.ipynb``) anywhere: open, list, rename, remove, link, chmod, ...
start a process    ``subprocess``, ``os.system``, ``os.exec*``, ``os.spawn*``, ``os.fork``,
                   ``pty.spawn`` (a child would not carry the hook); on a machine with a GPU,
                   except Triton's toolchain (:func:`toolchain`), which compiles kernels
load native code   ``ctypes`` (a C call would not be audited)
reach the network  any socket address other than this machine's loopback
trace or dig       ``sys.settrace``, ``sys.setprofile``, ``gc.get_objects``,
                   ``gc.get_referrers``, ``gc.get_referents`` (ways to reach the grader's
                   objects in memory)
=================  ==========================================================================

A denied operation raises :class:`PermissionError` (the student's code sees an error and the
exercise fails) and appends one line to the log file the grader reads afterwards (a flag for
the teacher). What the guard cannot stop is said in labs/README.md: it is Python code in the
same process as the submission, a speed bump for a determined cheat, not a container.
"""

from __future__ import annotations

import os
import sys

PATH_EVENTS = frozenset({
    "open", "os.listdir", "os.scandir", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
    "os.link", "os.symlink", "os.truncate", "os.chmod", "os.chown", "os.utime", "os.chdir",
    "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "shutil.rmtree",
    "shutil.copyfile", "shutil.copytree", "shutil.move", "shutil.copymode", "shutil.copystat",
    "glob.glob", "glob.glob/2", "sqlite3.connect", "os.startfile",
})
PROCESS_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "pty.spawn", "os.kill", "os.killpg",
})
NATIVE_EVENTS = frozenset({"ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function"})
DIG_EVENTS = frozenset({"sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers",
                        "gc.get_referents"})
NETWORK_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
                            "socket.gethostbyname", "socket.gethostbyaddr", "urllib.Request"})
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", ""})


def _paths(args) -> list[str]:
    """The file paths among an audit event's arguments (file descriptors are left out)."""
    out = []
    for a in args:
        if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__"):
            try:
                p = os.fsdecode(os.fspath(a))
            except (TypeError, ValueError):
                continue
            out.append(p)
    return out


def _host(event: str, args) -> str | None:
    """The host an address-taking network event names (None when it names none)."""
    for a in args:
        if isinstance(a, tuple) and a and isinstance(a[0], (str, bytes)):
            return os.fsdecode(a[0])
        if isinstance(a, (str, bytes)) and event in ("socket.getaddrinfo", "socket.gethostbyname",
                                                      "socket.gethostbyaddr", "urllib.Request"):
            return os.fsdecode(a)
    return None


def _writes(event: str, args) -> bool:
    """Whether a path event may change the file (anything but opening it for reading)."""
    if event != "open":
        return True
    mode, flags = (list(args) + [None, None])[1:3]
    if isinstance(mode, str) and any(ch in mode for ch in "wax+"):
        return True
    changing = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    return isinstance(flags, int) and bool(flags & changing)


def _program(args) -> str | None:
    """The program a ``subprocess.Popen`` event starts, as a real path (None if not found)."""
    executable, argv = (list(args) + [None, None])[:2]
    name = executable or (argv if isinstance(argv, (str, bytes)) else (argv[0] if argv else None))
    if name is None:
        return None
    import shutil

    found = shutil.which(os.fsdecode(os.fspath(name)))
    return os.path.realpath(found) if found else None


def toolchain() -> list[str]:
    """What Triton runs to compile a kernel on a GPU: the binaries in its package (``ptxas``),
    the C compiler of its launchers and ``ldconfig``. Allowed only where a GPU is present, since
    a kernel written in a lab is compiled inside the grading kernel there."""
    import shutil

    out = []
    try:
        import triton

        out.append(os.path.dirname(os.path.realpath(triton.__file__)))
    except ImportError:
        pass
    for name in (os.environ.get("CC"), "cc", "gcc", "ldconfig", "/sbin/ldconfig"):
        found = shutil.which(name) if name else None
        if found:
            out.append(os.path.realpath(found))
    return out


class Guard:
    """The audit hook: ``protected`` folders, this kernel's ``sandbox``, the ``log`` to append to;
    ``programs``: files and folders whose programs may be started (none by default)."""

    def __init__(self, protected, sandbox: str, log: str, programs=()):
        self.sandbox = os.path.realpath(sandbox)
        self.protected = [os.path.realpath(p) for p in protected]
        self.log_path = os.path.realpath(log)
        self.log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.pid = os.getpid()
        self.programs = [os.path.realpath(p) for p in programs]

    def _inside(self, path: str, folder: str) -> bool:
        return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)

    def _path_denied(self, path: str, event: str, args) -> str | None:
        full = os.path.realpath(path)
        if full == self.log_path:
            return "the grader's log" if _writes(event, args) else None
        if full.endswith(".ipynb"):
            return "a notebook"
        if self._inside(full, self.sandbox):
            return None
        for folder in self.protected:
            if self._inside(full, folder):
                return f"inside the protected folder {folder}"
        return None

    def why(self, event: str, args) -> str | None:
        """Why the event is denied (None: allowed)."""
        if event in PATH_EVENTS:
            for path in _paths(args):
                reason = self._path_denied(path, event, args)
                if reason:
                    return f"{event} {path!r}: {reason}"
            return None
        if event in ("os.kill", "os.killpg"):
            return None if args and args[0] in (self.pid, 0) else f"{event} of process {args[0] if args else '?'}"
        if event == "subprocess.Popen" and self.programs:
            program = _program(args)
            if program and any(self._inside(program, allowed) for allowed in self.programs):
                return None
        if event in PROCESS_EVENTS:
            return f"{event}: starting processes"
        if event in NATIVE_EVENTS:
            return f"{event}: native code through ctypes"
        if event in DIG_EVENTS:
            return f"{event}: reaching into the interpreter"
        if event in NETWORK_EVENTS:
            host = _host(event, args)
            return None if host is None or host in LOOPBACK else f"{event} {host!r}: the network"
        return None

    def __call__(self, event: str, args) -> None:
        reason = self.why(event, args)
        if reason is None:
            return
        line = f"denied: {reason}\n".encode("utf-8", "replace")
        try:
            os.write(self.log, line)
        except OSError:
            pass
        raise PermissionError(f"ondevice.grade does not allow {reason} while grading")


PRELOAD = ("numpy", "torch", "kernels", "triton", "triton.language")  # native code loaded through ctypes;
# kernels first: it switches Triton to its interpreter when there is no GPU, before triton loads


def install(protected, sandbox: str, log: str, preload=PRELOAD) -> None:
    """Import ``preload`` (modules that load their native code through ctypes), then add the
    guard to this interpreter, for good (see the module docstring)."""
    import importlib

    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    torch = sys.modules.get("torch")
    gpu = torch is not None and torch.cuda.is_available()
    sys.addaudithook(Guard(protected, sandbox, log, toolchain() if gpu else ()))


__all__ = ["Guard", "install"]
