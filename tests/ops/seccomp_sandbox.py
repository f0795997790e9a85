"""Run a command under the seccomp filters the unit asks systemd for, without systemd.

No systemd runs on the build machines, so the unit's sandbox cannot be tried by starting the
service. This installs the same filters through libseccomp, then execs the command; seccomp
filters survive execve, so the command meets exactly what the service would:

``--mdwe`` (``MemoryDenyWriteExecute=yes``), as systemd 252 builds it
(src/shared/seccomp-util.c, ``seccomp_memory_deny_write_execute``): ``mmap`` with both PROT_WRITE
and PROT_EXEC, ``mprotect``/``pkey_mprotect`` adding PROT_EXEC, and ``shmat`` with SHM_EXEC fail
with EPERM.

``--syscall-filter GROUP`` (``SystemCallFilter=GROUP`` with ``SystemCallErrorNumber=EPERM``): only
the system calls in the group are allowed, every other one fails with EPERM. The group is expanded
by the real ``systemd-analyze syscall-filter``, so the list is the installed systemd's own.

Usage: ``python tests/ops/seccomp_sandbox.py [--mdwe] [--syscall-filter @system-service] -- CMD ...``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import mmap
import os
import shutil
import subprocess
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
EPERM = 1
SHM_EXEC = 0o100000


def _act_errno(errno: int) -> int:
    return 0x00050000 | (errno & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _load(default_action: int, rules: list[tuple[str, int, _ArgCmp | None]]) -> None:
    """One filter: ``default_action`` unless a rule (syscall, action, optional arg test) matches."""
    lib = _lib()
    ctx = lib.seccomp_init(default_action)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        for syscall, action, cmp in rules:
            nr = lib.seccomp_syscall_resolve_name(syscall.encode())
            if nr < 0:
                continue  # not on this architecture (mmap2 on x86-64)
            args = (ctypes.byref(cmp), 1) if cmp is not None else (None, 0)
            rc = lib.seccomp_rule_add_array(ctx, action, nr, args[1], args[0])
            if rc < 0:
                raise OSError(-rc, f"seccomp_rule_add({syscall}) failed")
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, "seccomp_load failed")
    finally:
        lib.seccomp_release(ctx)


def install_mdwe_filter() -> None:
    deny = _act_errno(EPERM)
    wx = mmap.PROT_WRITE | mmap.PROT_EXEC
    exec_ = mmap.PROT_EXEC
    _load(
        SCMP_ACT_ALLOW,
        [
            ("mmap", deny, _ArgCmp(2, SCMP_CMP_MASKED_EQ, wx, wx)),
            ("mmap2", deny, _ArgCmp(2, SCMP_CMP_MASKED_EQ, wx, wx)),
            ("mprotect", deny, _ArgCmp(2, SCMP_CMP_MASKED_EQ, exec_, exec_)),
            ("pkey_mprotect", deny, _ArgCmp(2, SCMP_CMP_MASKED_EQ, exec_, exec_)),
            ("shmat", deny, _ArgCmp(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC)),
        ],
    )


def expand_group(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd syscall group, nested groups expanded."""
    binary = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    out = subprocess.run(
        [binary, "syscall-filter", group], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    seen = seen if seen is not None else set()
    seen.add(group)
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                names |= expand_group(item, seen)
        else:
            names.add(item)
    return names


def install_syscall_filter(group: str) -> None:
    names = sorted(expand_group(group))
    if len(names) < 50:
        raise RuntimeError(
            f"{group} expanded to only {len(names)} system calls; systemd-analyze output changed?"
        )
    _load(_act_errno(EPERM), [(name, SCMP_ACT_ALLOW, None) for name in names])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdwe", action="store_true", help="MemoryDenyWriteExecute=yes")
    parser.add_argument("--syscall-filter", help="SystemCallFilter= group, e.g. @system-service")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    # The allow-list filter must come last: installing another filter is itself a system call
    # (seccomp) that the allow-list may not permit.
    if args.mdwe:
        install_mdwe_filter()
    if args.syscall_filter:
        install_syscall_filter(args.syscall_filter)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
