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
