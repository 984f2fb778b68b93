"""Kafka's error codes as exception classes: the wire contract.

Every code that can cross the wire has exactly one class here, registered once by its
``code`` and named as Kafka names it (``NOT_LEADER_OR_FOLLOWER`` = 6, ...). Codes are never
renumbered: a Kafka-protocol listener can be added later without a translation table.
Each class says whether the condition is ``retriable`` (the same request may succeed if
sent again, possibly after a metadata refresh: ``invalid_metadata``).

Inner layers raise these (or their local subclasses below, which keep the parent's code);
one function at the API edge, :func:`error_code_of`, maps any exception to a code. An
unknown code from a peer becomes :class:`UnknownServerError` carrying the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

__all__ = [
    "ERRORS",
    "ApiError",
    "HeadwaterError",
    "error_code_of",
    "error_for_code",
    "raise_for_code",
]

NONE = 0

_registry: dict[int, type[ApiError]] = {}


class HeadwaterError(Exception):
    """Base of every error Headwater raises on purpose."""


class ApiError(HeadwaterError):
    """An error with a Kafka error code.

    Subclasses declare ``code`` and ``name`` as class keywords; the first class declared for
    a code is the one :func:`error_for_code` returns. A subclass without a code keeps its
    parent's (a more precise local cause with the same wire meaning).
    """

    code: ClassVar[int] = -1
    name: ClassVar[str] = "UNKNOWN_SERVER_ERROR"
    retriable: ClassVar[bool] = False
    invalid_metadata: ClassVar[bool] = False

    def __init_subclass__(
        cls,
        *,
        code: int | None = None,
        name: str | None = None,
        retriable: bool | None = None,
        invalid_metadata: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if retriable is not None:
            cls.retriable = retriable
        if invalid_metadata is not None:
            cls.invalid_metadata = invalid_metadata
        if code is None:
            return
        if name is None:
            raise TypeError(f"{cls.__name__}: an error code needs its Kafka name")
        if code in _registry:
            raise TypeError(f"error code {code} is already {_registry[code].__name__}")
        cls.code = code
        cls.name = name
        _registry[code] = cls

    def __init__(self, message: str | None = None) -> None:
        self.message = message or _first_line(type(self).__doc__)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").split("\n\n")[0].split())


def error_for_code(code: int, message: str | None = None) -> ApiError:
    """The exception for a wire error code; an unknown code keeps its number in the message."""
    cls = _registry.get(code)
    if cls is None:
        return UnknownServerError(message or f"unknown error code {code} from the server")
    return cls(message)


def raise_for_code(code: int, message: str | None = None) -> None:
    """Raise the error for ``code``; code 0 (NONE) returns."""
    if code != NONE:
        raise error_for_code(code, message)


def error_code_of(exc: BaseException) -> int:
    """The wire code for any exception: an unexpected one is UNKNOWN_SERVER_ERROR (-1)."""
    return exc.code if isinstance(exc, ApiError) else UnknownServerError.code


# --- Kafka's codes, in order (org.apache.kafka.common.protocol.Errors) --------------------


class UnknownServerError(ApiError, code=-1, name="UNKNOWN_SERVER_ERROR"):
    """The server experienced an unexpected error when processing the request."""


class OffsetOutOfRangeError(ApiError, code=1, name="OFFSET_OUT_OF_RANGE"):
    """The requested offset is not within the range of offsets maintained by the server."""


class CorruptMessageError(ApiError, code=2, name="CORRUPT_MESSAGE", retriable=True):
    """This message has failed its CRC checksum, exceeds the valid size, or is otherwise corrupt."""


class UnknownTopicOrPartitionError(
    ApiError,
    code=3,
    name="UNKNOWN_TOPIC_OR_PARTITION",
    retriable=True,
    invalid_metadata=True,
):
    """This server does not host this topic-partition."""


class InvalidFetchSizeError(ApiError, code=4, name="INVALID_FETCH_SIZE"):
    """The requested fetch size is invalid."""


class LeaderNotAvailableError(
    ApiError,
    code=5,
    name="LEADER_NOT_AVAILABLE",
    retriable=True,
    invalid_metadata=True,
):
    """There is no leader for this topic-partition as we are in the middle of a leadership
    election.
    """


class NotLeaderOrFollowerError(
    ApiError,
    code=6,
    name="NOT_LEADER_OR_FOLLOWER",
    retriable=True,
    invalid_metadata=True,
):
    """This broker is not the leader (or not a replica) of the topic-partition."""


class RequestTimedOutError(ApiError, code=7, name="REQUEST_TIMED_OUT", retriable=True):
    """The request timed out."""


class BrokerNotAvailableError(ApiError, code=8, name="BROKER_NOT_AVAILABLE"):
    """The broker is not available."""


class ReplicaNotAvailableError(
    ApiError,
    code=9,
    name="REPLICA_NOT_AVAILABLE",
    retriable=True,
    invalid_metadata=True,
):
    """The replica is not available for the requested topic-partition."""


class MessageTooLargeError(ApiError, code=10, name="MESSAGE_TOO_LARGE"):
    """The request included a message larger than the max message size the server will accept."""


class StaleControllerEpochError(ApiError, code=11, name="STALE_CONTROLLER_EPOCH"):
    """The controller moved to another broker."""


class OffsetMetadataTooLargeError(ApiError, code=12, name="OFFSET_METADATA_TOO_LARGE"):
    """If you specify a string larger than configured maximum for offset metadata."""


class NetworkError(
    ApiError,
    code=13,
    name="NETWORK_EXCEPTION",
    retriable=True,
    invalid_metadata=True,
):
    """The server disconnected before a response was received."""


class CoordinatorLoadInProgressError(
    ApiError,
    code=14,
    name="COORDINATOR_LOAD_IN_PROGRESS",
    retriable=True,
):
    """The broker returns this error code for txn or group requests, when the coordinator is
    loading and hence cant process requests.
    """


class CoordinatorNotAvailableError(
    ApiError,
    code=15,
    name="COORDINATOR_NOT_AVAILABLE",
    retriable=True,
):
    """The broker returns this error code for consumer and transaction requests if the offsets
    topic has not yet been created, or if the group/txn coordinator is not active.
    """


class NotCoordinatorError(ApiError, code=16, name="NOT_COORDINATOR", retriable=True):
    """The broker returns this error code if it is not the correct coordinator for the specified
    consumer or transaction group.
    """


class InvalidTopicError(ApiError, code=17, name="INVALID_TOPIC_EXCEPTION"):
    """The request attempted to perform an operation on an invalid topic."""


class RecordListTooLargeError(ApiError, code=18, name="RECORD_LIST_TOO_LARGE"):
    """The request included a message batch larger than the configured segment size."""


class NotEnoughReplicasError(ApiError, code=19, name="NOT_ENOUGH_REPLICAS", retriable=True):
    """Messages are rejected since there are fewer in-sync replicas than required."""


class NotEnoughReplicasAfterAppendError(
    ApiError,
    code=20,
    name="NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    retriable=True,
):
    """Messages are written to the log, but to fewer in-sync replicas than required."""


class InvalidRequiredAcksError(ApiError, code=21, name="INVALID_REQUIRED_ACKS"):
    """Produce request specified an invalid value for required acks."""


class IllegalGenerationError(ApiError, code=22, name="ILLEGAL_GENERATION"):
    """Returned from group membership requests (such as heartbeats) when the generation id provided
    in the request is not the current generation.
    """


class InconsistentGroupProtocolError(ApiError, code=23, name="INCONSISTENT_GROUP_PROTOCOL"):
    """Returned in join group when the member provides a protocol type or set of protocols which is
    not compatible with the current group.
    """


class InvalidGroupIdError(ApiError, code=24, name="INVALID_GROUP_ID"):
    """Returned in join group when the groupId is empty or null."""


class UnknownMemberIdError(ApiError, code=25, name="UNKNOWN_MEMBER_ID"):
    """Returned from group requests (offset commits/fetches, heartbeats, etc) when the memberId is
    not in the current generation.
    """


class InvalidSessionTimeoutError(ApiError, code=26, name="INVALID_SESSION_TIMEOUT"):
    """Return in join group when the requested session timeout is outside of the allowed range on
    the broker.
    """


class RebalanceInProgressError(ApiError, code=27, name="REBALANCE_IN_PROGRESS"):
    """Returned in heartbeat requests when the coordinator has begun rebalancing the group."""


class InvalidCommitOffsetSizeError(ApiError, code=28, name="INVALID_COMMIT_OFFSET_SIZE"):
    """This error indicates that an offset commit was rejected because of oversize metadata."""


class TopicAuthorizationFailedError(ApiError, code=29, name="TOPIC_AUTHORIZATION_FAILED"):
    """Returned by the broker when the client is not authorized to access the requested topic."""


class GroupAuthorizationFailedError(ApiError, code=30, name="GROUP_AUTHORIZATION_FAILED"):
    """Returned by the broker when the client is not authorized to access a particular groupId."""


class ClusterAuthorizationFailedError(ApiError, code=31, name="CLUSTER_AUTHORIZATION_FAILED"):
    """Returned by the broker when the client is not authorized to use an inter-broker or
    administrative API.
    """


class InvalidTimestampError(ApiError, code=32, name="INVALID_TIMESTAMP"):
    """The timestamp of the message is out of acceptable range."""


class UnsupportedSaslMechanismError(ApiError, code=33, name="UNSUPPORTED_SASL_MECHANISM"):
    """The broker does not support the requested SASL mechanism."""


class IllegalSaslStateError(ApiError, code=34, name="ILLEGAL_SASL_STATE"):
    """Request is not valid given the current SASL state."""


class UnsupportedVersionError(ApiError, code=35, name="UNSUPPORTED_VERSION"):
    """The version of API is not supported."""


class TopicAlreadyExistsError(ApiError, code=36, name="TOPIC_ALREADY_EXISTS"):
    """Topic with this name already exists."""


class InvalidPartitionsError(ApiError, code=37, name="INVALID_PARTITIONS"):
    """Number of partitions is invalid."""


class InvalidReplicationFactorError(ApiError, code=38, name="INVALID_REPLICATION_FACTOR"):
    """Replication-factor is invalid."""


class InvalidReplicaAssignmentError(ApiError, code=39, name="INVALID_REPLICA_ASSIGNMENT"):
    """Replication assignment is invalid."""


class InvalidConfigError(ApiError, code=40, name="INVALID_CONFIG"):
    """Configuration is invalid."""


class NotControllerError(ApiError, code=41, name="NOT_CONTROLLER", retriable=True):
    """This is not the correct controller for this cluster."""


class InvalidRequestError(ApiError, code=42, name="INVALID_REQUEST"):
    """The request is malformed, or was sent to an incompatible broker; see the broker logs."""


class UnsupportedForMessageFormatError(ApiError, code=43, name="UNSUPPORTED_FOR_MESSAGE_FORMAT"):
    """The message format version on the broker does not support this request."""


class PolicyViolationError(ApiError, code=44, name="POLICY_VIOLATION"):
    """Request parameters do not satisfy the configured policy."""


class OutOfOrderSequenceNumberError(ApiError, code=45, name="OUT_OF_ORDER_SEQUENCE_NUMBER"):
    """The broker received an out of order sequence number."""


class DuplicateSequenceNumberError(ApiError, code=46, name="DUPLICATE_SEQUENCE_NUMBER"):
    """The broker received a duplicate sequence number."""


class InvalidProducerEpochError(ApiError, code=47, name="INVALID_PRODUCER_EPOCH"):
    """Producer attempted to produce with an old epoch."""


class InvalidTxnStateError(ApiError, code=48, name="INVALID_TXN_STATE"):
    """The producer attempted a transactional operation in an invalid state."""


class InvalidProducerIdMappingError(ApiError, code=49, name="INVALID_PRODUCER_ID_MAPPING"):
    """The producer attempted to use a producer id which is not currently assigned to its
    transactional id.
    """


class InvalidTransactionTimeoutError(ApiError, code=50, name="INVALID_TRANSACTION_TIMEOUT"):
    """The transaction timeout is larger than the maximum value allowed by the broker (as
    configured by transaction.max.timeout.ms).
    """


class ConcurrentTransactionsError(
    ApiError,
    code=51,
    name="CONCURRENT_TRANSACTIONS",
    retriable=True,
):
    """The producer attempted to update a transaction while another concurrent operation on the
    same transaction was ongoing.
    """


class TransactionCoordinatorFencedError(ApiError, code=52, name="TRANSACTION_COORDINATOR_FENCED"):
    """Indicates that the transaction coordinator sending a WriteTxnMarker is no longer the current
    coordinator for a given producer.
    """


class TransactionalIdAuthorizationFailedError(
    ApiError,
    code=53,
    name="TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
):
    """Transactional Id authorization failed."""


class SecurityDisabledError(ApiError, code=54, name="SECURITY_DISABLED"):
    """Security features are disabled."""


class OperationNotAttemptedError(ApiError, code=55, name="OPERATION_NOT_ATTEMPTED"):
    """The broker did not attempt to execute this operation."""


class KafkaStorageError(
    ApiError,
    code=56,
    name="KAFKA_STORAGE_ERROR",
    retriable=True,
    invalid_metadata=True,
):
    """Disk error when trying to access log file on the disk."""


class LogDirNotFoundError(ApiError, code=57, name="LOG_DIR_NOT_FOUND"):
    """The user-specified log directory is not found in the broker config."""


class SaslAuthenticationFailedError(ApiError, code=58, name="SASL_AUTHENTICATION_FAILED"):
    """SASL Authentication failed."""


class UnknownProducerIdError(ApiError, code=59, name="UNKNOWN_PRODUCER_ID"):
    """This exception is raised by the broker if it could not locate the producer metadata
    associated with the producerId in question.
    """


class ReassignmentInProgressError(ApiError, code=60, name="REASSIGNMENT_IN_PROGRESS"):
    """A partition reassignment is in progress."""


class DelegationTokenAuthDisabledError(ApiError, code=61, name="DELEGATION_TOKEN_AUTH_DISABLED"):
    """Delegation Token feature is not enabled."""


class DelegationTokenNotFoundError(ApiError, code=62, name="DELEGATION_TOKEN_NOT_FOUND"):
    """Delegation Token is not found on server."""


class DelegationTokenOwnerMismatchError(ApiError, code=63, name="DELEGATION_TOKEN_OWNER_MISMATCH"):
    """Specified Principal is not valid Owner/Renewer."""


class DelegationTokenRequestNotAllowedError(
    ApiError,
    code=64,
    name="DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
):
    """Delegation Token requests are not allowed on PLAINTEXT/1-way SSL channels and on delegation
    token authenticated channels.
    """


class DelegationTokenAuthorizationFailedError(
    ApiError,
    code=65,
    name="DELEGATION_TOKEN_AUTHORIZATION_FAILED",
):
    """Delegation Token authorization failed."""


class DelegationTokenExpiredError(ApiError, code=66, name="DELEGATION_TOKEN_EXPIRED"):
    """Delegation Token is expired."""


class InvalidPrincipalTypeError(ApiError, code=67, name="INVALID_PRINCIPAL_TYPE"):
    """Supplied principalType is not supported."""


class NonEmptyGroupError(ApiError, code=68, name="NON_EMPTY_GROUP"):
    """The group is not empty."""


class GroupIdNotFoundError(ApiError, code=69, name="GROUP_ID_NOT_FOUND"):
    """The group id does not exist."""


class FetchSessionIdNotFoundError(
    ApiError,
    code=70,
    name="FETCH_SESSION_ID_NOT_FOUND",
    retriable=True,
):
    """The fetch session ID was not found."""


class InvalidFetchSessionEpochError(
    ApiError,
    code=71,
    name="INVALID_FETCH_SESSION_EPOCH",
    retriable=True,
):
    """The fetch session epoch is invalid."""


class ListenerNotFoundError(
    ApiError,
    code=72,
    name="LISTENER_NOT_FOUND",
    retriable=True,
    invalid_metadata=True,
):
    """There is no listener on the leader broker that matches the listener on which metadata
    request was processed.
    """


class TopicDeletionDisabledError(ApiError, code=73, name="TOPIC_DELETION_DISABLED"):
    """Topic deletion is disabled."""


class FencedLeaderEpochError(
    ApiError,
    code=74,
    name="FENCED_LEADER_EPOCH",
    retriable=True,
    invalid_metadata=True,
):
    """The leader epoch in the request is older than the epoch on the broker."""


class UnknownLeaderEpochError(
    ApiError,
    code=75,
    name="UNKNOWN_LEADER_EPOCH",
    retriable=True,
    invalid_metadata=True,
):
    """The leader epoch in the request is newer than the epoch on the broker."""


class UnsupportedCompressionTypeError(ApiError, code=76, name="UNSUPPORTED_COMPRESSION_TYPE"):
    """The requesting client does not support the compression type of given partition."""


class StaleBrokerEpochError(ApiError, code=77, name="STALE_BROKER_EPOCH"):
    """Broker epoch has changed."""


class OffsetNotAvailableError(ApiError, code=78, name="OFFSET_NOT_AVAILABLE", retriable=True):
    """The leader high watermark has not caught up from a recent leader election so the offsets
    cannot be guaranteed to be monotonically increasing.
    """


class MemberIdRequiredError(ApiError, code=79, name="MEMBER_ID_REQUIRED"):
    """The group member needs a valid member id before it can enter a consumer group."""


class PreferredLeaderNotAvailableError(
    ApiError,
    code=80,
    name="PREFERRED_LEADER_NOT_AVAILABLE",
    retriable=True,
):
    """The preferred leader was not available."""


class GroupMaxSizeReachedError(ApiError, code=81, name="GROUP_MAX_SIZE_REACHED"):
    """The consumer group has reached its max size."""


class FencedInstanceIdError(ApiError, code=82, name="FENCED_INSTANCE_ID"):
    """The broker rejected this static consumer since another consumer with the same
    group.instance.id has registered with a different member.id.
    """


class EligibleLeadersNotAvailableError(
    ApiError,
    code=83,
    name="ELIGIBLE_LEADERS_NOT_AVAILABLE",
    retriable=True,
):
    """Eligible topic partition leaders are not available."""


class ElectionNotNeededError(ApiError, code=84, name="ELECTION_NOT_NEEDED", retriable=True):
    """Leader election not needed for topic partition."""


class NoReassignmentInProgressError(ApiError, code=85, name="NO_REASSIGNMENT_IN_PROGRESS"):
    """No partition reassignment is in progress."""


class GroupSubscribedToTopicError(ApiError, code=86, name="GROUP_SUBSCRIBED_TO_TOPIC"):
    """Deleting offsets of a topic is forbidden while the consumer group is actively subscribed to
    it.
    """


class InvalidRecordError(ApiError, code=87, name="INVALID_RECORD"):
    """This record has failed the validation on broker and hence will be rejected."""


class UnstableOffsetCommitError(ApiError, code=88, name="UNSTABLE_OFFSET_COMMIT", retriable=True):
    """There are unstable offsets that need to be cleared."""


class ThrottlingQuotaExceededError(
    ApiError,
    code=89,
    name="THROTTLING_QUOTA_EXCEEDED",
    retriable=True,
):
    """The throttling quota has been exceeded."""


class ProducerFencedError(ApiError, code=90, name="PRODUCER_FENCED"):
    """There is a newer producer with the same transactionalId which fences the current one."""


class ResourceNotFoundError(ApiError, code=91, name="RESOURCE_NOT_FOUND"):
    """A request illegally referred to a resource that does not exist."""


class DuplicateResourceError(ApiError, code=92, name="DUPLICATE_RESOURCE"):
    """A request illegally referred to the same resource twice."""


class UnacceptableCredentialError(ApiError, code=93, name="UNACCEPTABLE_CREDENTIAL"):
    """Requested credential would not meet criteria for acceptability."""


class InconsistentVoterSetError(ApiError, code=94, name="INCONSISTENT_VOTER_SET"):
    """Indicates that the either the sender or recipient of a voter-only request is not one of the
    expected voters.
    """


class InvalidUpdateVersionError(ApiError, code=95, name="INVALID_UPDATE_VERSION"):
    """The given update version was invalid."""


class FeatureUpdateFailedError(ApiError, code=96, name="FEATURE_UPDATE_FAILED"):
    """Unable to update finalized features due to an unexpected server error."""


class PrincipalDeserializationFailureError(
    ApiError,
    code=97,
    name="PRINCIPAL_DESERIALIZATION_FAILURE",
):
    """Request principal deserialization failed during forwarding."""


class SnapshotNotFoundError(ApiError, code=98, name="SNAPSHOT_NOT_FOUND"):
    """Requested snapshot was not found."""


class PositionOutOfRangeError(ApiError, code=99, name="POSITION_OUT_OF_RANGE"):
    """Requested position is not greater than or equal to zero, and less than the size of the
    snapshot.
    """


class UnknownTopicIdError(
    ApiError,
    code=100,
    name="UNKNOWN_TOPIC_ID",
    retriable=True,
    invalid_metadata=True,
):
    """This server does not host this topic ID."""


class DuplicateBrokerRegistrationError(ApiError, code=101, name="DUPLICATE_BROKER_REGISTRATION"):
    """This broker ID is already in use."""


class BrokerIdNotRegisteredError(ApiError, code=102, name="BROKER_ID_NOT_REGISTERED"):
    """The given broker ID was not registered."""


class InconsistentTopicIdError(
    ApiError,
    code=103,
    name="INCONSISTENT_TOPIC_ID",
    retriable=True,
    invalid_metadata=True,
):
    """The log's topic ID did not match the topic ID in the request."""


