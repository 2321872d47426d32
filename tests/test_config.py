"""Options: defaults, validation messages, environment and mapping loaders."""

from __future__ import annotations

import pytest

from autoprof.config import ConfigError, Rule, Settings, parse_duration, parse_size


def test_defaults_follow_holmes_and_production_intervals():
    s = Settings()
    assert s.cpu_rule == Rule(min=10, diff=25, abs=70)
    assert s.mem_rule == Rule(min=10, diff=25, abs=80)
    assert s.rss_rule == Rule(min=0, diff=None, abs=None, rise=200)
    assert s.rss_growth_rule == Rule(min=0, diff=None, abs=50)
    assert s.inflight_rule is None
    assert s.threads_rule is None
    assert s.collect_interval >= 10
    assert s.window == 10
    assert s.cooldown == 60
    assert s.requests == 5
    assert set(s.rules) == {"cpu", "mem", "rss", "rss_growth", "latency", "error_rate", "loop_lag"}
    assert s.latency_rule == Rule(min=200, diff=100, abs=None)
    assert s.error_rate_rule == Rule(min=5, diff=100, abs=50)
    assert s.loop_lag_rule == Rule(min=100, diff=200, abs=1000)
    assert s.cpu_max == 95
    assert (s.captures_per_window, s.captures_window) == (10, 3600)
    assert s.profile_formats == ("html", "speedscope", "text")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"collect_interval": 0}, "collect_interval must be seconds > 0"),
        ({"collect_interval": "10"}, "collect_interval must be seconds > 0"),
        ({"window": 0}, "window must be a whole number >= 1"),
        ({"requests": 2.5}, "requests must be a whole number"),
        ({"max_bytes": 10}, "max_bytes must be at least 64 KiB"),
        ({"cpu_rule": (10, 25, 70)}, "cpu_rule must be autoprof.Rule"),
        ({"profile_formats": ("html", "pdf")}, "profile_formats ['pdf'] unknown"),
        ({"path_filter": "(unclosed"}, "path_filter '(unclosed' is not a valid regular expression"),
        ({"colect_interval": 1}, "did you mean 'collect_interval'"),
        ({"enabled": "yes"}, "enabled must be True or False"),
    ],
)
def test_bad_options_fail_at_construction_with_what_to_fix(options, message):
    with pytest.raises(ConfigError) as info:
        Settings.build(**options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min": -1}, "min must be a number >= 0"),
        ({"diff": None, "abs": None}, "needs diff, abs or rise"),
        ({"abs": "80"}, "abs must be a number"),
        ({"cooldown": -5}, "cooldown must be a number"),
    ],
)
def test_bad_rules(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Rule(**kwargs)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("3,25,80", Rule(3, 25, 80)),
        ("min=3, abs=80, diff=-", Rule(3, None, 80)),
        ("10,25,70,30", Rule(10, 25, 70, 30)),
        ("5", Rule(5, 25, None)),
        ("off", None),
    ],
)
def test_rule_parse(text, rule):
    assert Rule.parse(text) == rule


def test_rule_parse_errors():
    with pytest.raises(ConfigError, match="unknown part 'max'"):
        Rule.parse("max=3")
    with pytest.raises(ConfigError, match="too many parts"):
        Rule.parse("1,2,3,4,5")
    with pytest.raises(ConfigError, match="expected a number"):
        Rule.parse("ten")


def test_from_env_parses_every_kind_and_env_overrides_keywords():
    env = {
        "AUTOPROF_COLLECT_INTERVAL": "500ms",
        "AUTOPROF_CAPTURE_TIMEOUT": "1m",
        "AUTOPROF_WINDOW": "4",
        "AUTOPROF_MEM_RULE": "3,25,80",
        "AUTOPROF_CPU_RULE": "off",
        "AUTOPROF_MAX_BYTES": "10MiB",
        "AUTOPROF_PROFILE_FORMATS": "html,text",
        "AUTOPROF_HEAP_CENSUS": "no",
        "AUTOPROF_PATH_FILTER": "^/api/",
        "AUTOPROF_DUMP_DIR": "/srv/dumps",
        "UNRELATED": "x",
    }
    s = Settings.from_env(env, requests=3, window=9)
    assert s.collect_interval == 0.5
    assert s.capture_timeout == 60
    assert s.window == 4  # the environment wins over the keyword default
    assert s.requests == 3
    assert s.mem_rule == Rule(3, 25, 80)
    assert s.cpu_rule is None
    assert s.max_bytes == 10 * 2**20
    assert s.profile_formats == ("html", "text")
    assert s.heap_census is False
    assert s.path_filter == "^/api/"
    assert s.dump_dir == "/srv/dumps"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTOPROF_COLECT_INTERVAL": "1"}, "did you mean 'AUTOPROF_COLLECT_INTERVAL'"),
        ({"AUTOPROF_WINDOW": "x"}, "AUTOPROF_WINDOW='x' in the environment: expected a whole"),
        ({"AUTOPROF_COLLECT_INTERVAL": "soon"}, "expected a duration"),
        ({"AUTOPROF_HEAP_GROWTH": "maybe"}, "expected true/false"),
        ({"AUTOPROF_MEM_RULE": "1,2,3,4,5"}, "AUTOPROF_MEM_RULE"),
    ],
)
def test_env_errors_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_mapping_accepts_typed_values_like_flask_config():
    options = Settings.options_from_mapping(
        {"AUTOPROF_WINDOW": 3, "AUTOPROF_MEM_RULE": Rule(1, 10, None), "SECRET_KEY": "x"},
        source="Flask config",
    )
    assert options == {"window": 3, "mem_rule": Rule(1, 10, None)}


def test_replace_validates():
    s = Settings()
    assert s.replace(window=3).window == 3
    with pytest.raises(ConfigError, match="did you mean 'window'"):
        s.replace(windw=3)
    with pytest.raises(ConfigError, match="window must be"):
        s.replace(window=-1)


def test_parsers():
    assert parse_duration("2h") == 7200
    assert parse_duration("1.5") == 1.5
    assert parse_size("1g") == 2**30
    assert parse_size("512KiB") == 512 * 1024
    assert parse_size("100") == 100
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_percentages_from_the_environment():
    s = Settings.from_env({"AUTOPROF_CPU_MAX": "90%", "AUTOPROF_FLIGHT_RECORDER_BUDGET": "0.2%"})
    assert (s.cpu_max, s.flight_recorder_budget) == (90, 0.2)
    assert Settings.from_env({"AUTOPROF_CPU_MAX": "off"}).cpu_max is None
    with pytest.raises(ConfigError, match="flight_recorder_budget must be a percentage"):
        Settings(flight_recorder_budget=0)
