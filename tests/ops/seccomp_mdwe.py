"""Run a command under the seccomp rules systemd 252 installs for ``MemoryDenyWriteExecute=yes``.

No systemd runs on the build machines, so the unit's MemoryDenyWriteExecute= cannot be tried by
starting the service. Instead this installs the same filter systemd does (src/shared/seccomp-util.c,
``seccomp_memory_deny_write_execute``) through libseccomp, then execs the command; seccomp filters
survive execve, so the command runs exactly as the service would with respect to W+X memory:

- ``mmap``/``mmap2`` with both PROT_WRITE and PROT_EXEC fail with EPERM;
- ``mprotect``/``pkey_mprotect`` adding PROT_EXEC fail with EPERM (systemd refuses it outright);
- ``shmat`` with SHM_EXEC fails with EPERM.

Usage: ``python -m tests.ops.seccomp_mdwe COMMAND [ARG...]``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
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


def install_filter() -> None:
    """Install the filter on this process (and everything it execs). Raises OSError on failure."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
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
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    deny = _act_errno(EPERM)
    wx = mmap.PROT_WRITE | mmap.PROT_EXEC
    rules = [
        ("mmap", 2, wx, wx),
        ("mmap2", 2, wx, wx),
        ("mprotect", 2, mmap.PROT_EXEC, mmap.PROT_EXEC),
        ("pkey_mprotect", 2, mmap.PROT_EXEC, mmap.PROT_EXEC),
        ("shmat", 2, SHM_EXEC, SHM_EXEC),
    ]
    try:
        for syscall, arg, mask, value in rules:
            nr = lib.seccomp_syscall_resolve_name(syscall.encode())
            if nr < 0:
                continue  # not on this architecture (mmap2 on x86-64)
            cmp = _ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, value)
            rc = lib.seccomp_rule_add_array(ctx, deny, nr, 1, ctypes.byref(cmp))
            if rc < 0:
                raise OSError(-rc, f"seccomp_rule_add({syscall}) failed")
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, "seccomp_load failed")
    finally:
        lib.seccomp_release(ctx)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    install_filter()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