class InconsistentClusterIdError(ApiError, code=104, name="INCONSISTENT_CLUSTER_ID"):
    """The clusterId in the request does not match that found on the server."""


class TransactionalIdNotFoundError(ApiError, code=105, name="TRANSACTIONAL_ID_NOT_FOUND"):
    """The transactionalId could not be found."""


class FetchSessionTopicIdError(
    ApiError,
    code=106,
    name="FETCH_SESSION_TOPIC_ID_ERROR",
    retriable=True,
):
    """The fetch session encountered inconsistent topic ID usage."""


class IneligibleReplicaError(ApiError, code=107, name="INELIGIBLE_REPLICA"):
    """The new ISR contains at least one ineligible replica."""


class NewLeaderElectedError(ApiError, code=108, name="NEW_LEADER_ELECTED"):
    """The AlterPartition request successfully updated the partition state but the leader has
    changed.
    """


class OffsetMovedToTieredStorageError(ApiError, code=109, name="OFFSET_MOVED_TO_TIERED_STORAGE"):
    """The requested offset is moved to tiered storage."""


class FencedMemberEpochError(ApiError, code=110, name="FENCED_MEMBER_EPOCH"):
    """The member epoch is fenced by the group coordinator."""


class UnreleasedInstanceIdError(ApiError, code=111, name="UNRELEASED_INSTANCE_ID"):
    """The instance ID is still used by another member in the consumer group."""


