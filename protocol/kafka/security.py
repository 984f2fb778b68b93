"""Kafka's ACL, SCRAM-user, quota and delegation-token APIs on a Kafka-protocol listener,
as Kafka's AdminClient and tools (kafka-acls, kafka-configs for users and clients,
kafka-delegation-tokens) send them. Specs as in :mod:`protocol.kafka.messages`; the codes
(resource types, operations, mechanisms) are Kafka's in both protocols."""

from __future__ import annotations

from typing import Any

from protocol.apis import (
    AclCreation,
    AlterClientQuotasEntry,
    AlterClientQuotasRequest,
    AlterUserScramCredentialsRequest,
    ApiKey,
    CreateAclsRequest,
    CreateDelegationTokenRequest,
    DeleteAclsFilter,
    DeleteAclsRequest,
    DescribeAclsRequest,
    DescribeClientQuotasRequest,
    DescribeDelegationTokenRequest,
    DescribeUserScramCredentialsRequest,
    ExpireDelegationTokenRequest,
    QuotaEntityPart,
    QuotaFilterComponent,
    QuotaOp,
    RenewDelegationTokenRequest,
    ScramCredentialDeletion,
    ScramCredentialUpsertion,
    TokenPrincipal,
    UserName,
)
from protocol.kafka.codec import (
    BOOL,
    BYTES,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    INT64,
    NULLABLE_STRING,
    STRING,
    Array,
    Struct,
)
from protocol.kafka.spec import F, KafkaApi, per_item, per_topic

__all__ = ["SECURITY_APIS"]

# --- DescribeAcls (29), CreateAcls (30), DeleteAcls (31) ------------------------------

_FILTER = [
    F("resource_type_filter", INT8),
    F("resource_name_filter", NULLABLE_STRING),
    F("pattern_type_filter", INT8, 1, default=3),
    F("principal_filter", NULLABLE_STRING),
    F("host_filter", NULLABLE_STRING),
    F("operation", INT8),
    F("permission_type", INT8),
]
_ACL = [
    F("principal", STRING),
    F("host", STRING),
    F("operation", INT8),
    F("permission_type", INT8),
]

_DESCRIBE_ACLS_REQUEST = Struct(_FILTER, DescribeAclsRequest)
_DESCRIBE_ACLS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F(
            "resources",
            Array(
                Struct(
                    [
                        F("resource_type", INT8),
                        F("resource_name", STRING),
                        F("pattern_type", INT8, 1, default=3),
                        F("acls", Array(Struct(_ACL))),
                    ]
                )
            ),
        ),
    ]
)
_CREATE_ACLS_REQUEST = Struct(
    [
        F(
            "creations",
            Array(
                Struct(
                    [
                        F("resource_type", INT8),
                        F("resource_name", STRING),
                        F("resource_pattern_type", INT8, 1, default=3),
                        *_ACL,
                    ],
                    AclCreation,
                )
            ),
        )
    ],
    CreateAclsRequest,
)
_CREATE_ACLS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "results",
            Array(Struct([F("error_code", INT16), F("error_message", NULLABLE_STRING)])),
        ),
    ]
)
_DELETE_ACLS_REQUEST = Struct(
    [F("filters", Array(Struct(_FILTER, DeleteAclsFilter)))], DeleteAclsRequest
)
_DELETE_ACLS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "filter_results",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                        F(
                            "matching_acls",
                            Array(
                                Struct(
                                    [
                                        F("error_code", INT16),
                                        F("error_message", NULLABLE_STRING),
                                        F("resource_type", INT8),
                                        F("resource_name", STRING),
                                        F("pattern_type", INT8, 1, default=3),
                                        *_ACL,
                                    ]
                                )
                            ),
                        ),
                    ]
                )
            ),
        ),
    ]
)

# --- DescribeUserScramCredentials (50), AlterUserScramCredentials (51) ----------------

