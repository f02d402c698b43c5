"""The ErrorInfo reader of a failed Pause (admin/outcomes.py): untrusted trailer bytes."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from txbackup.admin.outcomes import (
    DOMAINS,
    MAX_DETAILS_BYTES,
    RULES,
    STATUS_DETAILS_KEY,
    error_reason,
    status_details,
)

CODE = grpc.StatusCode.FAILED_PRECONDITION


def failed(trailer: bytes | None, code: grpc.StatusCode = CODE) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata() if trailer is None else grpc.aio.Metadata((STATUS_DETAILS_KEY, trailer))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, "Pause failed")


def test_each_documented_reason_is_read_from_both_domains() -> None:
    for domain in DOMAINS:
        for reason in RULES:
            got = error_reason(failed(status_details(CODE, "m", domain, reason)))
            assert got is not None and (got.domain, got.reason) == (domain, reason)


def test_the_rules() -> None:
    assert RULES["PAUSE_IN_PROGRESS"].retry and RULES["GATE_OPEN"].retry
    assert not RULES["TIMED_OUT"].retry and not RULES["TIMED_OUT_STILL_PAUSED"].retry
    assert RULES["TIMED_OUT_STILL_PAUSED"].still_paused
    assert not any(r.still_paused for name, r in RULES.items() if name != "TIMED_OUT_STILL_PAUSED")


def test_not_believed() -> None:
    assert error_reason(failed(None)) is None
    assert error_reason(failed(b"\x00" * (MAX_DETAILS_BYTES + 1))) is None
    assert error_reason(failed(status_details(CODE, "m", "com.example", "TIMED_OUT"))) is None
    assert error_reason(failed(status_details(grpc.StatusCode.ABORTED, "m", DOMAINS[0], "TIMED_OUT"))) is None
    assert error_reason(failed(status_details(CODE, "m", DOMAINS[0], "timed out; rm -rf /"))) is None
    # an Any that claims to be an ErrorInfo but holds garbage
    status = status_pb2.Status(code=CODE.value[0])
    status.details.append(any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\xff\xff"))
    assert error_reason(failed(status.SerializeToString())) is None


def test_an_unknown_reason_of_a_known_domain_is_kept_without_a_rule() -> None:
    got = error_reason(failed(status_details(CODE, "m", DOMAINS[0], "SOMETHING_NEW")))
    assert got is not None and got.rule is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_trailers_never_raise(raw: bytes) -> None:
    got = error_reason(failed(raw))
    assert got is None or (got.domain in DOMAINS and got.reason.isupper())


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80), st.sampled_from(DOMAINS))
def test_reasons_are_believed_only_in_enum_shape(reason: str, domain: str) -> None:
    status = status_pb2.Status(code=CODE.value[0])
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))
    got = error_reason(failed(status.SerializeToString()))
    if got is not None:
        assert got.reason == reason and reason[:1].isalpha() and len(reason) <= 64 and "\n" not in reason