class UnsupportedAssignorError(ApiError, code=112, name="UNSUPPORTED_ASSIGNOR"):
    """The assignor or its version range is not supported by the consumer group."""


class StaleMemberEpochError(ApiError, code=113, name="STALE_MEMBER_EPOCH"):
    """The member epoch is stale."""


class MismatchedEndpointTypeError(ApiError, code=114, name="MISMATCHED_ENDPOINT_TYPE"):
    """The request was sent to an endpoint of the wrong type."""


class UnsupportedEndpointTypeError(ApiError, code=115, name="UNSUPPORTED_ENDPOINT_TYPE"):
    """This endpoint type is not supported yet."""


class UnknownControllerIdError(ApiError, code=116, name="UNKNOWN_CONTROLLER_ID"):
    """This controller ID is not known."""


class UnknownSubscriptionIdError(ApiError, code=117, name="UNKNOWN_SUBSCRIPTION_ID"):
    """Client sent a push telemetry request with an invalid or outdated subscription ID."""


class TelemetryTooLargeError(ApiError, code=118, name="TELEMETRY_TOO_LARGE"):
    """Client sent a push telemetry request larger than the maximum size the broker will accept."""


class InvalidRegistrationError(ApiError, code=119, name="INVALID_REGISTRATION"):
    """The controller has considered the broker registration to be invalid."""


