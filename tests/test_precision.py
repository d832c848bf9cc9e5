"""``--precision auto``: the decision on faked hardware descriptions (never by timing)."""

from __future__ import annotations

import json

import pytest

from keras_sns.config import PRECISIONS, TrainConfig
from keras_sns.precision import (
    GPU,
    Hardware,
    choose_precision,
    hardware_description,
    read_cpu,
    resolve_precision,
    saved_model_precision,
)

AVX2_ONLY = frozenset("fpu sse4_2 avx avx2 fma".split())  # the slow machine of issue 12
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16"}  # Zen 4 / Cooper Lake
AMX = AVX2_ONLY | {"avx512f", "amx_tile", "amx_bf16"}  # Sapphire Rapids


@pytest.mark.parametrize(
    "hardware, policy, reason_mentions",
    [
        (Hardware("AMD EPYC 7B12", AVX2_ONLY), "float32", "no native bfloat16"),
        (Hardware("AMD EPYC 9B14", AVX512_BF16), "mixed_bfloat16", "avx512_bf16"),
        (Hardware("Intel Xeon Platinum 8481C", AMX), "mixed_bfloat16", "amx_bf16"),
        (Hardware("Apple M2", frozenset()), "float32", "no native bfloat16"),
        # A GPU decides, whatever the CPU: by compute capability.
        (Hardware("x", AVX2_ONLY, (GPU("NVIDIA H100", (9, 0)),)), "mixed_bfloat16", "9.0"),
        (Hardware("x", AVX2_ONLY, (GPU("NVIDIA A100", (8, 0)),)), "mixed_bfloat16", "8.0"),
        (Hardware("x", AMX, (GPU("Tesla V100", (7, 0)),)), "mixed_float16", "7.0"),
        (Hardware("x", AMX, (GPU("Tesla T4", (7, 5)),)), "mixed_float16", "7.5"),
        (Hardware("x", AMX, (GPU("Tesla P100", (6, 0)),)), "float32", "6.0"),
        (Hardware("x", AMX, (GPU("Tesla K80", (3, 7)),)), "float32", "3.7"),
        # Mixed GPUs: the slowest decides (a V100 has no bfloat16).
        (Hardware("x", AVX2_ONLY, (GPU("A100", (8, 0)), GPU("V100", (7, 0)))), "mixed_float16",
         "7.0"),
        (Hardware("x", AMX, (GPU("mystery", None),)), "float32", "unknown compute capability"),
    ],
)
def test_choice_follows_the_hardware(hardware, policy, reason_mentions):
    chosen, reason = choose_precision(hardware)
    assert chosen == policy
    assert chosen in PRECISIONS
    assert reason_mentions in reason


def test_the_boundaries_of_compute_capability():
    def pick(cc):
        return choose_precision(Hardware(gpus=(GPU("g", cc),)))[0]

    assert [pick(cc) for cc in [(6, 9), (7, 0), (7, 9), (8, 0), (8, 6)]] == [
        "float32", "mixed_float16", "mixed_float16", "mixed_bfloat16", "mixed_bfloat16"]


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme avx avx2 fma
bogomips\t: 4500.00

processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme avx avx2 fma
"""


def test_reads_model_and_flags_from_cpuinfo_text():
    model, flags = read_cpu(CPUINFO)
    assert model == "AMD EPYC 7B12"
    assert flags == {"fpu", "vme", "avx", "avx2", "fma"}
    assert choose_precision(Hardware(model, flags))[0] == "float32"
    # ARM spells its flags "Features": no bf16 flag, so float32.
    model, flags = read_cpu("Features\t: fp asimd sve\nCPU part\t: 0xd0c\n")
    assert flags == {"fp", "asimd", "sve"} and choose_precision(Hardware(model, flags))[0] == "float32"


def test_flag_override_decides_as_another_cpu_would(monkeypatch):
    monkeypatch.setenv("KERAS_SNS_CPU_FLAGS", "avx avx2")
    hw = hardware_description()
    assert hw.cpu_flags == {"avx", "avx2"}
    if not hw.gpus:  # this machine has no GPU: the CPU decides
        assert resolve_precision("auto")[0] == "float32"
    monkeypatch.setenv("KERAS_SNS_CPU_FLAGS", "avx2 avx512_bf16")
    if not hw.gpus:
        assert resolve_precision("auto")[0] == "mixed_bfloat16"


def test_explicit_precision_is_kept_and_bad_values_are_refused():
    assert resolve_precision("float32", Hardware("x", AMX)) == ("float32",
                                                                "requested (--precision float32)")
    assert resolve_precision("auto", Hardware("x", AMX))[0] == "mixed_bfloat16"
    with pytest.raises(ValueError, match=r"Expected precision in \['auto', 'float32'.*"
                                         r"Received: precision='float64'"):
        resolve_precision("float64")
    assert TrainConfig().precision == "auto"
    with pytest.raises(ValueError, match="Received: precision='half'"):
        TrainConfig(precision="half")


def test_hardware_description_is_json_ready_and_shows_the_deciding_flags():
    hw = Hardware("AMD EPYC", AMX, (GPU("T4", (7, 5)),))
    record = json.loads(json.dumps(hw.to_dict()))
    assert record == {"cpu_model": "AMD EPYC", "cpu_flags": ["amx_bf16", "amx_tile", "avx2",
                                                              "avx512f"],
                      "gpus": [{"name": "T4", "compute_capability": "7.5"}]}


def test_a_run_records_the_choice_the_reason_and_the_cpu(tmp_path, monkeypatch):
    # Faked as the AVX2-only machine: auto must train in float32 and say why.
    import keras

    from keras_sns.training.runs import run_training

    monkeypatch.setenv("KERAS_SNS_CPU_FLAGS", "fpu avx avx2")
    out = tmp_path / "run"
    run_training(TrainConfig(method="vanilla", epochs=1, limit=64, eval_limit=32, batch_size=32,
                             eval_steps=1, out=str(out)), verbose=0)
    config = json.loads((out / "config.json").read_text())
    expected, reason = resolve_precision("auto")
    assert (config["precision"], config["precision_reason"]) == (expected, reason)
    assert config["precision_requested"] == "auto"
    assert config["hardware"]["cpu_model"] == read_cpu()[0]
    model = keras.models.load_model(out / "model.keras")
    assert model.get_layer("conv1").dtype_policy.name == expected


# ---------------------------------------------------------------------------
# Running an already trained model: its own precision where native, float32 elsewhere
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "saved, flags, policy",
    [
        ("mixed_bfloat16", AVX2_ONLY, "float32"),  # trained on the fast CPU, run on the slow
        ("mixed_bfloat16", AVX512_BF16, "mixed_bfloat16"),
        ("mixed_bfloat16", AMX, "mixed_bfloat16"),
        ("float32", AVX512_BF16, "float32"),  # never switched to half precision unasked
        ("float32", AVX2_ONLY, "float32"),
        ("mixed_float16", AVX512_BF16, "float32"),  # float16 is not this CPU's fast type
    ],
)
def test_a_saved_model_keeps_its_precision_only_where_it_is_native(saved, flags, policy):
    chosen, reason = saved_model_precision(saved, hardware=Hardware("AMD EPYC", flags))
    assert chosen == policy and reason
    assert saved_model_precision(saved, "mixed_bfloat16", Hardware("x", AVX2_ONLY))[0] == \
        "mixed_bfloat16"  # an explicit choice is obeyed


def _bf16_small_cnn():
    import keras

    from keras_sns import models

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        return models.build("small_cnn")
    finally:
        keras.config.set_dtype_policy(previous)


def test_with_precision_converts_the_arithmetic_and_keeps_the_weights():
    import numpy as np

    from keras_sns import models

    bf16 = _bf16_small_cnn()
    assert models.model_precision(bf16) == "mixed_bfloat16"
    f32 = models.with_precision(bf16, "float32")
    assert models.model_precision(f32) == "float32"
    assert all(layer.dtype_policy.name == "float32" for layer in f32.layers)
    for a, b in zip(bf16.get_weights(), f32.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype("float32")
    lo, hi = np.asarray(bf16(x)), np.asarray(f32(x))
    # The same function up to bfloat16 rounding (8 bits of mantissa).
    np.testing.assert_allclose(lo, hi, atol=0.05 * np.abs(hi).max() + 1e-3)
    assert models.with_precision(f32, "float32") is f32
    back = models.with_precision(f32, "mixed_bfloat16")
    policies = {layer.name: layer.dtype_policy.name for layer in back.layers}
    assert policies["conv1"] == "mixed_bfloat16" and policies["logits"] == "float32"
    with pytest.raises(ValueError, match="Expected policy"):
        models.with_precision(f32, "float8")


def test_cli_runs_a_bfloat16_model_in_float32_on_an_avx2_cpu(tmp_path, monkeypatch, caplog):
    import logging

    from click.testing import CliRunner

    from keras_sns import precision
    from keras_sns.cli import main

    path = tmp_path / "bf16.keras"
    _bf16_small_cnn().save(path)
    monkeypatch.setattr(precision, "hardware_description",
                        lambda: Hardware("AMD EPYC 7B12", AVX2_ONLY))
    with caplog.at_level(logging.INFO, logger="keras_sns.models"):
        result = CliRunner().invoke(main, ["evaluate", "--model", str(path), "--attacks", "fgsm",
                                           "--limit", "16", "--eps", "0.1",
                                           "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert any("in float32" in r.getMessage() and "does not run natively" in r.getMessage()
               for r in caplog.records)
