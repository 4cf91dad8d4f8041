"""Which MPIs finalize through MPICH's deadlocking UCX hook, and finding the PLT slot that skips it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcthreads.runtime.finalize import finalize_can_hang, plt_slot

DEBIAN_MPICH = "MPICH Version:\t4.0.2\nMPICH Release date:\tThu Apr  7 2022\nMPICH Device:\tch4:ucx\n"
LIBMPICH = Path("/usr/lib/x86_64-linux-gnu/libmpich.so.12")


@pytest.mark.parametrize(
    ("text", "hangs"),
    [
        (DEBIAN_MPICH, True),
        (DEBIAN_MPICH.replace("4.0.2", "4.1.2"), True),
        (DEBIAN_MPICH.replace("4.0.2", "4.2.0"), False),
        (DEBIAN_MPICH.replace("4.0.2", "5.0.2"), False),
        (DEBIAN_MPICH.replace("ch4:ucx", "ch4:ofi"), False),
        ("Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4, repo rev: v4.1.4", False),
        ("", False),
    ],
)
def test_only_mpich_4_0_and_4_1_over_ucx_count_as_hanging_in_finalize(text, hangs):
    assert finalize_can_hang(text) is hangs


def test_a_file_that_is_not_a_64_bit_elf_has_no_slot():
    assert plt_slot(b"\x7fELF\x01\x01" + bytes(64), "ucp_disconnect_nb") is None
    assert plt_slot(b"#!/bin/sh\n" * 10, "ucp_disconnect_nb") is None


@pytest.mark.skipif(not LIBMPICH.exists(), reason="Debian's libmpich is not installed")
def test_debian_libmpich_calls_ucp_disconnect_nb_through_a_writable_plt_slot():
    elf = LIBMPICH.read_bytes()
    slot = plt_slot(elf, "ucp_disconnect_nb")
    assert slot is not None and 0 < slot < len(elf) + (1 << 26)
    assert plt_slot(elf, "no_such_function") is None
    # Another function it calls through the PLT has its own slot, 8 bytes apart from others
    other = plt_slot(elf, "ucp_worker_progress")
    assert other is not None and other != slot and (other - slot) % 8 == 0
