"""Inference handlers in the SageMaker toolkit's convention, and the transformer running them.

`model_fn`, `input_fn`, `predict_fn`, `output_fn` are what a SageMaker user would write in
`inference.py`. `BreedTransformer` is the toolkit's `Transformer` with its sharp edges
filed off: it always uses these handlers (the toolkit would take any importable module
named `inference` as user code), it answers each request of an MMS batch with its own
status (the toolkit answers the whole batch with the first error), it runs the good
requests of a batch in one forward pass, it checks Accept before running the model, and a
client error answers `{"error": ...}` with its 4xx status and no traceback (the toolkit
puts the traceback in every error body). A model that failed to load answers 503 (507 when
memory ran out) with the one-line reason: MMS reports every load as successful (it
swallows `initialize`'s exceptions), so a request is the only way the reason leaves the
worker, and the multi-model front relies on it to refuse a load honestly.
"""

from __future__ import annotations

import logging
import os
import traceback
from http import HTTPStatus

import torch
from mms.protocol.otf_message_handler import encode_response_headers
from sagemaker_inference.errors import BaseInferenceToolkitError, GenericInferenceToolkitError
from sagemaker_inference.transformer import Transformer

from dogbreed.serving.codec import (ClientError, Limits, check_accept, decode_images,
                                    default_top_k_from_environment, encode_error,
                                    encode_predictions, parse_top_k)
from dogbreed.serving.log_level import log_level_from_environment
from dogbreed.serving.predictor import DEFAULT_TOP_K, BreedClassifier, ModelLoadError

CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
JSON = "application/json"
MMS_SUCCESS = "Prediction success"  # the message of MMS's reply to a whole batch
MMS_READ_ALIGNMENT = 16
PRECISION_ENV = "DOGBREED_PRECISION"
MAX_REASON_CHARS = 500
logger = logging.getLogger("dogbreed.serving.handler")


class ModelNotLoaded(GenericInferenceToolkitError):
    """`model_fn` failed. Unlike other server errors its reason goes into the body: it names
    the artifact's file at fault or the memory that ran out, which whoever loads the model
    must read, and it holds no traceback."""

    def __init__(self, error: BaseException):
        status = HTTPStatus.INSUFFICIENT_STORAGE if _is_out_of_memory(error) \
            else HTTPStatus.SERVICE_UNAVAILABLE
        super().__init__(int(status), f"model_fn failed: {_one_line_reason(error)}")


def model_fn(model_dir: str, context=None) -> BreedClassifier:
    # MMS sets the worker's root logger to INFO; ours follows the container's level
    logging.getLogger("dogbreed").setLevel(log_level_from_environment())
    device = "cpu"
    if torch.cuda.is_available():  # MMS spreads workers over the GPUs: use the one given
        properties = getattr(context, "system_properties", None) or {}
        device = f"cuda:{properties.get('gpu_id') or 0}"
        torch.cuda.set_device(device)  # this worker's kernels and allocations stay there
    _share_cores_between_workers()
    classifier = BreedClassifier.load(model_dir, device=device,
                                      precision=os.environ.get(PRECISION_ENV) or "auto")
    # the first real request, of any batch size MMS may hand over, must not pay for
    # torch's first run of its shape
    properties = getattr(context, "system_properties", None) or {}
    warmed = classifier.warm_up(int(properties.get("batch_size") or 1))
    logger.info("model loaded on %s in %s, batch sizes %s warmed up", device,
                str(classifier.dtype).removeprefix("torch."), ", ".join(map(str, warmed)))
    return classifier


def input_fn(input_data: bytes, content_type: str, context=None,
             decode_size: tuple[int, int] | None = None, index: int = 0):
    """Images and the requested top-k of request `index` of the batch (ClientError becomes
    its 4xx). `decode_size`: the model's (`BreedClassifier.decode_size`), for JPEGs much
    larger."""
    headers = _request_headers(context, index)
    check_accept(headers.get("accept"))
    images = decode_images(input_data, content_type, Limits.from_environment(), decode_size)
    return images, parse_top_k(headers.get(CUSTOM_ATTRIBUTES),
                               default_top_k_from_environment(DEFAULT_TOP_K))


def predict_fn(data: list, model: BreedClassifier) -> list:
    """The (crops, top_k) of several requests run together (one forward pass up to the
    batch size); one prediction list per request, each with its own top_k."""
    images = [image for request_images, _ in data for image in request_images]
    rows = model.predict_crops(images, max(top_k for _, top_k in data)) if images else []
    predictions, start = [], 0
    for request_images, top_k in data:
        predictions.append([row[:top_k] for row in rows[start:start + len(request_images)]])
        start += len(request_images)
    return predictions


def output_fn(prediction, accept: str):
    return encode_predictions(prediction), JSON


