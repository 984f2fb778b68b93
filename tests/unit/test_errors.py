import inspect

import kafka.errors as reference
import pytest

from protocol import errors
from protocol.errors import (
    ERRORS,
    ApiError,
    CorruptMessageError,
    CrcMismatchError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    UnknownServerError,
    error_code_of,
    error_for_code,
    raise_for_code,
)

# Names Kafka's Java client uses today where kafka-python keeps an older one.
RENAMED = {
    -1: "UNKNOWN_SERVER_ERROR",
    6: "NOT_LEADER_OR_FOLLOWER",
    10: "MESSAGE_TOO_LARGE",
    17: "INVALID_TOPIC_EXCEPTION",
    39: "INVALID_REPLICA_ASSIGNMENT",
}


def _reference_codes() -> dict[int, str]:
    out = {}
    for _, cls in inspect.getmembers(reference, inspect.isclass):
        errno = getattr(cls, "errno", None)
        if issubclass(cls, reference.BrokerResponseError) and isinstance(errno, int) and errno:
            out[errno] = cls.message
    return out


def test_every_kafka_code_has_one_class_with_kafkas_name() -> None:
    ref = _reference_codes()
    assert len(ref) > 120
    for code, name in ref.items():
        assert code in ERRORS, f"missing error code {code} ({name})"
        assert ERRORS[code].name == RENAMED.get(code, name)
        assert ERRORS[code].code == code


def test_well_known_codes_and_retriability() -> None:
    assert NotLeaderOrFollowerError.code == 6
    assert NotLeaderOrFollowerError.retriable and NotLeaderOrFollowerError.invalid_metadata
    assert NotEnoughReplicasError.code == 19 and NotEnoughReplicasError.retriable
    assert ERRORS[20].name == "NOT_ENOUGH_REPLICAS_AFTER_APPEND" and ERRORS[20].retriable
    assert ERRORS[1].name == "OFFSET_OUT_OF_RANGE" and not ERRORS[1].retriable
    assert ERRORS[35].name == "UNSUPPORTED_VERSION" and not ERRORS[35].retriable
    assert ERRORS[45].name == "OUT_OF_ORDER_SEQUENCE_NUMBER"
    assert ERRORS[56].name == "KAFKA_STORAGE_ERROR" and ERRORS[56].retriable


def test_local_causes_keep_their_parents_code_without_registering() -> None:
    assert CrcMismatchError.code == CorruptMessageError.code == 2
    assert ERRORS[2] is CorruptMessageError
    assert issubclass(errors.FrameTooLargeError, errors.InvalidRequestError)
    assert errors.UnsupportedRequestError.code == 35


def test_error_for_code() -> None:
    err = error_for_code(6, "partition 3 moved")
    assert isinstance(err, NotLeaderOrFollowerError)
    assert str(err) == "NOT_LEADER_OR_FOLLOWER: partition 3 moved"
    assert error_for_code(6).message.startswith("This broker is not the leader")
    unknown = error_for_code(31337)
    assert isinstance(unknown, UnknownServerError) and "31337" in unknown.message


def test_raise_for_code() -> None:
    raise_for_code(0)
    with pytest.raises(NotEnoughReplicasError, match="2 of 3"):
        raise_for_code(19, "2 of 3 in sync")


def test_error_code_of_maps_anything() -> None:
    assert error_code_of(CrcMismatchError("bad")) == 2
    assert error_code_of(KeyError("x")) == -1


def test_a_code_cannot_be_registered_twice() -> None:
    with pytest.raises(TypeError, match="already"):

        class Twice(ApiError, code=6, name="NOT_LEADER_OR_FOLLOWER"):
            pass
