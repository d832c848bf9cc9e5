"""The one vocabulary (keras_sns.config) and the one rule for k, in every command."""

import click
import pytest

from keras_sns import config
from keras_sns.cli import main
from keras_sns.neurons import resolve_k


@pytest.mark.parametrize("text, expected", [("1", 1), ("7", 7), ("0.1", 0.1), ("1.0", 1.0),
                                            ("5e-1", 0.5), (3, 3), (0.25, 0.25)])
def test_parse_k_counts_and_fractions(text, expected):
    k = config.parse_k(text)
    assert k == expected and type(k) is type(expected)


@pytest.mark.parametrize("bad", ["0", "-2", "1.5", "0.0", "many", True, None])
def test_parse_k_rejects_with_a_message_naming_k(bad):
    with pytest.raises(ValueError, match="k"):
        config.parse_k(bad)


def test_resolve_k_one_is_one_channel_and_one_point_zero_is_all():
    assert resolve_k(config.parse_k("1"), 64) == 1
    assert resolve_k(config.parse_k("1.0"), 64) == 64
    assert resolve_k(config.parse_k("0.1"), 64) == 7  # ceil(6.4)


@pytest.mark.parametrize("text", ["1", "1.0", "0.1", "7"])
def test_train_analyze_and_export_read_k_the_same_way(text):
    parsed = {}
    for name in ("train", "analyze", "export"):
        command = main.get_command(click.Context(main), name)
        (param,) = [p for p in command.params if p.name == "k"]
        parsed[name] = param.process_value(click.Context(command), text)
    assert len({(type(v), v) for v in parsed.values()}) == 1, parsed
    assert parsed["train"] == config.parse_k(text)


def test_train_config_applies_the_rule_and_one_lambda_per_method():
    assert config.TrainConfig(method="sns", k="1").k == 1
    assert config.TrainConfig(method="sns", k=0.1).resolved_sns()["lam"] == config.DEFAULT_LAM["sns"]
    assert config.DEFAULT_LAM["sns"] == config.PRESETS[config.DEFAULT_PRESET].lam
    with pytest.raises(ValueError, match="selection"):
        config.TrainConfig(selection="best")


def test_cli_choices_come_from_config():
    ctx = click.Context(main)
    choices = {}
    for name, option in [("train", "method"), ("train", "selection"), ("train", "preset"),
                         ("train", "strategy"), ("train", "precision")]:
        (param,) = [p for p in main.get_command(ctx, name).params if p.name == option]
        choices[option] = tuple(param.type.choices)
    assert choices["method"] == config.METHODS
    assert choices["selection"] == config.SELECTIONS
    assert choices["preset"] == tuple(config.PRESETS)
    assert choices["strategy"] == config.STRATEGIES
    assert choices["precision"] == config.PRECISION_CHOICES == ("auto", *config.PRECISIONS)
    (study,) = [p for p in main.get_command(ctx, "analyze").params if p.name == "study"]
    assert tuple(study.type.choices) == config.STUDIES