class TransactionAbortableError(ApiError, code=120, name="TRANSACTION_ABORTABLE"):
    """The server encountered an error with the transaction."""


class InvalidRecordStateError(ApiError, code=121, name="INVALID_RECORD_STATE"):
    """The record state is invalid."""


class ShareSessionNotFoundError(ApiError, code=122, name="SHARE_SESSION_NOT_FOUND", retriable=True):
    """The share session was not found."""


class InvalidShareSessionEpochError(
    ApiError,
    code=123,
    name="INVALID_SHARE_SESSION_EPOCH",
    retriable=True,
):
    """The share session epoch is invalid."""


class FencedStateEpochError(ApiError, code=124, name="FENCED_STATE_EPOCH"):
    """The share coordinator rejected the request because the share-group state epoch did not
    match.
    """


class InvalidVoterKeyError(ApiError, code=125, name="INVALID_VOTER_KEY"):
    """The voter key doesn't match the receiving replica's key."""


class DuplicateVoterError(ApiError, code=126, name="DUPLICATE_VOTER"):
    """The voter is already part of the set of voters."""


class VoterNotFoundError(ApiError, code=127, name="VOTER_NOT_FOUND"):
    """The voter is not part of the set of voters."""


class InvalidRegularExpressionError(ApiError, code=128, name="INVALID_REGULAR_EXPRESSION"):
    """The regular expression is not valid."""


