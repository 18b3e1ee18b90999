"""How many vCPUs a guest gets (iscsikit.vm.default_cpus): never more than the host can spare."""

from __future__ import annotations

import pytest

from iscsikit import vm
from iscsikit.errors import UsageError


@pytest.mark.parametrize(("host_cores", "vcpus"), [(None, 1), (1, 1), (2, 1), (3, 1), (4, 2), (64, 2)])
def test_one_vcpu_per_two_host_cores_at_most_two(monkeypatch: pytest.MonkeyPatch, host_cores, vcpus) -> None:
    monkeypatch.delenv(vm.CPUS_ENV, raising=False)
    monkeypatch.setattr(vm.os, "cpu_count", lambda: host_cores)
    assert vm.default_cpus() == vcpus


def test_the_environment_overrides_and_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vm.CPUS_ENV, "3")
    assert vm.default_cpus() == 3
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv(vm.CPUS_ENV, bad)
        with pytest.raises(UsageError, match=f"ISCSIKIT_VM_CPUS={bad!r}"):
            vm.default_cpus()


def test_an_explicit_count_wins(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(vm.CPUS_ENV, "1")
    assert vm.GuestVM(workdir=tmp_path, cpus=2).cpus == 2
    assert vm.GuestVM(workdir=tmp_path).cpus == 1