class BreedTransformer(Transformer):
    """The toolkit's Transformer with its request loop replaced: bodies stay bytes (the
    toolkit decodes JSON bodies as UTF-8 first and answers 500 when that fails), headers
    are read case-insensitively (the toolkit matches a few spellings only), Accept is
    checked before the model runs, and errors answer JSON with a standard reason phrase
    (MMS frames the phrase by characters but writes UTF-8 bytes: a non-ASCII phrase
    kills the worker)."""

    def _validate_user_module_and_set_functions(self):
        # Always these handlers: the toolkit would take any importable `inference` module.
        self._model_fn, self._input_fn = model_fn, input_fn
        self._predict_fn, self._output_fn = predict_fn, output_fn

    def transform(self, data, context):
        """One answer per request of the batch, each with its own status: decode them all
        (on the worker's threads), run the decodable ones as one batch, answer each."""
        try:
            self.validate_and_initialize(
                model_dir=context.system_properties.get("model_dir"), context=context)
        except Exception as error:  # the reason in the body, the traceback in the log
            failure = ModelNotLoaded(error)
            return pad_for_split_reads([self.handle_error(context, failure,
                                                          traceback.format_exc(), index)
                                        for index in range(len(data))], context)
        model = self._model
        answers: list = [None] * len(data)

        def decode(index: int):
            headers = _request_headers(context, index)
            try:
                images, top_k = self._input_fn(data[index].get("body") or b"",
                                               headers.get("content-type"), context,
                                               decode_size=model.decode_size, index=index)
                # only the model's crops wait for the batch, not the decoded photos
                return [model.crop(image) for image in images], top_k
            except ClientError as error:
                answers[index] = self.handle_error(context, GenericInferenceToolkitError(
                    error.status, error.message), "", index)
            except Exception as error:  # a decoder bug: this request alone gets the 500
                answers[index] = self._server_error(context, error, index)
            return None

        decoded = model.map(decode, range(len(data)))
        good = [index for index, request in enumerate(decoded) if request is not None]
        logger.debug("dogbreed batch of %d request(s), %d decoded", len(data), len(good))
        try:
            predictions = self._predict_fn([decoded[index] for index in good], model)
            for index, prediction in zip(good, predictions):
                answers[index], _ = self._output_fn(prediction, JSON)  # the front says JSON
                context.set_response_status(code=200, phrase="OK", idx=index)
        except Exception as error:  # the model failed: every request it ran answers 500
            for index in good:
                answers[index] = self._server_error(context, error, index)
        return pad_for_split_reads(answers, context)

    def _server_error(self, context, error: Exception, index: int) -> str:
        if not isinstance(error, BaseInferenceToolkitError):
            error = GenericInferenceToolkitError(500, str(error))
        return self.handle_error(context, error, traceback.format_exc(), index)

    @staticmethod
    def handle_error(context, inference_exception: BaseInferenceToolkitError, trace,
                     index: int = 0) -> str:
        """Request `index`'s error status and its `{"error": ...}` body."""
        status = inference_exception.status_code
        message = inference_exception.message
        if status >= 500:
            logger.error("inference failed: %s", trace)  # the log keeps what the body must not
            if not isinstance(inference_exception, ModelNotLoaded):
                message = "internal error while predicting; see the endpoint's log"
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        context.set_response_status(code=status, phrase=phrase, idx=index)
        return encode_error(message)


def pad_for_split_reads(answers: list[str], context) -> list[str]:
    """Answers padded with trailing spaces (still the same JSON) so that MMS's frontend can
    read the batch's reply in pieces.

    MMS 1.1.11's frontend decodes a worker's reply from socket reads of 16-byte multiples
    (Netty's buffer sizes), and takes a read that ends early in any field for "wait for
    more", except inside a request's 4-byte status code or its response-header map: there
    it fails the whole batch with 500 ("Invalid message size: -3"; measured: 4 of 96
    requests at 16 clients with batches of 4). So no answer carries response headers (the
    front sets Content-Type), and each answer before a request's status is padded until
    that status code lies within one 16-byte block. The layout is MMS's
    `create_predict_response`."""
    request_ids = getattr(context, "request_ids", None) or {}
    if len(request_ids) != len(answers):  # not called by MMS
        return answers
    padded = list(answers)
    offset = 4 + 4 + len(MMS_SUCCESS.encode())  # code, message
    for index in range(len(answers)):
        offset += 4 + len(request_ids[index].encode()) + 4  # request id, no content type
        misfit = offset % MMS_READ_ALIGNMENT > MMS_READ_ALIGNMENT - 4 or \
            offset % MMS_READ_ALIGNMENT == 0
        if misfit and index > 0:
            spaces = (1 - offset) % MMS_READ_ALIGNMENT
            padded[index - 1] += " " * spaces
            offset += spaces
        _, phrase = context.get_response_status(index)
        offset += 4 + 4 + len((phrase or "").encode())  # status, phrase
        offset += len(encode_response_headers(context.get_response_headers(index)))
        offset += 4 + len(padded[index].encode())
    return padded


def _request_headers(context, index: int = 0) -> dict[str, str]:
    """Request `index`'s headers, lower-cased names (MMS keeps them as the client sent them)."""
    if context is None or not getattr(context, "request_processor", None):
        return {}
    properties = context.request_processor[index].get_request_properties() or {}
    return {str(name).lower(): value for name, value in properties.items()
            if isinstance(value, str)}


def _is_out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, CUDA's OutOfMemoryError, or torch's CPU allocator failing
    (a plain RuntimeError: "DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error)
    return "can't allocate memory" in text or "Cannot allocate memory" in text


def _one_line_reason(error: BaseException) -> str:
    """The artifact's own errors say what to fix as they are; anything else keeps its type."""
    lines = str(error).strip().splitlines()
    reason = lines[0] if lines else "no message"
    if not isinstance(error, ModelLoadError):
        reason = f"{type(error).__name__}: {reason}"
    return reason[:MAX_REASON_CHARS]


def _share_cores_between_workers() -> None:
    """Each worker process gets its share of the cores; by default every worker would
    start one thread per core and they would fight over them."""
    workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS") or 1)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, workers)))
