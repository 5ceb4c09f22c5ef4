"""Settings: defaults, precedence (flags > env > file > defaults), and one line per bad field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fleet._settings import FleetSettings, format_duration, load_settings, render_settings
from fleet.errors import ConfigError


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings(environ={})
    assert s.namespace == "kube-mock-system"
    assert s.shard.node_lease_duration == 40.0
    assert s.shard.node_lease_renew_interval == 10.0
    assert s.shard.status_report_interval == 300.0
    assert s.shard.pod_watch == "shard"
    assert s.coordinator.namespaces == []
    assert (
        s.coordinator.leader_lease_duration,
        s.coordinator.leader_renew_deadline,
        s.coordinator.leader_retry_period,
    ) == (15.0, 10.0, 2.0)


def test_every_field_is_documented() -> None:
    from fleet._settings import CoordinatorSettings, ShardSettings

    for model in (FleetSettings, ShardSettings, CoordinatorSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"


def test_sections_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(ValueError):
        s.shard.writers = 3


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "shards: 2\ncontext: from-file\nshard:\n  renewJitter: 0.1\n  writers: 4\n"
        "coordinator:\n  namespaces: [a]\n"
    )
    env = {
        "KUBEMOCK_FLEET_SHARDS": "3",
        "KUBEMOCK_FLEET_SHARD__WRITERS": "8",
        "KUBEMOCK_FLEET_COORDINATOR__NAMESPACES": "b,c",
        "KUBEMOCK_FLEET_SHARD_ID": "7",  # not a setting: ignored
    }
    s = load_settings(config_file=config, environ=env, flags={"shards": 5, "kubeconfig": None})
    assert s.shards == 5  # flag
    assert s.shard.writers == 8  # env over file
    assert s.coordinator.namespaces == ["b", "c"]  # env list
    assert s.shard.renew_jitter == 0.1  # file
    assert s.context == "from-file"
    assert s.kubeconfig is None  # a flag given as None is "not given"


def test_durations_in_go_syntax_round_trip(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("shard:\n  statusReportInterval: 1m30s\n  podDeletionDelay: 500ms\n")
    s = load_settings(
        config_file=config, environ={"KUBEMOCK_FLEET_SHARD__NODE_LEASE_DURATION": "60"}
    )
    assert s.shard.status_report_interval == 90.0
    assert s.shard.pod_deletion_delay == 0.5
    assert s.shard.node_lease_duration == 60.0
    shown = yaml.safe_load(render_settings(s))
    assert shown["shard"]["statusReportInterval"] == "1m30s"
    assert shown["shard"]["podDeletionDelay"] == "500ms"
    # What config show prints loads back to the same settings.
    again = tmp_path / "again.yaml"
    again.write_text(render_settings(s))
    assert load_settings(config_file=again, environ={}) == s
    assert json.loads(render_settings(s, "json")) == shown
    assert format_duration(40.0) == "40s"


def test_bad_fields_one_line_each_naming_source_and_path(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("shard:\n  nodeLeaseRenewInterval: ten\n  writerz: 3\n")
    env = {"KUBEMOCK_FLEET_COORDINATOR__MAX_MOVES_PER_SECOND": "-1"}
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=config, environ=env, flags={"shards": "many"})
    lines = str(info.value).splitlines()
    assert f'{config}: shard.nodeLeaseRenewInterval: invalid duration "ten"' in lines
    assert f"{config}: shard.writerz: unknown setting" in lines
    assert any(
        line.startswith(
            "$KUBEMOCK_FLEET_COORDINATOR__MAX_MOVES_PER_SECOND: coordinator.maxMovesPerSecond: "
        )
        for line in lines
    )
    assert any(line.startswith("--shards: shards: ") for line in lines)
    assert len(lines) == 4


def test_cross_field_error_names_the_section_source(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("coordinator:\n  shardRenewDeadline: 20s\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: coordinator: need shardLeaseDuration"):
        load_settings(config_file=config, environ={})


def test_negative_duration_refused() -> None:
    with pytest.raises(
        ConfigError, match=r'shard.podDeletionDelay: invalid duration "-1s": must not be negative'
    ):
        load_settings(environ={"KUBEMOCK_FLEET_SHARD__POD_DELETION_DELAY": "-1s"})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_settings(config_file=tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("shard: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line 2 invalid YAML"):
        load_settings(config_file=bad, environ={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(config_file=scalar, environ={})


def test_traffic_profile_flag_is_named_when_wrong() -> None:
    assert load_settings(environ={}).shard.traffic_profile == "lean"  # today's economy
    s = load_settings(environ={}, flags={"shard.traffic_profile": "kubelet"})
    assert s.shard.traffic_profile == "kubelet"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, flags={"shard.traffic_profile": "chatty"})
    assert str(info.value).startswith("--traffic-profile: shard.trafficProfile:")
    assert "'lean' or 'kubelet'" in str(info.value)


def test_a_failover_that_cannot_beat_the_node_lease_is_refused(tmp_path: Path) -> None:
    """A dead shard's nodes were renewed up to a renew interval before it died and move
    after its shard Lease expired: 35 s + 10 s is past the 40 s node Lease, so they would go
    NotReady before another shard could take them. One line, naming the three settings."""
    config = tmp_path / "c.yaml"
    config.write_text("coordinator:\n  shardLeaseDuration: 35s\n  shardRenewDeadline: 20s\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config, flags={"shards": 2}, environ={})
    message = str(caught.value)
    assert "\n" not in message
    assert (
        "coordinator.shardLeaseDuration (35s) + shard.nodeLeaseRenewInterval (10s) must be "
        "under shard.nodeLeaseDuration (40s)"
    ) in message
    # One shard has no one to fail over to; the defaults leave 15 s for the takeover.
    assert load_settings(config_file=config, flags={"shards": 1}, environ={}).shards == 1
    assert load_settings(flags={"shards": 2}, environ={}).coordinator.shard_lease_duration == 15