_DESCRIBE_SCRAM_REQUEST = Struct(
    [F("users", Array(Struct([F("name", STRING)], UserName), nullable=True))],
    DescribeUserScramCredentialsRequest,
)
_DESCRIBE_SCRAM_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F(
            "results",
            Array(
                Struct(
                    [
                        F("user", STRING),
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                        F(
                            "credential_infos",
                            Array(Struct([F("mechanism", INT8), F("iterations", INT32)])),
                        ),
                    ]
                )
            ),
        ),
    ]
)
_ALTER_SCRAM_REQUEST = Struct(
    [
        F(
            "deletions",
            Array(Struct([F("name", STRING), F("mechanism", INT8)], ScramCredentialDeletion)),
        ),
        F(
            "upsertions",
            Array(
                Struct(
                    [
                        F("name", STRING),
                        F("mechanism", INT8),
                        F("iterations", INT32),
                        F("salt", BYTES),
                        F("salted_password", BYTES),
                    ],
                    ScramCredentialUpsertion,
                )
            ),
        ),
    ],
    AlterUserScramCredentialsRequest,
)
_ALTER_SCRAM_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "results",
            Array(
                Struct(
                    [
                        F("user", STRING),
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                    ]
                )
            ),
        ),
    ]
)

# --- DescribeClientQuotas (48), AlterClientQuotas (49) --------------------------------

_ENTITY = Array(
    Struct([F("entity_type", STRING), F("entity_name", NULLABLE_STRING)], QuotaEntityPart)
)

_DESCRIBE_QUOTAS_REQUEST = Struct(
    [
        F(
            "components",
            Array(
                Struct(
                    [
                        F("entity_type", STRING),
                        F("match_type", INT8),
                        F("match", NULLABLE_STRING),
                    ],
                    QuotaFilterComponent,
                )
            ),
        ),
        F("strict", BOOL),
    ],
    DescribeClientQuotasRequest,
)
_DESCRIBE_QUOTAS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F("error_code", INT16),
        F("error_message", NULLABLE_STRING),
        F(
            "entries",
            Array(
                Struct(
                    [
                        F("entity", _ENTITY),
                        F("values", Array(Struct([F("key", STRING), F("value", FLOAT64)]))),
                    ]
                ),
                nullable=True,
            ),
        ),
    ]
)
_ALTER_QUOTAS_REQUEST = Struct(
    [
        F(
            "entries",
            Array(
                Struct(
                    [
                        F("entity", _ENTITY),
                        F(
                            "ops",
                            Array(
                                Struct(
                                    [
                                        F("key", STRING),
                                        F("value", FLOAT64),
                                        F("remove", BOOL),
                                    ],
                                    QuotaOp,
                                )
                            ),
                        ),
                    ],
                    AlterClientQuotasEntry,
                )
            ),
        ),
        F("validate_only", BOOL),
    ],
    AlterClientQuotasRequest,
)
_ALTER_QUOTAS_RESPONSE = Struct(
    [
        F("throttle_time_ms", INT32),
        F(
            "entries",
            Array(
                Struct(
                    [
                        F("error_code", INT16),
                        F("error_message", NULLABLE_STRING),
                        F("entity", _ENTITY),
                    ]
                )
            ),
        ),
    ]
)


def _scram_refused(
    request: AlterUserScramCredentialsRequest, code: int, message: str | None
) -> dict[str, Any]:
    names = [c.name for c in request.deletions] + [c.name for c in request.upsertions]
    users = dict.fromkeys(names)  # each once, in order
    return {"results": [{"user": u, "error_code": code, "error_message": message} for u in users]}


# --- CreateDelegationToken (38), RenewDelegationToken (39), ExpireDelegationToken (40),
# DescribeDelegationToken (41): from v1, as Kafka 4.0 (KIP-896 dropped v0, the same as v1
# but for throttling after the answer); v3 adds the owner (KIP-373) and the requester

_PRINCIPAL = Struct([F("principal_type", STRING), F("principal_name", STRING)], TokenPrincipal)

