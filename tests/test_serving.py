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
from _serving_http import (
    json_error,
    raw_request,
    read_response,
    request_bytes,
    serve_in_thread,
)
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
)

import serving.app
import serving.repository
from keras_sns import attacks, export, neurons
from serving import ServiceSettings, run
from serving.config import DEFAULT_HOST

EPS, STEPS = 0.1, 3
SETTINGS = ServiceSettings(
    max_body_bytes=1024 * 1024,
    max_buffered_bytes=4 * 1024 * 1024,
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
    # A graph without its variables: TensorFlow's error names the absolute path.
    (base / "pathleak" / "1").mkdir(parents=True)
    shutil.copy(base / "fmnist" / "1" / "saved_model.pb", base / "pathleak" / "1")
    return base


@pytest.fixture(scope="module")
def server(base):
    """A uvicorn server in a thread on a free loopback port; yields its root URL."""
    with serve_in_thread(base, SETTINGS) as (url, _app):
        yield url


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
    assert set(listing) == {"fmnist", "report", "half", "heavy", "grow", "pathleak"}
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
    acts = neurons.probe(trained, layers)
    clean, adv = acts(x), acts(x_adv)
    per_image = []
    for name in layers:
        a, b = clean[name].numpy(), adv[name].numpy()
        sigma = neurons.neuron_sensitivity(a, b)
        got = report["layers"][name]
        np.testing.assert_allclose(got["mean_sensitivity"], sigma.mean(), rtol=1e-4)
        assert got["top_k_channels"] == neurons.sensitive_neurons(sigma, 0.1).tolist()
        np.testing.assert_allclose(got["top_k_sensitivity"], sigma[got["top_k_channels"]], rtol=1e-4)
        per_image.append(np.abs(a - b).reshape(len(x), -1).mean(axis=1))
    images = report["images"]
    assert [i["label"] for i in images] == y.tolist()
    assert [i["clean_class"] for i in images] == clean["logits"].numpy().argmax(-1).tolist()
    assert [i["adversarial_class"] for i in images] == adv["logits"].numpy().argmax(-1).tolist()
    assert [i["flipped"] for i in images] == [i["clean_class"] != i["adversarial_class"] for i in images]
    np.testing.assert_allclose([i["sensitivity_score"] for i in images], np.mean(per_image, axis=0),
                               rtol=1e-4)


def test_predict_serves_the_sensitivity_signature_by_name(client, data):
    # As TF Serving does: ":predict" with signature_name runs that signature (columnar
    # format). The graph is the /sensitivity report's; the PGD random start moves on
    # between calls, so the sensitivities agree loosely and the clean side exactly.
    x, y = data[0][:4], data[1][:4]
    r = _post(client, "/v1/models/report:predict",
              {"signature_name": "sensitivity", "inputs": {"images": x.tolist(), "labels": y.tolist()}})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    report = _post(client, "/v1/models/report/sensitivity",
                   {"images": x.tolist(), "labels": y.tolist()}).json()
    assert outputs["clean_classes"] == [i["clean_class"] for i in report["images"]]
    assert all(isinstance(c, int) for c in outputs["adversarial_classes"])
    np.testing.assert_allclose(outputs["sensitivity_score"],
                               [i["sensitivity_score"] for i in report["images"]], rtol=0.2)
    for layer, got in report["layers"].items():
        values = outputs[f"{layer}_top_k_sensitivity"]
        assert len(outputs[f"{layer}_top_k_channels"]) == len(got["top_k_channels"]) == len(values)
        assert values == sorted(values, reverse=True)
        np.testing.assert_allclose(outputs[f"{layer}_mean_sensitivity"], got["mean_sensitivity"],
                                   rtol=0.2)


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


def _image_with(value):
    image = _image()
    image[3][4][0] = value
    return image


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
    ("unknown-signature", "/v1/models/fmnist:predict",
     {"inputs": [_image()], "signature_name": "serving_other"}, 404, "signature_name"),
    ("sensitivity-without-labels", "/v1/models/fmnist:predict",
     {"inputs": {"images": [_image()]}, "signature_name": "sensitivity"}, 400, "'labels'"),
    ("sensitivity-too-many", "/v1/models/fmnist:predict",
     {"inputs": {"images": [_image()] * (SETTINGS.max_sensitivity_images + 1),
                 "labels": [0] * (SETTINGS.max_sensitivity_images + 1)},
      "signature_name": "sensitivity"}, 413, "Too many images"),
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
    ("sens-unknown-label", "/v1/models/fmnist/labels/nope/sensitivity", {"images": [_image()]},
     404, "Label 'nope'"),
    # Point 1 of the abuse issue: no 5xx for absurd version segments.
    ("long-version", "/v1/models/fmnist/versions/" + "9" * 5000 + ":predict", {"instances": [_image()]},
     400, "version number"),
    ("version-zero", "/v1/models/fmnist/versions/0:predict", {"instances": [_image()]},
     400, "version number"),
    ("version-over-int64", "/v1/models/fmnist/versions/9999999999999999999:predict",
     {"instances": [_image()]}, 400, "version number"),
    ("unicode-digit-version", "/v1/models/fmnist/versions/%C2%B2:predict", {"instances": [_image()]},
     400, "version number"),
    # Point 5: booleans among numbers, values just outside [0, 1] before the float32 cast.
    ("boolean-among-floats", "/v1/models/fmnist:predict", {"instances": [_image_with(True)]},
     400, "boolean"),
    ("just-above-one", "/v1/models/fmnist:predict", {"instances": [_image_with(1.00000001)]},
     400, "max=1.00000001"),
    ("just-below-zero", "/v1/models/fmnist:predict", {"instances": [_image_with(-1e-12)]},
     400, "[0, 1]"),
    ("integer-too-long", "/v1/models/fmnist:predict", b'{"instances": [' + b"1" * 5000 + b"]}",
     400, "Malformed JSON"),
    # Point 2: the body's structure is checked against the image limit while it is read.
    ("bracket-spam", "/v1/models/fmnist:predict", b'{"instances": [' + b"[]," * 300_000 + b"[]]}",
     413, "more JSON arrays than 16 images of shape [28, 28, 1]"),
    ("comma-spam", "/v1/models/fmnist:predict", b'{"instances": [0' + b",0" * 300_000 + b"]}",
     413, "more JSON values"),
    ("object-spam", "/v1/models/fmnist:predict", b'{"instances": [' + b"{}," * 1000 + b"{}]}",
     413, "more JSON objects"),
    ("deep-json", "/v1/models/fmnist:predict", b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     400, "nested too deeply"),
    # :classify
    ("classify-no-examples", "/v1/models/fmnist:classify", {"instances": [_image()]}, 400, "instances"),
    ("classify-not-a-list", "/v1/models/fmnist:classify", {"examples": 3}, 400, "'examples'"),
    ("classify-other-feature", "/v1/models/fmnist:classify", {"examples": [{"pixels": _image()}]},
     400, "'images'"),
    ("classify-flat-wrong-length", "/v1/models/fmnist:classify",
     {"examples": [{"images": [0.5] * 700}]}, 400, "shape [batch, 28, 28, 1]"),
    ("classify-signature", "/v1/models/fmnist:classify",
     {"signature_name": "sensitivity", "examples": [{"images": _image()}]}, 400, "signature_name"),
    ("classify-too-many", "/v1/models/fmnist:classify",
     {"examples": [{"images": _image()}] * (SETTINGS.max_images + 1)}, 413, "Too many images"),
    ("classify-unknown-label", "/v1/models/fmnist/labels/nope:classify",
     {"examples": [{"images": _image()}]}, 404, "Label 'nope'"),
    ("regress", "/v1/models/fmnist:regress", {"examples": [{"images": _image()}]}, 404, "Regression"),
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


# ---------------------------------------------------------------------- the HTTP surface


def _series(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_a_non_json_content_type_is_a_415(client, content_type):
    body = json.dumps({"instances": [_image()]}).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    r = client.post("/v1/models/fmnist:predict", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert "Content-Type: application/json" in r.json()["error"]
    r = client.post("/v1/models/fmnist:predict", content=body,
                    headers={"content-type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host,status", [("evil.example", 400), ("127.0.0.1.evil.example:80", 400),
                                         ("localhost:8500", 200), ("[::1]:8500", 200),
                                         ("LOCALHOST", 200)])
def test_only_trusted_host_headers_are_answered(client, host, status):
    r = client.get("/v1/models", headers={"host": host})
    assert r.status_code == status, r.text
    if status == 400:
        assert "Untrusted Host header" in r.json()["error"]


def test_healthz_answers_any_host(client):
    # Liveness probes send the pod's address; /healthz computes and reveals nothing.
    assert client.get("/healthz", headers={"host": "10.1.2.3:8500"}).json() == {"status": "ok"}


def test_no_host_header_is_refused(server):
    # HTTP/1.0 lets a client leave Host out; it is refused like a foreign one.
    response = raw_request(server, b"GET /v1/models HTTP/1.0\r\n\r\n")
    assert response[0] == 400 and "no Host header" in json_error(response)


def test_responses_hold_no_absolute_paths(client, base):
    text = client.get("/v1/models").text
    assert str(base) not in text and str(base.resolve()) not in text and "/tmp" not in text
    listing = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert "base_dir" not in client.get("/v1/models").json()
    leak = listing["pathleak"]["failed_versions"]["1"]
    assert "tf.saved_model.load failed" in leak and not os.path.isabs(leak.split()[-1])
    r = _post(client, "/v1/models/pathleak/versions/1:predict", {"instances": [_image()]})
    assert r.status_code == 404 and str(base) not in r.text and "/tmp" not in r.text
    for path in ("/v1/models/pathleak", "/v1/models/pathleak/versions/1"):
        assert str(base) not in client.get(path).text


def test_invented_methods_share_one_metrics_label(client):
    def invent(i):
        r = client.request(f"FOO{i}", "/v1/models/fmnist:predict")
        assert r.status_code == 405 and "error" in r.json()
        r = client.request(f"BAR{i}", f"/nowhere/{i}")
        assert r.status_code == 404

    def other(series):
        return sum(v for (name, labels), v in series.items()
                   if name == "keras_sns_http_requests_total" and ("method", "OTHER") in labels)

    # The first invented method on each route and /metrics itself create their series
    # (whichever tests ran before in this process); from then on, no new ones.
    invent(-1)
    client.get("/metrics")
    before = _series(client.get("/metrics").text)
    for i in range(40):
        invent(i)
    text = client.get("/metrics").text
    assert "FOO" not in text and "BAR" not in text
    after = _series(text)
    assert set(after) == set(before), set(after) ^ set(before)
    assert other(after) - other(before) == 80


def test_docs_work_offline(client):
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200
        html = r.text
        assert "cdn" not in html.lower() and "https://" not in html.replace("https://fastapi", "")
        assets = [a for a in html.split('"') if a.startswith("/static-offline-docs/")]
        assert assets, html
        for asset in assets:
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 1000, asset


# ---------------------------------------------------------------------- 5xx and no-answer paths


def test_a_body_shorter_than_its_content_length_is_no_error(server, client, caplog):
    caplog.set_level(logging.DEBUG)
    body = json.dumps({"instances": [_image()]}).encode()
    request = request_bytes("POST", "/v1/models/fmnist:predict", body[:100], content_length=len(body))
    assert raw_request(server, request, shut_write=True) is None  # nobody is left to answer
    time.sleep(0.3)
    series = _series(client.get("/metrics").text)
    route = ("route", "/v1/models/{name}:predict")
    assert series.get(("keras_sns_http_requests_total", (("method", "POST"), route, ("status", "500")))) is None
    assert series[("keras_sns_http_requests_total", (("method", "POST"), route, ("status", "499")))] >= 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert client.get("/healthz").status_code == 200


def test_invalid_http_gets_a_json_400(server):
    for request, message in [
        (b"P(ST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "illegal request line"),
        (b"POST /v1/models/fmnist:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
         + b"9" * 5000 + b"\r\n\r\n", "Content-Length"),
    ]:
        response = raw_request(server, request)
        assert response is not None and response[0] == 400
        assert message in json_error(response)
    # Headers over max_header_bytes (16 KiB), arriving in pieces as slow clients send them.
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20_000)
        time.sleep(0.1)
        try:
            sock.sendall(b"a" * 100 + b"\r\n\r\n")
        except (ConnectionResetError, BrokenPipeError):
            pass
        response = read_response(sock)
        assert response[0] == 400 and "Invalid HTTP request" in json_error(response)


# ---------------------------------------------------------------------- TF Serving parity


def test_version_and_label_status_parse_as_get_model_status_response(client):
    for path, version in [("/v1/models/fmnist/versions/1", 1), ("/v1/models/fmnist/labels/stable", 1),
                          ("/v1/models/fmnist/versions/2", 2)]:
        r = client.get(path)
        assert r.status_code == 200, r.text
        status = json_format.ParseDict(r.json(), get_model_status_pb2.GetModelStatusResponse())
        assert [s.version for s in status.model_version_status] == [version]
    ok = json_format.ParseDict(client.get("/v1/models/fmnist/versions/1").json(),
                               get_model_status_pb2.GetModelStatusResponse())
    assert ok.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    bad = json_format.ParseDict(client.get("/v1/models/fmnist/versions/2").json(),
                                get_model_status_pb2.GetModelStatusResponse())
    assert bad.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.END
    assert "tf.saved_model.load failed" in bad.model_version_status[0].status.error_message
    whole = json_format.ParseDict(client.get("/v1/models/fmnist").json(),
                                  get_model_status_pb2.GetModelStatusResponse())
    assert [s.version for s in whole.model_version_status] == [2, 1]
    assert client.get("/v1/models/fmnist/versions/7").status_code == 404
    assert client.get("/v1/models/fmnist/labels/canary").status_code == 404


@pytest.mark.parametrize("path", ["/v1/models/fmnist/metadata", "/v1/models/fmnist/versions/1/metadata",
                                  "/v1/models/fmnist/labels/stable/metadata"])
def test_metadata_parses_as_signature_def_map(client, path):
    r = client.get(path)
    assert r.status_code == 200, r.text
    body = r.json()
    spec = json_format.ParseDict(body["model_spec"], model_pb2.ModelSpec())
    assert spec.name == "fmnist" and spec.version.value == 1
    signatures = json_format.ParseDict(body["metadata"]["signature_def"],
                                       get_model_metadata_pb2.SignatureDefMap()).signature_def
    assert {"serving_default", "sensitivity"} <= set(signatures)
    images = signatures["serving_default"].inputs["images"]
    assert images.dtype == 1  # DT_FLOAT
    assert [d.size for d in images.tensor_shape.dim] == [-1, 28, 28, 1]
    assert set(signatures["serving_default"].outputs) == {"logits", "probabilities", "classes"}
    assert set(signatures["sensitivity"].inputs) == {"images", "labels"}


@pytest.mark.parametrize("path", ["/v1/models/fmnist:classify", "/v1/models/fmnist/versions/1:classify",
                                  "/v1/models/fmnist/labels/stable:classify"])
def test_classify_parses_as_classification_result(client, trained, data, path):
    x = data[0][:3]
    examples = [{"images": x[0].tolist()}, {"images": x[1].ravel().tolist()},  # nested and flat
                {"images": x[2].tolist()}]
    r = _post(client, path, {"signature_name": "serving_default", "examples": examples})
    assert r.status_code == 200, r.text
    result = json_format.ParseDict(
        {"classifications": [{"classes": [{"label": label, "score": score} for label, score in row]}
                             for row in r.json()["result"]]},
        classification_pb2.ClassificationResult(),
    )
    logits = trained(x, training=False).numpy()
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for classification, expected in zip(result.classifications, probs):
        assert [c.label for c in classification.classes] == [str(i) for i in range(10)]
        np.testing.assert_allclose([c.score for c in classification.classes], expected, atol=1e-5)


# ---------------------------------------------------------------------- availability


@pytest.fixture(scope="module")
def own_base(base, tmp_path_factory):
    """A base directory of its own: model m (version 1, labelled stable)."""
    own = tmp_path_factory.mktemp("own")
    shutil.copytree(base / "fmnist" / "1", own / "m" / "1")
    export.merge_model_server_config(own, "m", 1, "stable")
    return own


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _listing(client, name="m"):
    return next(m for m in client.get("/v1/models").json()["models"] if m["name"] == name)


def test_models_config_nested_too_deep_keeps_the_last_good_labels(own_base, caplog):
    caplog.set_level(logging.ERROR, logger="serving.repository")
    config = own_base / export.CONFIG_FILENAME
    good = config.read_text()
    nested = ("custom_model_config { " + "[type.googleapis.com/google.protobuf.Any] { " * 3000
              + "}" * 3001)
    predict = {"instances": [_image()]}
    with serve_in_thread(own_base, SETTINGS) as (url, _), httpx.Client(base_url=url) as c:
        assert _post(c, "/v1/models/m/labels/stable:predict", predict).status_code == 200
        config.write_text(nested)
        _wait_for(lambda: _listing(c) is not None and c.get("/v1/models").json()["config_error"])
        assert "RecursionError" in c.get("/v1/models").json()["config_error"]
        for _ in range(10):  # several polls: every answer stays a 200
            assert _post(c, "/v1/models/m/labels/stable:predict", predict).status_code == 200
            time.sleep(0.05)
        config.write_text("this is { not a config")
        _wait_for(lambda: "not a ModelServerConfig" in (c.get("/v1/models").json()["config_error"] or ""))
        assert "/tmp" not in c.get("/v1/models").json()["config_error"]
        assert _listing(c)["labels"] == {"stable": 1}
        assert _post(c, "/v1/models/m/labels/stable:predict", predict).status_code == 200
        config.write_text(good)
        _wait_for(lambda: c.get("/v1/models").json()["config_error"] is None)
    # The error is logged once per change of the file, not once per poll.
    assert len([r for r in caplog.records if "Cannot read" in r.getMessage()]) == 2
    # A server started with the bad file comes up and serves.
    config.write_text(nested)
    try:
        with serve_in_thread(own_base, SETTINGS) as (url, _), httpx.Client(base_url=url) as c:
            assert c.get("/healthz").status_code == 200
            assert _post(c, "/v1/models/m:predict", predict).status_code == 200
            assert "RecursionError" in c.get("/v1/models").json()["config_error"]
    finally:
        config.write_text(good)


def test_a_new_version_loads_outside_the_lock(own_base, monkeypatch):
    real = serving.repository._load_version
    loading = threading.Event()

    def slow_load(name, version, path):
        if version == 2:
            loading.set()
            time.sleep(1.5)
        return real(name, version, path)

    monkeypatch.setattr(serving.repository, "_load_version", slow_load)
    with serve_in_thread(own_base, SETTINGS) as (url, _), httpx.Client(base_url=url) as c:
        shutil.copytree(own_base / "m" / "1", own_base / "m" / ".tmp-2")
        os.rename(own_base / "m" / ".tmp-2", own_base / "m" / "2")
        try:
            assert loading.wait(10)
            latencies = []
            while _listing(c)["serving_version"] != 2:
                start = time.perf_counter()
                r = _post(c, "/v1/models/m:predict", {"instances": [_image()]})
                latencies.append(time.perf_counter() - start)
                assert r.status_code == 200
                assert c.get("/v1/models/m/versions/1").json()["model_version_status"][0]["state"] \
                    == "AVAILABLE"
            # Under the lock the first prediction would wait out the 1.5 s load; outside it
            # none waits that long (1.0 s leaves room for a busy CPU: 0.52 s was seen with
            # the suite running on both cores).
            assert len(latencies) >= 5 and max(latencies) < 1.0, latencies
        finally:
            shutil.rmtree(own_base / "m" / "2")


def test_a_served_version_whose_files_vanished_is_shown(own_base):
    with serve_in_thread(own_base, SETTINGS) as (url, _), httpx.Client(base_url=url) as c:
        variables = own_base / "m" / "1" / "variables"
        shutil.move(variables, own_base / "variables.bak")
        try:
            _wait_for(lambda: _listing(c)["files_missing"])
            assert _listing(c)["files_missing"] == {"1": "variables/ is missing"}
            status = json_format.ParseDict(c.get("/v1/models/m/versions/1").json(),
                                           get_model_status_pb2.GetModelStatusResponse())
            assert status.model_version_status[0].status.error_code == 15  # DATA_LOSS
            assert "variables/ is missing" in status.model_version_status[0].status.error_message
            assert _post(c, "/v1/models/m:predict", {"instances": [_image()]}).status_code == 200
        finally:
            shutil.move(own_base / "variables.bak", variables)
        _wait_for(lambda: not _listing(c)["files_missing"])


# ---------------------------------------------------------------------- bounded work

LIMITS = ServiceSettings(
    max_body_bytes=1024 * 1024, max_buffered_bytes=1024 * 1024, max_images=16,
    max_sensitivity_images=8, max_attack_steps=5, poll_interval_s=0.5, report_workers=1,
    max_report_queue=1, header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_timeout_s=0.5,
    max_connections=8,
)


@pytest.fixture(scope="module")
def limited(own_base):
    """A server with tight limits and timeouts; yields its URL and app."""
    with serve_in_thread(own_base, LIMITS) as served:
        yield served


def _sensitivity_body(n=2):
    return json.dumps({"images": [_image()] * n}).encode()


REPORT_S = 2.0  # how long the slowed-down report below takes


def test_a_full_report_queue_answers_503_and_predictions_go_on(limited, monkeypatch):
    url, _ = limited
    real = serving.app._Service.sensitivity
    calls = []

    def slow(self, body, model):
        calls.append(time.monotonic())
        time.sleep(REPORT_S)
        return real(self, body, model)

    monkeypatch.setattr(serving.app._Service, "sensitivity", slow)
    results = {}

    def report(i):
        with httpx.Client(base_url=url, timeout=30) as c:
            results[i] = c.post("/v1/models/m/sensitivity", content=_sensitivity_body(),
                                headers={"content-type": "application/json"})

    threads = [threading.Thread(target=report, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.15)
    with httpx.Client(base_url=url, timeout=30) as c:
        start = time.perf_counter()
        r = _post(c, "/v1/models/m:predict", {"instances": [_image()]})
        predict_s = time.perf_counter() - start
    for t in threads:
        t.join()
    # Queued behind the running report, the prediction would wait out the rest of its
    # REPORT_S (over 1.5 s); in its own lane it is far below that, even on a busy CPU.
    assert r.status_code == 200 and predict_s < REPORT_S / 2, predict_s
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 200, 503], [r.text for r in results.values()]
    busy = next(r for r in results.values() if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "max_queue=1" in busy.json()["error"]


def test_a_queued_request_whose_client_left_is_not_run(limited, monkeypatch):
    url, app = limited
    real = serving.app._Service.sensitivity
    calls = []

    def slow(self, body, model):
        calls.append(1)
        time.sleep(1.0)
        return real(self, body, model)

    monkeypatch.setattr(serving.app._Service, "sensitivity", slow)
    lane_before = _series(httpx.get(f"{url}/metrics").text).get(
        ("keras_sns_model_calls_abandoned_total", (("lane", "sensitivity"),)), 0)
    first = threading.Thread(target=lambda: httpx.post(
        f"{url}/v1/models/m/sensitivity", content=_sensitivity_body(),
        headers={"content-type": "application/json"}, timeout=30))
    first.start()
    time.sleep(0.3)  # the first one runs; the next one queues, then its client leaves
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(request_bytes("POST", "/v1/models/m/sensitivity", _sensitivity_body()))
        time.sleep(0.2)
    first.join()
    time.sleep(0.3)
    assert len(calls) == 1
    after = _series(httpx.get(f"{url}/metrics").text)[
        ("keras_sns_model_calls_abandoned_total", (("lane", "sensitivity"),))]
    assert after == lane_before + 1


def test_header_body_and_keep_alive_timeouts(limited):
    url, app = limited
    port = int(url.rsplit(":", 1)[1])
    # Headers that never end: 408 once header_timeout_s is over, then closed.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        response = read_response(sock, timeout=5)
        assert response[0] == 408 and "header_timeout_s=0.5" in json_error(response)
        assert 0.4 < time.monotonic() - start < 3
        assert sock.recv(10) == b""
    # A connection that sends nothing at all.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        assert read_response(sock, timeout=5)[0] == 408
    # A body that stalls: 408 once body_timeout_s is over, then closed.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        body = json.dumps({"instances": [_image()]}).encode()
        sock.sendall(request_bytes("POST", "/v1/models/m:predict", body[:50], content_length=len(body)))
        response = read_response(sock, timeout=5)
        assert response[0] == 408 and "body_timeout_s=0.5" in json_error(response)
        assert sock.recv(10) == b""
    # An idle keep-alive connection is closed after keep_alive_timeout_s.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request_bytes("GET", "/healthz", content_type=None))
        assert read_response(sock)[0] == 200
        start = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(10) == b""
        assert time.monotonic() - start < 3
    series = _series(httpx.get(f"{url}/metrics").text)
    assert series[("keras_sns_refused_connections_total", (("reason", "header_timeout"),))] >= 2


def test_connections_over_the_cap_get_503(limited):
    url, _ = limited
    port = int(url.rsplit(":", 1)[1])
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMITS.max_connections)]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as extra:
            response = read_response(extra, timeout=5)
            assert response[0] == 503 and "max_connections=8" in json_error(response)
            assert response[1]["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_the_body_memory_pool_answers_503(limited):
    url, _ = limited
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"instances": [_image(0.12345678901234567)] * 16}).encode()  # ~290 KB
    assert len(body) < LIMITS.max_body_bytes < 6 * len(body)
    socks = []
    try:
        for _ in range(6):  # bodies held (incomplete) until the pool is full
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(request_bytes("POST", "/v1/models/m:predict", body[:-10],
                                       content_length=len(body)))
            socks.append(sock)
        answers = []
        for sock in socks:
            sock.settimeout(0.2)
            try:
                answers.append(read_response(sock, timeout=0.2))
            except socket.timeout:
                pass
        busy = [a for a in answers if a and a[0] == 503]
        assert busy and "max_buffered_bytes" in json_error(busy[0])
    finally:
        for sock in socks:
            sock.close()
