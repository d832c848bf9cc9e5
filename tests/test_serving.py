"""The sensitivity-report service, over real HTTP to a uvicorn server on a free port."""

import inspect
import json
import logging
import os
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from keras_sns import attacks, export
from keras_sns import neurons as sensitivity
from serving import ServiceSettings, create_app, run
from serving.config import DEFAULT_HOST

EPS, STEPS = 0.1, 3
SETTINGS = ServiceSettings(
    max_body_bytes=1024 * 1024,
    max_images=16,
    max_sensitivity_images=8,
    max_attack_steps=5,
    poll_interval_s=0.2,
)


@pytest.fixture(scope="module")
def data(fmnist_train_1000):
    return fmnist_train_1000


@pytest.fixture(scope="module")
def trained(small_cnn_one_epoch):
    """small_cnn after one epoch on 1000 Fashion-MNIST images (tests/conftest.py)."""
    return small_cnn_one_epoch


@pytest.fixture(scope="module")
def base(trained, tmp_path_factory):
    """The base directory: good, corrupt, half-written and over-the-limit exports."""
    base = tmp_path_factory.mktemp("exports")
    export.export(trained, base, "fmnist", label="stable", eps=EPS, steps=STEPS, seed=0)
    # Version 2 of fmnist is corrupt: the service must keep serving version 1.
    (base / "fmnist" / "2").mkdir()
    (base / "fmnist" / "2" / "saved_model.pb").write_bytes(b"not a protobuf")
    # Only used by the sensitivity test, so that its attack stream starts fresh.
    export.export(trained, base, "report", eps=EPS, steps=STEPS, seed=0)
    # A model with nothing loadable: a half-written version (variables, no graph).
    (base / "half" / "1" / "variables").mkdir(parents=True)
    # A model whose attack runs more steps than the server allows.
    export.export(trained, base, "heavy", eps=EPS, steps=SETTINGS.max_attack_steps + 1)
    export.export(trained, base, "grow", eps=EPS, steps=1)
    return base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(base):
    """A uvicorn server in a thread on a free loopback port; yields its root URL."""
    port = _free_port()
    config = uvicorn.Config(create_app(base, settings=SETTINGS), host="127.0.0.1", port=port,
                            log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def _post(client, path, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={"content-type": "application/json"})


# ---------------------------------------------------------------------- good requests


def test_healthz_docs_and_loopback_default(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/models/{name}:predict" in paths
    assert "/v1/models/{name}/sensitivity" in paths
    assert DEFAULT_HOST == "127.0.0.1"
    assert inspect.signature(run).parameters["host"].default == "127.0.0.1"


def test_models_lists_versions_and_skips_broken_ones(client, base):
    listing = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(listing) == {"fmnist", "report", "half", "heavy", "grow"}
    fmnist = listing["fmnist"]
    assert fmnist["versions"] == [1, 2]
    assert fmnist["serving_version"] == 1  # the corrupt version 2 is skipped
    assert "tf.saved_model.load failed" in fmnist["failed_versions"]["2"]
    assert fmnist["labels"] == {"stable": 1}
    assert fmnist["input_shape"] == [28, 28, 1]
    assert fmnist["sensitivity"]["attack"]["steps"] == STEPS
    assert fmnist["sensitivity"]["layers"] == ["relu1", "relu2", "relu3", "relu4", "fc1_relu"]
    half = listing["half"]
    assert half["serving_version"] is None
    assert "no saved_model.pb" in half["failed_versions"]["1"]

    status = client.get("/v1/models/fmnist").json()["model_version_status"]
    assert status[0]["version"] == "2" and status[0]["status"]["error_code"] == "UNKNOWN"
    assert status[1] == {"version": "1", "state": "AVAILABLE",
                         "status": {"error_code": "OK", "error_message": ""}}


@pytest.mark.parametrize(
    "path", ["/v1/models/fmnist:predict", "/v1/models/fmnist/versions/1:predict",
             "/v1/models/fmnist/labels/stable:predict"]
)
def test_predict_row_format_matches_the_model(client, trained, data, path):
    x = data[0][:5]
    r = _post(client, path, {"instances": x.tolist()})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 5 and set(predictions[0]) == {"logits", "probabilities", "classes"}
    logits = trained(x, training=False).numpy()
    np.testing.assert_allclose([p["logits"] for p in predictions], logits, rtol=1e-5, atol=1e-5)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose([p["probabilities"] for p in predictions], probs, atol=1e-5)
    assert [p["classes"] for p in predictions] == logits.argmax(-1).tolist()


@pytest.mark.parametrize("wrap", [True, False])
def test_predict_columnar_format(client, trained, data, wrap):
    x = data[0][5:8]
    inputs = {"images": x.tolist()} if wrap else x.tolist()
    r = _post(client, "/v1/models/fmnist:predict",
              {"inputs": inputs, "signature_name": "serving_default"})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    np.testing.assert_allclose(outputs["logits"], trained(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)
    assert len(outputs["classes"]) == 3


def test_predict_instances_as_named_objects(client, trained, data):
    x = data[0][:2]
    r = _post(client, "/v1/models/fmnist:predict", {"instances": [{"images": i} for i in x.tolist()]})
    assert r.status_code == 200, r.text
    assert [p["classes"] for p in r.json()["predictions"]] == \
        trained(x, training=False).numpy().argmax(-1).tolist()


def test_sensitivity_report_matches_the_library(client, trained, data):
    x, y = data[0][:6], data[1][:6]
    r = _post(client, "/v1/models/report/sensitivity", {"images": x.tolist(), "labels": y.tolist()})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["model"] == "report" and report["version"] == 1
    assert report["attack"]["name"] == "pgd_linf" and report["attack"]["eps"] == EPS

    # The library's own computation: same attack, same seed, same (fresh) random stream.
    x_adv = attacks.get("pgd_linf", eps=EPS, steps=STEPS, seed=0)(trained, x, y)
    layers = list(report["layers"])
    assert layers == ["relu1", "relu2", "relu3", "relu4", "fc1_relu"]
    acts = sensitivity.probe(trained, layers)
    clean, adv = acts(x), acts(x_adv)
    per_image = []
    for name in layers:
        a, b = clean[name].numpy(), adv[name].numpy()
        sigma = sensitivity.neuron_sensitivity(a, b)
        got = report["layers"][name]
        np.testing.assert_allclose(got["mean_sensitivity"], sigma.mean(), rtol=1e-4)
        assert got["top_k_channels"] == sensitivity.sensitive_neurons(sigma, 0.1).tolist()
        np.testing.assert_allclose(got["top_k_sensitivity"], sigma[got["top_k_channels"]], rtol=1e-4)
        per_image.append(np.abs(a - b).reshape(len(x), -1).mean(axis=1))
    images = report["images"]
    assert [i["label"] for i in images] == y.tolist()
    assert [i["clean_class"] for i in images] == clean["logits"].numpy().argmax(-1).tolist()
    assert [i["adversarial_class"] for i in images] == adv["logits"].numpy().argmax(-1).tolist()
    assert [i["flipped"] for i in images] == [i["clean_class"] != i["adversarial_class"] for i in images]
    np.testing.assert_allclose([i["sensitivity_score"] for i in images], np.mean(per_image, axis=0),
                               rtol=1e-4)


def test_sensitivity_without_labels_uses_the_predictions(client, trained, data):
    x = data[0][:3]
    r = _post(client, "/v1/models/fmnist/versions/1/sensitivity", {"images": x.tolist()})
    assert r.status_code == 200, r.text
    predicted = trained(x, training=False).numpy().argmax(-1).tolist()
    assert [i["label"] for i in r.json()["images"]] == predicted
    assert [i["clean_class"] for i in r.json()["images"]] == predicted


def test_a_new_version_is_picked_up_and_a_half_written_one_skipped(client, base, trained, caplog):
    caplog.set_level(logging.ERROR, logger="serving.repository")
    # Half-written: the directory exists, its graph does not (yet).
    (base / "grow" / "3" / "variables").mkdir(parents=True)
    export.export(trained, base, "grow", version=2, eps=EPS, steps=1)
    deadline = time.monotonic() + 30
    while True:
        grow = next(m for m in client.get("/v1/models").json()["models"] if m["name"] == "grow")
        if grow["serving_version"] == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert grow["versions"] == [1, 2, 3]
    assert grow["serving_version"] == 2
    assert "no saved_model.pb" in grow["failed_versions"]["3"]
    assert any("Skipping model grow version 3" in rec.getMessage() for rec in caplog.records)
    r = _post(client, "/v1/models/grow:predict", {"instances": [np.zeros((28, 28, 1)).tolist()]})
    assert r.status_code == 200
    shutil.rmtree(base / "grow" / "3")


def test_metrics(client, data):
    _post(client, "/v1/models/fmnist:predict", {"instances": data[0][:1].tolist()})
    _post(client, "/v1/models/fmnist:predict", b"{")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    route = ("route", "/v1/models/{name}:predict")
    for status in ("200", "400"):
        key = ("keras_sns_http_requests_total", (("method", "POST"), route, ("status", status)))
        assert samples[key] >= 1
    assert samples[("keras_sns_http_request_duration_seconds_count", (route,))] >= 2
    assert samples[("keras_sns_images_total", (("endpoint", "predict"),))] >= 1
    assert samples[("keras_sns_model_versions_loaded", ())] >= 4
    assert samples[("keras_sns_model_load_failures_total", ())] >= 2  # fmnist/2 and half/1


# ---------------------------------------------------------------------- bad requests


def _image(value=0.5):
    return np.full((28, 28, 1), value).tolist()


_NAN_IMAGE = json.dumps({"instances": [_image()]}).replace("0.5", "NaN", 1).encode()
_INF_IMAGE = json.dumps({"instances": [_image()]}).replace("0.5", "Infinity", 1).encode()

BAD_PREDICTIONS = [
    # (id, path, body, status, part of the error message)
    ("malformed-json", "/v1/models/fmnist:predict", b'{"instances": [', 400, "Malformed JSON"),
    ("not-utf8", "/v1/models/fmnist:predict", b'{"instances": "\xff"}', 400, "Malformed JSON"),
    ("empty-body", "/v1/models/fmnist:predict", b"", 400, "empty body"),
    ("not-an-object", "/v1/models/fmnist:predict", [1, 2], 400, "JSON object"),
    ("unknown-field", "/v1/models/fmnist:predict", {"instances": [_image()], "foo": 1}, 400, "foo"),
    ("no-input", "/v1/models/fmnist:predict", {}, 400, "exactly one of"),
    ("both-inputs", "/v1/models/fmnist:predict", {"instances": [_image()], "inputs": [_image()]},
     400, "exactly one of"),
    ("other-signature", "/v1/models/fmnist:predict",
     {"instances": [_image()], "signature_name": "sensitivity"}, 400, "signature_name"),
    ("wrong-shape", "/v1/models/fmnist:predict", {"instances": [np.zeros((28, 28)).tolist()]},
     400, "shape [batch, 28, 28, 1]"),
    ("wrong-size", "/v1/models/fmnist:predict", {"instances": [np.zeros((32, 32, 1)).tolist()]},
     400, "Received: shape [1, 32, 32, 1]"),
    ("ragged", "/v1/models/fmnist:predict", {"instances": [_image(), [[0.5]]]}, 400, "unequal lengths"),
    ("scalar", "/v1/models/fmnist:predict", {"instances": 0.5}, 400, "list of images"),
    ("strings", "/v1/models/fmnist:predict", {"instances": [[["a"] * 1] * 28] * 1}, 400, "numbers"),
    ("booleans", "/v1/models/fmnist:predict", {"inputs": [np.full((28, 28, 1), True).tolist()]},
     400, "booleans"),
    ("nulls", "/v1/models/fmnist:predict", {"instances": [[[None]] * 28]}, 400, "numbers"),
    ("wrong-input-name", "/v1/models/fmnist:predict", {"inputs": {"pixels": [_image()]}}, 400, "'images'"),
    ("above-one", "/v1/models/fmnist:predict", {"instances": [_image(255.0)]}, 400, "[0, 1]"),
    ("negative", "/v1/models/fmnist:predict", {"instances": [_image(-0.1)]}, 400, "[0, 1]"),
    ("nan", "/v1/models/fmnist:predict", _NAN_IMAGE, 400, "NaN"),
    ("infinity", "/v1/models/fmnist:predict", _INF_IMAGE, 400, "NaN or infinity"),
    ("no-images", "/v1/models/fmnist:predict", {"instances": []}, 400, "at least one image"),
    ("too-many-images", "/v1/models/fmnist:predict",
     {"instances": [_image()] * (SETTINGS.max_images + 1)}, 413, "Too many images"),
    ("body-too-large", "/v1/models/fmnist:predict",
     b'{"instances": [' + b"0.5, " * (SETTINGS.max_body_bytes // 5) + b"0.5]}", 413, "size limit"),
    ("unknown-model", "/v1/models/nope:predict", {"instances": [_image()]}, 404, "'nope' not found"),
    ("unknown-version", "/v1/models/fmnist/versions/9:predict", {"instances": [_image()]},
     404, "Version 9"),
    ("corrupt-version", "/v1/models/fmnist/versions/2:predict", {"instances": [_image()]},
     404, "cannot be loaded"),
    ("bad-version", "/v1/models/fmnist/versions/x1:predict", {"instances": [_image()]},
     400, "version number"),
    ("unknown-label", "/v1/models/fmnist/labels/canary:predict", {"instances": [_image()]},
     404, "Label 'canary'"),
    ("no-good-version", "/v1/models/half:predict", {"instances": [_image()]}, 404, "no loadable version"),
    ("slash-in-name", "/v1/models/a%2Fb:predict", {"instances": [_image()]}, 400, "path separators"),
    ("dot-dot-in-name", "/v1/models/..%2F..%2Fetc:predict", {"instances": [_image()]},
     400, "path separators"),
    ("dot-dot-name", "/v1/models/..:predict", {"instances": [_image()]}, 400, "path separators"),
    ("backslash-in-name", "/v1/models/a%5Cb:predict", {"instances": [_image()]}, 400, "path separators"),
    ("bad-char-in-name", "/v1/models/a%20b:predict", {"instances": [_image()]}, 400, "model name"),
    # /sensitivity
    ("sens-no-images", "/v1/models/fmnist/sensitivity", {"labels": [1]}, 400, "images"),
    ("sens-too-many", "/v1/models/fmnist/sensitivity",
     {"images": [_image()] * (SETTINGS.max_sensitivity_images + 1)}, 413, "Too many images"),
    ("sens-label-range", "/v1/models/fmnist/sensitivity", {"images": [_image()], "labels": [10]},
     400, "labels[0]=10"),
    ("sens-label-bool", "/v1/models/fmnist/sensitivity", {"images": [_image()], "labels": [True]},
     400, "labels[0]=True"),
    ("sens-label-float", "/v1/models/fmnist/sensitivity", {"images": [_image()], "labels": [1.5]},
     400, "labels[0]=1.5"),
    ("sens-label-count", "/v1/models/fmnist/sensitivity", {"images": [_image()], "labels": [1, 2]},
     400, "Expected 1 labels"),
    ("sens-labels-not-list", "/v1/models/fmnist/sensitivity", {"images": [_image()], "labels": 3},
     400, "labels"),
    ("sens-attack-param", "/v1/models/fmnist/sensitivity", {"images": [_image()], "eps": 0.9},
     400, "eps"),
    ("sens-over-step-limit", "/v1/models/heavy/sensitivity", {"images": [_image()]},
     422, "max_attack_steps=5"),
    ("sens-path-separator", "/v1/models/a%2F..%2Fb/sensitivity", {"images": [_image()]},
     400, "path separators"),
    ("sens-unknown-model", "/v1/models/nope/sensitivity", {"images": [_image()]}, 404, "not found"),
    ("sens-range", "/v1/models/fmnist/sensitivity", {"images": [_image(2.0)]}, 400, "[0, 1]"),
]


@pytest.mark.parametrize("case", BAD_PREDICTIONS, ids=[c[0] for c in BAD_PREDICTIONS])
def test_bad_input_gets_a_4xx_json_error(client, case):
    _, path, body, status, message = case
    r = _post(client, path, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert isinstance(error, str) and message in error


def test_unknown_routes_and_methods_answer_json_errors(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and "error" in r.json()
    r = client.delete("/v1/models")
    assert r.status_code == 405 and "error" in r.json()


# ---------------------------------------------------------------------- load


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc")
def test_load_8_clients_x_50_requests(server, data):
    body = json.dumps({"instances": data[0][:2].tolist()}).encode()
    headers = {"content-type": "application/json"}

    def hammer(n, failures):
        with httpx.Client(base_url=server, timeout=60) as c:
            for _ in range(n):
                r = c.post("/v1/models/fmnist:predict", content=body, headers=headers)
                if r.status_code != 200 or len(r.json()["predictions"]) != 2:
                    failures.append(r.status_code)

    def run_clients(n):
        failures = []
        threads = [threading.Thread(target=hammer, args=(n, failures)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return failures

    assert run_clients(3) == []  # warm-up: every lazily opened descriptor exists now
    before = _open_fds()
    assert run_clients(50) == []
    # Closed connections are released as the server notices them: give it a moment.
    deadline = time.monotonic() + 10
    while _open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_fds() <= before