_CREATE_TOKEN_REQUEST = Struct(
    [
        F("owner_principal_type", NULLABLE_STRING, 3),
        F("owner_principal_name", NULLABLE_STRING, 3),
        F("renewers", Array(_PRINCIPAL)),
        F("max_lifetime_ms", INT64),
    ],
    CreateDelegationTokenRequest,
)
_PEOPLE = [
    F("principal_type", STRING),  # the owner's
    F("principal_name", STRING),
    F("token_requester_principal_type", STRING, 3),
    F("token_requester_principal_name", STRING, 3),
]
_CREATE_TOKEN_RESPONSE = Struct(
    [
        F("error_code", INT16),
        *_PEOPLE,
        F("issue_timestamp_ms", INT64),
        F("expiry_timestamp_ms", INT64),
        F("max_timestamp_ms", INT64),
        F("token_id", STRING),
        F("hmac", BYTES),
        F("throttle_time_ms", INT32),
    ]
)
_RENEW_TOKEN_REQUEST = Struct(
    [F("hmac", BYTES), F("renew_period_ms", INT64)], RenewDelegationTokenRequest
)
_EXPIRE_TOKEN_REQUEST = Struct(
    [F("hmac", BYTES), F("expiry_time_period_ms", INT64)], ExpireDelegationTokenRequest
)
_NEW_EXPIRY_RESPONSE = Struct(
    [F("error_code", INT16), F("expiry_timestamp_ms", INT64), F("throttle_time_ms", INT32)]
)
_DESCRIBE_TOKENS_REQUEST = Struct(
    [F("owners", Array(_PRINCIPAL, nullable=True))], DescribeDelegationTokenRequest
)
_DESCRIBE_TOKENS_RESPONSE = Struct(
    [
        F("error_code", INT16),
        F(
            "tokens",
            Array(
                Struct(
                    [
                        *_PEOPLE,
                        F("issue_timestamp", INT64),
                        F("expiry_timestamp", INT64),
                        F("max_timestamp", INT64),
                        F("token_id", STRING),
                        F("hmac", BYTES),
                        F("renewers", Array(_PRINCIPAL)),
                    ]
                )
            ),
        ),
        F("throttle_time_ms", INT32),
    ]
)


# The ACL APIs from v0 (LITERAL patterns only, as Kafka before 2.0), which Kafka 4.0
# dropped (KIP-896): librdkafka 2.x turns its ACL admin API on only if v0 is offered.
SECURITY_APIS = (
    KafkaApi(ApiKey.DESCRIBE_ACLS, 0, 3, 2, _DESCRIBE_ACLS_REQUEST, _DESCRIBE_ACLS_RESPONSE),
    KafkaApi(
        ApiKey.CREATE_ACLS,
        0,
        3,
        2,
        _CREATE_ACLS_REQUEST,
        _CREATE_ACLS_RESPONSE,
        refuse=per_item("creations", "results"),
    ),
    KafkaApi(
        ApiKey.DELETE_ACLS,
        0,
        3,
        2,
        _DELETE_ACLS_REQUEST,
        _DELETE_ACLS_RESPONSE,
        refuse=per_item("filters", "filter_results"),
    ),
    KafkaApi(
        ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS,
        0,
        0,
        0,
        _DESCRIBE_SCRAM_REQUEST,
        _DESCRIBE_SCRAM_RESPONSE,
    ),
    KafkaApi(
        ApiKey.ALTER_USER_SCRAM_CREDENTIALS,
        0,
        0,
        0,
        _ALTER_SCRAM_REQUEST,
        _ALTER_SCRAM_RESPONSE,
        refuse=_scram_refused,
    ),
    KafkaApi(
        ApiKey.DESCRIBE_CLIENT_QUOTAS,
        0,
        1,
        1,
        _DESCRIBE_QUOTAS_REQUEST,
        _DESCRIBE_QUOTAS_RESPONSE,
    ),
    KafkaApi(
        ApiKey.ALTER_CLIENT_QUOTAS,
        0,
        1,
        1,
        _ALTER_QUOTAS_REQUEST,
        _ALTER_QUOTAS_RESPONSE,
        refuse=per_topic("entries", "entries", "entity"),
    ),
    KafkaApi(
        ApiKey.CREATE_DELEGATION_TOKEN,
        1,
        3,
        2,
        _CREATE_TOKEN_REQUEST,
        _CREATE_TOKEN_RESPONSE,
    ),
    KafkaApi(ApiKey.RENEW_DELEGATION_TOKEN, 1, 2, 2, _RENEW_TOKEN_REQUEST, _NEW_EXPIRY_RESPONSE),
    KafkaApi(ApiKey.EXPIRE_DELEGATION_TOKEN, 1, 2, 2, _EXPIRE_TOKEN_REQUEST, _NEW_EXPIRY_RESPONSE),
    KafkaApi(
        ApiKey.DESCRIBE_DELEGATION_TOKEN,
        1,
        3,
        2,
        _DESCRIBE_TOKENS_REQUEST,
        _DESCRIBE_TOKENS_RESPONSE,
    ),
)
"""The ACL, SCRAM-user, quota and delegation-token APIs a Kafka-protocol listener serves."""