class ShareSessionLimitReachedError(
    ApiError, code=133, name="SHARE_SESSION_LIMIT_REACHED", retriable=True
):
    """The broker holds as many share sessions as it may (group.share.max.share.sessions)."""


ERRORS: Mapping[int, type[ApiError]] = MappingProxyType(_registry)
"""Every registered error class by code."""


# --- Local causes: raised by our decoders, sent as their parent's code ---------------------


class MalformedFrameError(InvalidRequestError):
    """A frame's structure is wrong: too short for its header, or cut off."""


class FrameTooLargeError(MalformedFrameError):
    """A frame declares a length over the configured maximum."""


class TruncatedFrameError(MalformedFrameError):
    """The stream ended inside a frame."""


class MalformedMessageError(InvalidRequestError):
    """A message body is not valid msgpack, or does not match its schema."""


class UnsupportedRequestError(UnsupportedVersionError):
    """A request for an API key or version this side does not speak.

    Carries the request ``header`` so the receiver can still answer the right correlation id.
    """

    def __init__(self, message: str | None = None, header: Any = None) -> None:
        super().__init__(message)
        self.header = header


class CorruptBatchError(CorruptMessageError):
    """A record batch failed validation; ``position`` is its byte offset in the buffer."""

    def __init__(self, message: str | None = None, position: int = 0) -> None:
        super().__init__(message)
        self.position = position


class CrcMismatchError(CorruptBatchError):
    """A record batch's CRC32C does not match its contents."""


class InvalidMagicError(CorruptBatchError):
    """A record batch is not magic 2 (RecordBatch v2), the only format Headwater speaks."""


class TruncatedBatchError(CorruptBatchError):
    """A record batch's length runs past the end of the buffer."""


class InvalidRecordsError(CorruptBatchError):
    """The records inside a batch (after its header) cannot be decoded."""
