"""The multi-model endpoint for real: SageMaker's LoadModel, ListModels, InvokeModel and
UnloadModel against `SAGEMAKER_MULTI_MODEL=true python -m dogbreed.serve` (MMS, Java,
workers) on a free port. Models are loaded from the store, `SAGEMAKER_BASE_DIR/models`."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from conftest import RunningServer
from test_serve import JPEG, _break_class_count, _break_missing_json, _break_weights, _test_images

MB = 2 ** 20

# Written into the memory-starved server's PYTHONPATH: in MMS workers only, loading a model
# from the folder named by DOGBREED_TEST_STARVED_MODEL runs with 20 MB of address space to
# spare, as a model too big for the machine would. Everything else runs as it is.
STARVING_SITECUSTOMIZE = '''
import os
import sys

if os.environ.get("DOGBREED_TEST_STARVED_MODEL") and "model_service_worker" in " ".join(sys.argv):
    import resource

    import psutil

    import dogbreed.serving.predictor as _predictor

    _load = _predictor.BreedClassifier.load.__func__

    def _starved_load(cls, model_dir, device="cpu", **options):
        if os.path.basename(os.path.normpath(str(model_dir))) == \\
                os.environ["DOGBREED_TEST_STARVED_MODEL"]:
            limit = psutil.Process().memory_info().vms + 20 * 2 ** 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        return _load(cls, model_dir, device, **options)

    _predictor.BreedClassifier.load = classmethod(_starved_load)
'''


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    base = tmp_path_factory.mktemp("multi_model")
    (base / "models").mkdir()
    running = RunningServer(base, SAGEMAKER_MULTI_MODEL="true",
                            SAGEMAKER_MODEL_SERVER_WORKERS="1").start()
    yield running
    assert running.stop() == 0


def _store(server: RunningServer) -> Path:
    return Path(server.env["SAGEMAKER_BASE_DIR"]) / "models"


def _model_in_store(server: RunningServer, trained_model: Path, name: str) -> Path:
    folder = _store(server) / name
    shutil.copytree(trained_model, folder)
    return folder


def _load(server: RunningServer, name: str, url) -> requests.Response:
    return requests.post(f"{server.url}/models", json={"model_name": name, "url": str(url)},
                         timeout=180)


def _invoke(server: RunningServer, name: str, body: bytes) -> requests.Response:
    return requests.post(f"{server.url}/models/{name}/invoke", data=body, headers=JPEG,
                         timeout=60)


def _loaded_models(server: RunningServer) -> set[str]:
    listed = requests.get(f"{server.url}/models", timeout=30)
    assert listed.status_code == 200
    return {model["modelName"] for model in listed.json()["models"]}


def _workers(server: RunningServer) -> list[psutil.Process]:
    """The server's running Python worker processes (each worker: a listener and the fork
    that holds the model); an exited one not yet reaped holds no memory and is left out."""
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and \
                    "model_service_worker" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def _workers_rss(server: RunningServer) -> int:
    return sum(process.memory_info().rss for process in _workers(server))


def _assert_refused(response: requests.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    message = response.json()["error"]
    assert reason in message
    assert "\n" not in message and "Traceback" not in message


def test_each_model_answers_with_its_own_labels(endpoint, trained_model, sample_data):
    dogs = _model_in_store(endpoint, trained_model, "dogs")
    others = _model_in_store(endpoint, trained_model, "others")
    description = json.loads((others / "model.json").read_text())
    description["class_names"] = [f"Other breed {i}"
                                  for i in range(len(description["class_names"]))]
    (others / "model.json").write_text(json.dumps(description))
    assert requests.get(f"{endpoint.url}/ping", timeout=10).status_code == 200  # none loaded
    for name, folder in (("dogs", dogs), ("others", others)):
        assert _load(endpoint, name, folder).status_code == 200
    assert {"dogs", "others"} <= _loaded_models(endpoint)
    body = _test_images(sample_data)[0].read_bytes()
    labels = {}
    for name in ("dogs", "others"):
        response = _invoke(endpoint, name, body)
        assert response.status_code == 200, response.text
        labels[name] = {p["label"] for p in response.json()["predictions"][0]}
    assert labels["dogs"] <= set(json.loads((dogs / "model.json").read_text())["class_names"])
    assert all(label.startswith("Other breed") for label in labels["others"])
    for name in ("dogs", "others"):
        assert requests.delete(f"{endpoint.url}/models/{name}", timeout=60).status_code == 200
    gone = _invoke(endpoint, "others", body)
    assert gone.status_code == 404 and list(gone.json()) == ["error"]
    again = requests.delete(f"{endpoint.url}/models/others", timeout=60)
    assert again.status_code == 404 and list(again.json()) == ["error"]


@pytest.mark.parametrize("breakage, reason", [
    (_break_missing_json, "model.json is missing"),
    (_break_weights, "is not a readable safetensors file"),
    (_break_class_count, "lists 4 classes but the weights' head has 5 outputs"),
])
def test_a_model_that_cannot_load_is_refused_with_its_reason(endpoint, trained_model, breakage,
                                                             reason):
    name = f"broken{breakage.__name__}"
    folder = _model_in_store(endpoint, trained_model, name)
    breakage(folder)
    workers_before = len(_workers(endpoint))
    response = _load(endpoint, name, folder)
    _assert_refused(response, 500, f"cannot load model '{name}': model_fn failed: ")
    assert reason in response.json()["error"]
    assert name not in _loaded_models(endpoint)
    assert requests.get(f"{endpoint.url}/models/{name}", timeout=30).status_code == 404
    assert len(_workers(endpoint)) == workers_before  # its worker is gone too


def test_a_corrected_model_loads_under_the_name_of_a_failed_one(endpoint, trained_model,
                                                                 sample_data):
    folder = _model_in_store(endpoint, trained_model, "corrected")
    (folder / "model.json").rename(folder / "model.json.away")
    assert _load(endpoint, "corrected", folder).status_code == 500
    (folder / "model.json.away").rename(folder / "model.json")
    loaded = _load(endpoint, "corrected", folder)
    assert loaded.status_code == 200, loaded.text
    response = _invoke(endpoint, "corrected", _test_images(sample_data)[0].read_bytes())
    assert response.status_code == 200
    assert requests.delete(f"{endpoint.url}/models/corrected", timeout=60).status_code == 200


def _outside_urls(store: Path, trained_model: Path) -> dict[str, str]:
    """Each names a valid model (or a system folder) that is not inside the store."""
    (store / "link_out").unlink(missing_ok=True)
    (store / "link_out").symlink_to(trained_model)
    return {
        "system folder": "/etc",
        "model outside the store": str(trained_model),
        "symlink out of the store": str(store / "link_out"),
        "dot-dot out of the store": f"{store}/../../{trained_model.parent.name}/model",
        "the store itself": str(store),
        "relative path": "models/dogs",
        "http URL": "http://127.0.0.1:1/model.mar",
    }


@pytest.mark.parametrize("case", ["system folder", "model outside the store",
                                  "symlink out of the store", "dot-dot out of the store",
                                  "the store itself", "relative path", "http URL"])
def test_a_url_outside_the_model_store_is_refused(endpoint, trained_model, case):
    url = _outside_urls(_store(endpoint), trained_model)[case]
    started = time.monotonic()
    response = _load(endpoint, "outsider", url)
    _assert_refused(response, 400, "is not a folder inside the model store")
    assert time.monotonic() - started < 2  # refused by the front: no worker was started
    assert "outsider" not in _loaded_models(endpoint)


@pytest.mark.parametrize("body, reason", [
    (b"not json", 'the body must be JSON {"model_name": ..., "url": ...}'),
    (b'["dogs"]', 'the body must be JSON {"model_name": ..., "url": ...}'),
    (b'{"url": "/opt/ml/models/a"}', "model_name must be"),
    (b'{"model_name": "../dogs", "url": "/opt/ml/models/a"}', "model_name must be"),
    (b'{"model_name": "dogs"}', "url must name the model's folder"),
    (b'{"model_name": "dogs", "url": "%s/missing"}', "does not exist"),
])
def test_a_malformed_load_request_is_refused(endpoint, body, reason):
    if b"%s" in body:
        body = body % str(_store(endpoint)).encode()
    response = requests.post(f"{endpoint.url}/models", data=body,
                             headers={"Content-Type": "application/json"}, timeout=30)
    _assert_refused(response, 400, reason)


def test_the_query_string_form_is_checked_too(endpoint):
    response = requests.post(f"{endpoint.url}/models?url=/etc&model_name=etc", timeout=30)
    _assert_refused(response, 400, "'/etc' is not a folder inside the model store")


def test_two_loads_of_one_name_at_once_load_it_once(endpoint, trained_model, sample_data):
    folder = _model_in_store(endpoint, trained_model, "twice")
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: _load(endpoint, "twice", folder), range(2)))
    assert sorted(answer.status_code for answer in answers) == [200, 409]
    conflict = next(answer for answer in answers if answer.status_code == 409)
    assert "already registered" in conflict.json()["error"]
    described = requests.get(f"{endpoint.url}/models/twice", timeout=30).json()
    described = described[0] if isinstance(described, list) else described
    assert len(described["workers"]) == 1  # one registration, one worker
    assert _invoke(endpoint, "twice", _test_images(sample_data)[0].read_bytes()).status_code == 200
    assert requests.delete(f"{endpoint.url}/models/twice", timeout=60).status_code == 200


def test_unload_frees_the_workers_memory(endpoint, trained_model, sample_data):
    folder = _model_in_store(endpoint, trained_model, "measured")
    before = _workers_rss(endpoint)
    started = time.monotonic()
    assert _load(endpoint, "measured", folder).status_code == 200
    load_seconds = time.monotonic() - started
    body = _test_images(sample_data)[0].read_bytes()
    assert _invoke(endpoint, "measured", body).status_code == 200
    loaded = _workers_rss(endpoint)
    assert requests.delete(f"{endpoint.url}/models/measured", timeout=60).status_code == 200
    after = _workers_rss(endpoint)  # at once: the unload answers when the workers are gone
    print(f"worker RSS: {before / MB:.0f} MB before load, {loaded / MB:.0f} MB loaded "
          f"(load {load_seconds:.1f} s), {after / MB:.0f} MB after unload")
    assert loaded - before > 200 * MB  # torch and a ResNet50 in one worker
    assert after <= before + 10 * MB


def test_a_model_that_runs_out_of_memory_while_loading_answers_507(trained_model, tmp_path):
    (tmp_path / "aid").mkdir()
    (tmp_path / "aid" / "sitecustomize.py").write_text(STARVING_SITECUSTOMIZE)
    (tmp_path / "models").mkdir()
    starved = RunningServer(tmp_path, SAGEMAKER_MULTI_MODEL="true",
                            SAGEMAKER_MODEL_SERVER_WORKERS="1", PYTHONPATH=str(tmp_path / "aid"),
                            DOGBREED_TEST_STARVED_MODEL="starved").start()
    try:
        folder = _model_in_store(starved, trained_model, "starved")
        response = _load(starved, "starved", folder)
        _assert_refused(response, 507, "cannot load model 'starved': model_fn failed: "
                                       "MemoryError")
        assert _loaded_models(starved) == set()
        assert _workers(starved) == []
        fed = _model_in_store(starved, trained_model, "fed")  # the same model, memory to spare
        assert _load(starved, "fed", fed).status_code == 200
    finally:
        assert starved.stop() == 0
