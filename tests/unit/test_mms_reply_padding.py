"""A batch's reply survives MMS's frontend reading it in 16-byte-multiple pieces: no
request's status code straddles a read boundary (`pad_for_split_reads`), checked on the
bytes MMS's own worker code encodes."""

from __future__ import annotations

import json
import random
import struct
import uuid

import pytest
from mms.context import Context, RequestProcessor
from mms.protocol.otf_message_handler import create_predict_response

from dogbreed.serving.handler import MMS_SUCCESS, pad_for_split_reads


def _status_offsets(reply: bytes) -> tuple[list[int], list[bytes]]:
    """Where each request's status code starts in MMS's reply, and each body (the layout the
    frontend's ModelResponseDecoder reads)."""
    def length(at):
        return struct.unpack("!i", reply[at:at + 4])[0], at + 4

    _, at = length(0)
    size, at = length(at)
    at += size  # message
    offsets, bodies = [], []
    while True:
        size, at = length(at)
        if size == -1:
            return offsets, bodies
        at += size  # request id
        size, at = length(at)
        at += size  # content type
        offsets.append(at)
        at += 4  # status
        size, at = length(at)
        at += size  # phrase
        headers, at = length(at)
        assert headers == 0  # the unchecked map stays empty
        size, at = length(at)
        bodies.append(reply[at:at + size])
        at += size


def _batch(answers: list[str], statuses: list[tuple[int, str]]) -> Context:
    context = Context("model", "/nowhere", {}, len(answers), None, "1.1.11")
    context.request_processor = [RequestProcessor({}) for _ in answers]
    context.request_ids = {index: str(uuid.uuid4()) for index in range(len(answers))}
    for index, (code, phrase) in enumerate(statuses):
        context.set_response_status(code=code, phrase=phrase, idx=index)
    return context


@pytest.mark.parametrize("seed", range(20))
def test_no_status_code_straddles_a_read_boundary(seed):
    rng = random.Random(seed)
    count = rng.choice([2, 4, 8, 32])
    answers = [json.dumps({"predictions": [[{"label": "x" * rng.randint(1, 40),
                                              "probability": rng.random()}]]})
               for _ in range(count)]
    statuses = [rng.choice([(200, "OK"), (400, "Bad Request"), (415, "Unsupported Media Type")])
                for _ in range(count)]
    context = _batch(answers, statuses)
    unpadded, _ = _status_offsets(create_predict_response(answers, context.request_ids,
                                                          MMS_SUCCESS, 200, context))
    padded = pad_for_split_reads(answers, context)
    offsets, bodies = _status_offsets(create_predict_response(padded, context.request_ids,
                                                              MMS_SUCCESS, 200, context))
    for offset in offsets:
        assert offset % 16 != 0 and offset % 16 <= 12, (offset, offsets)
    assert [json.loads(body) for body in bodies] == [json.loads(answer) for answer in answers]
    assert all(len(p) - len(a) < 16 for p, a in zip(padded, answers))
    if seed == 0:  # the layout read here is the one the padding assumed
        assert len(offsets) == count and len(unpadded) == count


def test_without_padding_some_batches_would_straddle():
    """The check above can fail: unpadded replies do put status codes across boundaries."""
    straddling = 0
    for seed in range(20):
        rng = random.Random(seed)
        answers = ["x" * rng.randint(100, 600) for _ in range(8)]
        context = _batch(answers, [(200, "OK")] * 8)
        offsets, _ = _status_offsets(create_predict_response(answers, context.request_ids,
                                                             MMS_SUCCESS, 200, context))
        straddling += any(offset % 16 == 0 or offset % 16 > 12 for offset in offsets)
    assert straddling > 0


@pytest.mark.parametrize("extra", range(16))
def test_a_model_that_failed_to_load_answers_every_request_of_a_batch_whole(extra):
    """Each request of the batch gets the load failure's 503 and reason, padded like any
    reply (the reason's length decides where the status codes fall: all 16 residues)."""
    from dogbreed.serving.handler import BreedTransformer
    context = _batch(["", "", ""], [])
    context._system_properties["model_dir"] = "/nowhere" + "x" * extra
    answers = BreedTransformer().transform([{"body": b"x"}] * 3, context)
    reply = create_predict_response(answers, context.request_ids, MMS_SUCCESS, 200, context)
    offsets, bodies = _status_offsets(reply)
    for offset in offsets:
        assert offset % 16 != 0 and offset % 16 <= 12, (offset, offsets)
    assert [struct.unpack("!i", reply[o:o + 4])[0] for o in offsets] == [503] * 3
    assert {json.loads(body)["error"] for body in bodies} == {
        f"model_fn failed: model directory /nowhere{'x' * extra} does not exist"}
