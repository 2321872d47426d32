"""Rule strings (issue 15, 3): a partial string changes only what it names, on top of that
metric's default; each part takes the units used elsewhere; "off" and only "off" is off."""

from __future__ import annotations

import pytest

from autoprof import ConfigError, Rule, Settings
from autoprof.config import RULE_DEFAULTS


def env_rule(metric: str, text: str) -> Rule | None:
    rule: Rule | None = getattr(Settings.from_env({f"AUTOPROF_{metric.upper()}_RULE": text}),
                                f"{metric}_rule")
    return rule


@pytest.mark.parametrize(
    ("metric", "text", "rule"),
    [
        # partial: the other parts stay the metric's own default
        ("latency", "min=500", Rule(min=500, diff=100, abs=None)),
        ("mem", "3,25", Rule(3, 25, 80)),
        ("mem", "3", Rule(3, 25, 80)),
        ("cpu", "cooldown=5m", Rule(10, 25, 70, cooldown=300)),
        ("error_rate", "abs=20", Rule(5, 100, 20)),
        ("loop_lag", "diff=50", Rule(100, 50, 1000)),
        ("rss", "rise=300", Rule(0, None, None, rise=300)),
        ("rss_growth", "abs=80,cooldown=10m", Rule(0, None, 80, cooldown=600)),
        ("cpu", "", Rule(10, 25, 70)),  # names nothing: the default itself
        # full and mixed forms
        ("cpu", "10,25,70,30", Rule(10, 25, 70, 30)),
        ("mem", "3, 25, 80, cooldown=2m", Rule(3, 25, 80, 120)),
        ("mem", "min=3, diff=-", Rule(3, None, 80)),  # '-' unsets a part
        ("cpu", "cooldown=-", Rule(10, 25, 70, cooldown=None)),
        ("inflight", "min=50,abs=200", Rule(50, 25, 200)),  # no default: Rule() is the base
        # units: percentages, durations, sizes, in the metric's unit when bare
        ("cpu", "10%,25%,70%", Rule(10, 25, 70)),
        ("cpu", "cooldown=90s", Rule(10, 25, 70, cooldown=90)),
        ("cpu", "cooldown=1h", Rule(10, 25, 70, cooldown=3600)),
        ("cpu", "cooldown=500ms", Rule(10, 25, 70, cooldown=0.5)),
        ("rss", "rise=200MiB", Rule(0, None, None, rise=200)),
        ("rss", "rise=1GiB", Rule(0, None, None, rise=1024)),
        ("rss", "min=512MB,abs=2g", Rule(512, None, 2048, rise=200)),
        ("latency", "min=1s", Rule(1000, 100, None)),
        ("latency", "min=250ms,abs=2s", Rule(250, 100, 2000)),
        ("loop_lag", "min=0.5s", Rule(500, 200, 1000)),
        # off
        ("cpu", "off", None),
        ("mem", " OFF ", None),
    ],
)
def test_rule_strings(metric: str, text: str, rule: Rule | None) -> None:
    assert Rule.parse(text, metric) == rule
    assert env_rule(metric, text) == rule


@pytest.mark.parametrize("metric", sorted(RULE_DEFAULTS))
def test_every_metric_parses_on_its_own_default(metric: str) -> None:
    base = RULE_DEFAULTS[metric] or Rule()
    assert Rule.parse("cooldown=2m", metric) == Rule(
        base.min, base.diff, base.abs, cooldown=120, rise=base.rise
    )


@pytest.mark.parametrize(
    ("metric", "text", "expected"),
    [
        ("cpu", "0", "write 'off' to turn the rule off, or 'min=0'"),
        ("cpu", "none", "write 'off'"),
        ("cpu", "false", "write 'off'"),
        ("cpu", "no", "write 'off'"),
        ("cpu", "disabled", "write 'off'"),
        ("cpu", "-", "'-' unsets one part"),
        ("cpu", "cooldown=soon", "cooldown: expected a duration like 10, 10s, 500ms or 1m"),
        ("cpu", "min=ten", "min: expected a percentage like 25 or 25%, got 'ten'"),
        ("cpu", "diff=lots", "diff: expected a percentage"),
        ("rss", "rise=lots", "rise: expected MiB like 200, or a size like 200MiB or 1GiB"),
        ("latency", "min=200MiB", "min: expected milliseconds like 500, or a duration like 500ms"),
        ("inflight", "min=5ms", "min: expected a number, got '5ms'"),
        ("cpu", "1,2,3,4,5", "too many parts; a rule is min,diff,abs,cooldown"),
        ("cpu", "max=3", "unknown part 'max'; parts are min, diff, abs, cooldown, rise"),
        ("cpu", "abs=80,3", "positional part '3' after a named one"),
        ("cpu", "3,,80", "part diff is empty; write a value, or '-' to unset it"),
        ("cpu", "min=3,min=4", "gives min twice"),
        ("cpu", "min=-", "min cannot be unset"),
        ("latency", "diff=-", "Rule needs diff, abs or rise"),
    ],
)
def test_rule_string_errors_quote_the_string_and_say_what_was_expected(
    metric: str, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Rule.parse(text, metric)
    assert f"rule {text!r}" in str(info.value)
    assert expected in str(info.value)
    key = f"AUTOPROF_{metric.upper()}_RULE"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({key: text})
    assert str(info.value).startswith(f"{key}={text!r} in the environment: ")
    assert expected in str(info.value)


def test_a_rule_object_in_code_or_app_config_is_taken_whole() -> None:
    options = Settings.options_from_mapping({"AUTOPROF_MEM_RULE": Rule(1, None, 90)})
    assert options == {"mem_rule": Rule(1, None, 90)}
    assert Settings(mem_rule=Rule(1, None, 90)).mem_rule == Rule(1, None, 90)
