"""The admin's ACL, delegation-token, config (a topic's, every broker's default) and
client-quota changes return once every broker applies them.

The broker that takes a change applies it before it answers; the others read it from
ZooKeeper's change notification a moment later. Kafka's admin returns at once, and a
user allowed a moment ago could then be refused by the next broker it reached (a CI run
of ours failed on that: a consumer's FindCoordinator, GROUP_AUTHORIZATION_FAILED), or a
job handed a new token fail to log in there. Each broker here is scripted: it holds ACLs
(or tokens, configs, quotas), answers DescribeAcls with the request's filter applied
(DescribeDelegationToken, DescribeConfigs, DescribeClientQuotas with what it holds), and
applies a change only after it has been asked ``lag`` times."""

from __future__ import annotations

import asyncio
import logging
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest

from broker.quotas import _entity as broker_entity
from client import Admin, AlterConfigOp, ConfigResource
from client.cluster import ClusterMetadata
from protocol.acls import (
    AclBinding,
    AclBindingFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from protocol.apis import (
    AclCreationResult,
    AclDescription,
    AlterClientQuotasResponse,
    AlterClientQuotasResult,
    AlterConfigsResourceResponse,
    ApiKey,
    ConfigSource,
    CreateAclsResponse,
    CreateDelegationTokenResponse,
    DeleteAclsFilterResult,
    DeleteAclsMatchingAcl,
    DeleteAclsResponse,
    DescribeAclsResource,
    DescribeAclsResponse,
    DescribeClientQuotasEntry,
    DescribeClientQuotasResponse,
    DescribeConfigsEntry,
    DescribeConfigsResponse,
    DescribeConfigsResult,
    DescribedDelegationToken,
    DescribeDelegationTokenResponse,
    ExpireDelegationTokenResponse,
    IncrementalAlterConfigsResponse,
    QuotaEntityPart,
    QuotaValue,
    RenewDelegationTokenResponse,
)
from protocol.errors import (
    ClusterAuthorizationFailedError,
    DelegationTokenAuthDisabledError,
    LeaderNotAvailableError,
    NetworkError,
    UnknownTopicOrPartitionError,
)


def _allow(user: str, operation: Operation, name: str = "orders") -> AclBinding:
    return AclBinding(
        ResourceType.TOPIC,
        name,
        PatternType.LITERAL,
        f"User:{user}",
        "*",
        operation,
        Permission.ALLOW,
    )


class _Broker:
    def __init__(self, lag: int = 0) -> None:
        self.acls: set[AclBinding] = set()
        self.lag = lag
        self.asked = 0
        self._coming: list[tuple[set[AclBinding], set[AclBinding]]] = []
        self.refusal: Exception | None = None

    def change(self, add: set[AclBinding], remove: set[AclBinding], *, now: bool) -> None:
        if now or self.lag == 0:
            self.acls = (self.acls | add) - remove
        else:
            self._coming.append((add, remove))

    def describe(self, request: Any) -> DescribeAclsResponse:
        self.asked += 1
        if self.refusal is not None:
            raise self.refusal
        if self.asked >= self.lag:
            for add, remove in self._coming:
                self.acls = (self.acls | add) - remove
            self._coming = []
        wanted = AclBindingFilter(
            ResourceType(request.resource_type_filter),
            request.resource_name_filter,
            PatternType(request.pattern_type_filter),
            request.principal_filter,
            request.host_filter,
            Operation(request.operation),
            Permission(request.permission_type),
        )
        return DescribeAclsResponse(
            resources=[
                DescribeAclsResource(
                    resource_type=a.resource_type,
                    resource_name=a.resource_name,
                    pattern_type=a.pattern_type,
                    acls=[
                        AclDescription(
                            principal=a.principal,
                            host=a.host,
                            operation=a.operation,
                            permission_type=a.permission,
                        )
                    ],
                )
                for a in sorted(self.acls)
                if wanted.matches(a)
            ]
        )


class _Cluster:
    """Brokers 1-3; the admin's CreateAcls and DeleteAcls reach broker 1."""

    def __init__(self, **lags: int) -> None:
        self.brokers = {b: _Broker(lags.get(f"b{b}", 0)) for b in (1, 2, 3)}
        self.down: set[int] = set()
        self.attempts = dict.fromkeys(self.brokers, 0)

    async def fetch_metadata(self, _topics: Any, **_: Any) -> ClusterMetadata:
        return ClusterMetadata(brokers=MappingProxyType(dict.fromkeys(self.brokers)))  # type: ignore[arg-type]

    async def send_any(self, api_key: ApiKey, request: Any, **_: Any) -> Any:
        if api_key == ApiKey.CREATE_ACLS:
            made = {
                AclBinding.of(
                    c.resource_type,
                    c.resource_name,
                    c.resource_pattern_type,
                    c.principal,
                    c.host,
                    c.operation,
                    c.permission_type,
                )
                for c in request.creations
            }
            for node, broker in self.brokers.items():
                broker.change(made, set(), now=node == 1)
            return CreateAclsResponse(results=[AclCreationResult() for _ in request.creations])
        assert api_key == ApiKey.DELETE_ACLS
        gone = set(self.brokers[1].acls)  # (these tests delete everything)
        for node, broker in self.brokers.items():
            broker.change(set(), gone, now=node == 1)
        return DeleteAclsResponse(
            filter_results=[
                DeleteAclsFilterResult(
                    matching_acls=[
                        DeleteAclsMatchingAcl(
                            resource_type=a.resource_type,
                            resource_name=a.resource_name,
                            pattern_type=a.pattern_type,
                            principal=a.principal,
                            host=a.host,
                            operation=a.operation,
                            permission_type=a.permission,
                        )
                        for a in sorted(gone)
                    ]
                )
            ]
        )

    async def send(self, node: int, api_key: ApiKey, request: Any, **_: Any) -> Any:
        assert api_key == ApiKey.DESCRIBE_ACLS
        self.attempts[node] += 1
        if node in self.down:
            raise NetworkError(f"connection to broker {node} refused")
        return self.brokers[node].describe(request)


def _admin(cluster: _Cluster, timeout_ms: int = 5000) -> Admin:
    admin = Admin(bootstrap_servers="127.0.0.1:1", request_timeout_ms=timeout_ms)
    admin._cluster = cluster  # type: ignore[assignment]
    admin._state = "running"
    return admin


async def test_create_acls_returns_once_every_broker_has_them() -> None:
    cluster = _Cluster(b3=4)
    made = {_allow("bob", Operation.READ), _allow("bob", Operation.DESCRIBE)}
    await _admin(cluster).create_acls(made)
    assert all(b.acls == made for b in cluster.brokers.values())
    assert cluster.brokers[3].asked == 4  # asked again until it had them
    assert cluster.brokers[1].asked == cluster.brokers[2].asked == 1


async def test_one_describe_per_broker_asks_for_bindings_of_several_resources() -> None:
    cluster = _Cluster(b2=2)
    made = {_allow("bob", Operation.READ), _allow("alice", Operation.WRITE, "payments")}
    await _admin(cluster).create_acls(made)
    assert cluster.brokers[2].acls == made and cluster.brokers[2].asked == 2


async def test_delete_acls_returns_once_no_broker_applies_them() -> None:
    cluster = _Cluster()
    admin = _admin(cluster)
    await admin.create_acls([_allow("bob", Operation.READ)])
    cluster.brokers[2].lag = cluster.brokers[2].asked + 3
    deleted = await admin.delete_acls([AclBindingFilter()])
    assert deleted == [_allow("bob", Operation.READ)]
    assert all(not b.acls for b in cluster.brokers.values())  # a DENY's removal too


async def test_a_broker_that_cannot_be_reached_is_not_waited_for() -> None:
    cluster = _Cluster(b3=1_000)
    cluster.down.add(3)
    await _admin(cluster).create_acls([_allow("bob", Operation.READ)])
    assert cluster.attempts[3] == 1  # tried once, then let be (it reads them as it starts)


async def test_past_the_timeout_the_change_stands_and_the_log_says_who_lags(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = _Cluster(b2=1_000_000)
    with caplog.at_level(logging.WARNING, logger="headwater.client.admin"):
        await _admin(cluster, timeout_ms=100).create_acls([_allow("bob", Operation.READ)])
    assert cluster.brokers[2].asked > 1
    assert "broker(s) 2 had not applied the change" in caplog.text


async def test_an_admin_that_may_not_describe_acls_does_not_wait() -> None:
    cluster = _Cluster(b3=1_000_000)
    cluster.brokers[3].refusal = ClusterAuthorizationFailedError("may not Describe")
    await _admin(cluster).create_acls([_allow("bob", Operation.READ)])
    assert cluster.brokers[3].asked == 1


# --- delegation tokens ---------------------------------------------------------------------

_HMAC = b"\x01" * 32


class _TokenCluster:
    """Brokers 1-2, each holding {hmac: expiry}; the admin's requests reach broker 1, and
    broker 2 applies each change after it has been asked ``lag`` more times."""

    def __init__(self, lag: int) -> None:
        self.held: dict[int, dict[bytes, int]] = {1: {}, 2: {}}
        self.lag = lag
        self.asked = {1: 0, 2: 0}
        self._coming: list[tuple[int, dict[bytes, int]]] = []  # (asked by then, state)
        self.disabled: set[int] = set()
        self.swept = False
        self.owners_asked: Any = None

    async def fetch_metadata(self, _topics: Any, **_: Any) -> ClusterMetadata:
        return ClusterMetadata(brokers=MappingProxyType(dict.fromkeys(self.held)))  # type: ignore[arg-type]

    def _change(self, state: dict[bytes, int]) -> None:
        self.held[1] = dict(state)
        self._coming.append((self.asked[2] + self.lag, dict(state)))

    async def send_any(self, api_key: ApiKey, request: Any, **_: Any) -> Any:
        if api_key == ApiKey.CREATE_DELEGATION_TOKEN:
            self._change({_HMAC: 1_000})
            return CreateDelegationTokenResponse(
                principal_type="User",
                principal_name="alice",
                token_id="t1",
                hmac=_HMAC,
                expiry_timestamp_ms=1_000,
                max_timestamp_ms=9_000,
            )
        if api_key == ApiKey.RENEW_DELEGATION_TOKEN:
            self._change({_HMAC: 2_000})
            return RenewDelegationTokenResponse(expiry_timestamp_ms=2_000)
        assert api_key == ApiKey.EXPIRE_DELEGATION_TOKEN
        if request.expiry_time_period_ms < 0:
            self._change({})
            return ExpireDelegationTokenResponse(expiry_timestamp_ms=500)
        self._change({_HMAC: 1_500})
        return ExpireDelegationTokenResponse(expiry_timestamp_ms=1_500)

    async def send(self, node: int, api_key: ApiKey, request: Any, **_: Any) -> Any:
        assert api_key == ApiKey.DESCRIBE_DELEGATION_TOKEN
        self.owners_asked = request.owners
        self.asked[node] += 1
        if node in self.disabled:  # (the connection raises an answer's error)
            raise DelegationTokenAuthDisabledError("delegation tokens are off")
        if node == 2 and self.swept:
            self.held[2] = {}  # its own sweep deleted the token, before it read the change
        if node == 2:
            while self._coming and self._coming[0][0] <= self.asked[2]:
                self.held[2] = self._coming.pop(0)[1]
        return DescribeDelegationTokenResponse(
            tokens=[
                DescribedDelegationToken(
                    principal_type="User",
                    principal_name="alice",
                    token_requester_principal_type="User",
                    token_requester_principal_name="alice",
                    issue_timestamp=0,
                    expiry_timestamp=expiry,
                    max_timestamp=9_000,
                    token_id="t1",
                    hmac=hmac,
                )
                for hmac, expiry in self.held[node].items()
            ]
        )


async def test_a_new_token_is_on_every_broker_when_create_returns() -> None:
    cluster = _TokenCluster(lag=3)
    token = await _admin(cluster).create_delegation_token()  # type: ignore[arg-type]
    assert token.hmac == _HMAC and cluster.held[2] == {_HMAC: 1_000}
    assert cluster.asked[2] == 3
    # each broker lists its owner's tokens only, not every token the caller may see
    assert [(o.principal_type, o.principal_name) for o in cluster.owners_asked] == [
        ("User", "alice")
    ]


async def test_renew_and_expire_return_once_every_broker_has_the_new_expiry() -> None:
    cluster = _TokenCluster(lag=2)
    admin = _admin(cluster)  # type: ignore[arg-type]
    await admin.create_delegation_token()
    assert await admin.renew_delegation_token(_HMAC, 60_000) == 2_000
    assert cluster.held[2] == {_HMAC: 2_000}  # not the old expiry: a login past it works
    assert await admin.expire_delegation_token(_HMAC, 0) == 1_500
    assert cluster.held[2] == {_HMAC: 1_500}
    await admin.expire_delegation_token(_HMAC)  # at once: deleted, on every broker
    assert cluster.held[2] == {}  # a job's login there fails now, as on the first


async def test_a_broker_with_tokens_off_is_not_waited_for() -> None:
    cluster = _TokenCluster(lag=1_000_000)
    cluster.disabled.add(2)
    await _admin(cluster).create_delegation_token()  # type: ignore[arg-type]
    assert cluster.asked[2] == 1


async def test_a_token_expired_and_swept_before_a_broker_read_the_expiry_is_settled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """From a review: a broker may go from the old expiry straight to no token (its sweep
    deleted the expired token first); waiting for the new expiry there never ended."""
    cluster = _TokenCluster(lag=0)
    admin = _admin(cluster, timeout_ms=1_000)  # type: ignore[arg-type]
    await admin.create_delegation_token()
    cluster.lag = 1_000_000
    cluster.swept = True
    with caplog.at_level(logging.WARNING, logger="headwater.client.admin"):
        assert await admin.expire_delegation_token(_HMAC, 0) == 1_500
    assert cluster.held[2] == {} and "had not applied" not in caplog.text


class _Hung(_Cluster):
    """Broker 3 takes the request and never answers; broker 2 lags a few asks."""

    async def send(self, node: int, api_key: ApiKey, request: Any, **kw: Any) -> Any:
        if node == 3:
            self.attempts[3] += 1
            await asyncio.Event().wait()
        return await super().send(node, api_key, request, **kw)


async def test_a_broker_that_does_not_answer_holds_up_no_other_and_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """From a review: each round waited for its slowest broker, so a lagging broker was
    not asked again while one hung, and the warning named the wrong one."""
    cluster = _Hung(b2=4)
    with caplog.at_level(logging.WARNING, logger="headwater.client.admin"):
        await _admin(cluster, timeout_ms=300).create_acls([_allow("bob", Operation.READ)])
    assert cluster.brokers[2].asked == 4 and cluster.attempts[3] == 1
    assert "broker(s) 3 had not applied the change" in caplog.text


async def test_the_wait_never_fails_a_change_already_made(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """From a review: the metadata read for the wait raised after the change was made; a
    new token's password was lost with it (and a retry would make a second token)."""

    async def unreachable(*_: Any, **__: Any) -> ClusterMetadata:
        raise NetworkError("no broker answers")

    acls = _Cluster()
    acls.fetch_metadata = unreachable  # type: ignore[method-assign]
    tokens = _TokenCluster(lag=0)
    tokens.fetch_metadata = unreachable  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="headwater.client.admin"):
        await _admin(acls).create_acls([_allow("bob", Operation.READ)])
        token = await _admin(tokens).create_delegation_token()  # type: ignore[arg-type]
    assert acls.brokers[1].acls == {_allow("bob", Operation.READ)} and token.hmac == _HMAC
    assert caplog.text.count("whether every broker has applied it is unknown") == 2


# --- every broker's default configs --------------------------------------------------------


class _ConfigCluster:
    """Brokers 1-3, each with its every-broker defaults; a change goes to the broker the
    admin picks, which applies it at once, and broker 3 after it has been asked ``lag``
    more times. Each broker spells a value its own way: upper case here."""

    def __init__(self, lag: int) -> None:
        self.defaults: dict[int, dict[str, str]] = {1: {}, 2: {}, 3: {}}
        self.lag = lag
        self.asked = {1: 0, 2: 0, 3: 0}
        self.took: list[int] = []
        self._coming: list[tuple[int, dict[str, str]]] = []
        self.down: set[int] = set()
        self.extra: dict[str, str] = {}  # what broker 3 alone shows (a newer version's)

    async def connect(self, node: int, _purpose: str = "") -> None:
        if node in self.down:
            raise NetworkError(f"connection to broker {node} refused")

    def connection_now(self, node: int, _purpose: str = "") -> None:
        return None  # none open yet: lowest id first

    async def fetch_metadata(self, _topics: Any, **_: Any) -> ClusterMetadata:
        return ClusterMetadata(brokers=MappingProxyType(dict.fromkeys(self.defaults)))  # type: ignore[arg-type]

    async def send_any(self, api_key: ApiKey, request: Any, **_: Any) -> Any:
        raise AssertionError("a default's change goes to a broker the admin picked")

    async def send(self, node: int, api_key: ApiKey, request: Any, **_: Any) -> Any:
        if api_key in (ApiKey.INCREMENTAL_ALTER_CONFIGS, ApiKey.ALTER_CONFIGS):
            self.took.append(node)
            (resource,) = request.resources
            replace = api_key == ApiKey.ALTER_CONFIGS
            changed = {} if replace else dict(self.defaults[node])
            for c in resource.configs:
                if c.value is None or getattr(c, "config_operation", 0) == 1:  # DELETE
                    changed.pop(c.name, None)
                else:
                    changed[c.name] = c.value.upper()
            for other in self.defaults:
                if other == node or other != 3:
                    self.defaults[other] = dict(changed)
                else:
                    self._coming.append((self.asked[3] + self.lag, changed))
            return IncrementalAlterConfigsResponse(
                responses=[
                    AlterConfigsResourceResponse(
                        resource_type=resource.resource_type, resource_name=""
                    )
                ]
            )
        assert api_key == ApiKey.DESCRIBE_CONFIGS
        self.asked[node] += 1
        if node == 3:
            while self._coming and self._coming[0][0] <= self.asked[3]:
                self.defaults[3] = self._coming.pop(0)[1]
        return DescribeConfigsResponse(
            results=[
                DescribeConfigsResult(
                    resource_type=4,
                    resource_name="",
                    configs=[
                        DescribeConfigsEntry(name=n, value=v)
                        for n, v in sorted(
                            {**self.defaults[node], **(self.extra if node == 3 else {})}.items()
                        )
                    ],
                )
            ]
        )


async def test_a_default_changed_is_in_force_on_every_broker_when_the_call_returns() -> None:
    cluster = _ConfigCluster(lag=3)
    admin = _admin(cluster)  # type: ignore[arg-type]
    default = ConfigResource("broker", "")
    await admin.incremental_alter_configs({default: [AlterConfigOp("log.cleaner.x", "on")]})
    assert cluster.took == [1]  # (the broker picked: its answer is the one to agree with)
    assert all(d == {"log.cleaner.x": "ON"} for d in cluster.defaults.values())
    assert cluster.asked[3] == 3
    await admin.incremental_alter_configs(
        {default: [AlterConfigOp("log.cleaner.x", op_type="DELETE")]}
    )
    assert all(d == {} for d in cluster.defaults.values())


async def test_a_broker_own_config_or_a_validation_waits_for_no_other() -> None:
    cluster = _ConfigCluster(lag=1_000_000)
    admin = _admin(cluster, timeout_ms=100)  # type: ignore[arg-type]
    await admin.incremental_alter_configs(
        {ConfigResource("broker", ""): [AlterConfigOp("log.cleaner.x", "on")]},
        validate_only=True,
    )
    await admin.incremental_alter_configs(
        {ConfigResource("broker", "2"): [AlterConfigOp("log.cleaner.x", "on")]}
    )
    assert cluster.asked == {1: 0, 2: 0, 3: 0}


async def test_only_the_settings_changed_are_compared(caplog: pytest.LogCaptureFixture) -> None:
    """From a review: the whole set was compared, so a default one broker leaves out (a
    newer version's, which an older broker ignores) held up every later change for the
    whole timeout, with a warning that said it would catch up."""
    cluster = _ConfigCluster(lag=2)
    cluster.extra = {"newer.x": "1"}
    with caplog.at_level(logging.WARNING, logger="headwater.client.admin"):
        await _admin(cluster, timeout_ms=2_000).incremental_alter_configs(  # type: ignore[arg-type]
            {ConfigResource("broker", ""): [AlterConfigOp("log.cleaner.x", "on")]}
        )
    assert cluster.defaults[3] == {"log.cleaner.x": "ON"} and cluster.asked[3] == 2
    assert "had not applied" not in caplog.text


async def test_alter_configs_waits_until_the_defaults_it_drops_are_gone_everywhere() -> None:
    cluster = _ConfigCluster(lag=0)
    admin = _admin(cluster)  # type: ignore[arg-type]
    await admin.alter_configs([ConfigResource("broker", "", {"a.x": "1"})])
    cluster.lag, asked = 3, cluster.asked[3]
    await admin.alter_configs([ConfigResource("broker", "", {"b.x": "2"})])
    assert cluster.defaults[3] == {"b.x": "2"}  # a.x gone there too
    assert cluster.asked[3] - asked == 3  # (until a.x is gone there, and b.x set)


async def test_a_default_goes_to_the_first_broker_that_can_be_reached() -> None:
    """From a review: the lowest id was picked whether it could be reached or not (a
    broker killed stays in the metadata until its session ends): the change failed
    where any broker used to take it."""
    cluster = _ConfigCluster(lag=0)
    cluster.down.add(1)
    await _admin(cluster).incremental_alter_configs(  # type: ignore[arg-type]
        {ConfigResource("broker", ""): [AlterConfigOp("log.cleaner.x", "on")]}
    )
    assert cluster.took == [2] and cluster.defaults[3] == {"log.cleaner.x": "ON"}


# --- a topic's configs -----------------------------------------------------------------------


class _TopicCluster:
    """Brokers 1-3 describing topic "orders": a setting is the topic's own (its value from
    ZooKeeper) or the broker's default, broker 3's default retention its own. A change goes
    to the broker the admin picks; broker 3 describes it only once it has been asked
    ``lag`` more times (ZooKeeper's answer to it lags, or it is an older version that does
    not apply on a describe: either way it has not applied the change)."""

    def __init__(self, lag: int) -> None:
        self.own: dict[int, dict[str, str]] = {1: {}, 2: {}, 3: {}}
        self.lag = lag
        self.asked = {1: 0, 2: 0, 3: 0}
        self.took: list[int] = []
        self._coming: list[tuple[int, dict[str, str]]] = []
        self.deleted_on: set[int] = set()  # brokers on which "deleted" is gone
        self.connected: dict[int, float | None] = {}  # node -> its oldest request unanswered
        self.gone: set[int] = set()  # connected, but its connection lost with the change
        self.dropped: set[int] = set()  # left the metadata once it was picked

    async def connect(self, node: int, _purpose: str = "") -> None:
        if node in self.dropped and self.took.count(-node) == 1:
            raise LeaderNotAvailableError(f"broker {node} is not in the cluster metadata")
        if node in self.dropped:
            self.took.append(-node)  # (picked: connected to once)

    def connection_now(self, node: int, _purpose: str = "") -> Any:
        if node not in self.connected:
            return None
        return SimpleNamespace(waiting_since=lambda: self.connected[node])

    async def fetch_metadata(self, _topics: Any, **_: Any) -> ClusterMetadata:
        return ClusterMetadata(brokers=MappingProxyType(dict.fromkeys(self.own)))  # type: ignore[arg-type]

    async def send_any(self, api_key: ApiKey, request: Any, **_: Any) -> Any:
        assert self.gone | self.dropped, "a topic's change goes to a broker the admin picked"
        return await self.send(min(set(self.own) - self.gone - self.dropped), api_key, request)

    async def send(self, node: int, api_key: ApiKey, request: Any, **_: Any) -> Any:
        if node in self.gone:
            raise NetworkError(f"connection to broker {node} lost")
        if api_key in (ApiKey.INCREMENTAL_ALTER_CONFIGS, ApiKey.ALTER_CONFIGS):
            self.took.append(node)
            resource = request.resources[0]  # (each topic's change is the same here)
            changed = {} if api_key == ApiKey.ALTER_CONFIGS else dict(self.own[node])
            for c in resource.configs:
                if c.value is None or getattr(c, "config_operation", 0) == 1:  # DELETE
                    changed.pop(c.name, None)
                else:
                    changed[c.name] = c.value
            for other in self.own:
                if other != 3:
                    self.own[other] = dict(changed)
                else:
                    self._coming.append((self.asked[3] + self.lag, changed))
            return IncrementalAlterConfigsResponse(
                responses=[
                    AlterConfigsResourceResponse(resource_type=2, resource_name=r.resource_name)
                    for r in request.resources
                ]
            )
        assert api_key == ApiKey.DESCRIBE_CONFIGS
        self.asked[node] += 1
        if node == 3:
            while self._coming and self._coming[0][0] <= self.asked[3]:
                self.own[3] = self._coming.pop(0)[1]
        defaults = {"max.message.bytes": "1048588", "retention.ms": str(node * 1000)}
        own = self.own[node]
        return DescribeConfigsResponse(
            results=[
                DescribeConfigsResult(
                    resource_type=2,
                    resource_name=r.resource_name,
                    error_code=UnknownTopicOrPartitionError.code,
                )
                if r.resource_name == "deleted" and node in self.deleted_on
                else DescribeConfigsResult(
                    resource_type=2,
                    resource_name=r.resource_name,
                    configs=[
                        DescribeConfigsEntry(
                            name=n,
                            value=own.get(n, v),
                            config_source=ConfigSource.DYNAMIC_TOPIC_CONFIG
                            if n in own
                            else ConfigSource.DEFAULT_CONFIG,
                        )
                        for n, v in sorted(defaults.items())
                    ],
                )
                for r in request.resources
            ]
        )


async def test_a_topic_config_changed_is_in_force_on_every_broker_when_the_call_returns() -> None:
    cluster = _TopicCluster(lag=3)
    admin = _admin(cluster)  # type: ignore[arg-type]
    orders = ConfigResource("topic", "orders")
    await admin.incremental_alter_configs({orders: [AlterConfigOp("max.message.bytes", "1000")]})
    assert cluster.took == [1]  # (the broker picked: its answer is the one to agree with)
    assert all(own == {"max.message.bytes": "1000"} for own in cluster.own.values())
    assert cluster.asked == {1: 2, 2: 1, 3: 3}  # broker 1: once for the answer, once asked
    await admin.alter_configs([ConfigResource("topic", "orders", {"retention.ms": "5"})])
    assert all(own == {"retention.ms": "5"} for own in cluster.own.values())  # 1000 gone too


async def test_a_topic_setting_left_to_each_broker_default_holds_up_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each broker shows its own default for a setting the topic does not set (broker
    3's retention here): only the topic's own settings must agree."""
    cluster = _TopicCluster(lag=2)
    with caplog.at_level(logging.WARNING, logger="headwater.client.admin"):
        await _admin(cluster, timeout_ms=2_000).incremental_alter_configs(  # type: ignore[arg-type]
            {ConfigResource("topic", "orders"): [AlterConfigOp("max.message.bytes", "1000")]}
        )
    assert cluster.asked[3] == 2
    assert "had not applied" not in caplog.text


async def test_a_topic_deleted_meanwhile_is_not_waited_for_and_the_others_are() -> None:
    cluster = _TopicCluster(lag=3)
    cluster.deleted_on.add(3)
    change = [AlterConfigOp("max.message.bytes", "1000")]
    await _admin(cluster, timeout_ms=5_000).incremental_alter_configs(  # type: ignore[arg-type]
        {ConfigResource("topic", "deleted"): change, ConfigResource("topic", "orders"): change}
    )
    assert cluster.asked[3] == 3 and cluster.own[3] == {"max.message.bytes": "1000"}


async def test_a_broker_already_connected_is_picked_and_one_gone_is_stood_in_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """From reviews: the broker picked was the lowest id that could be reached, where any
    broker used to take a topic's change: a broker paused (not yet dropped from the
    metadata) held the change up for its connection timeout, and one gone between the
    pick and the change failed it, with no other tried (left the metadata, or an APPEND
    whose connection failed before anything was sent); and a change another broker took
    was then waited for against the one picked."""
    cluster = _TopicCluster(lag=0)
    cluster.connected = {2: None}
    admin = _admin(cluster)  # type: ignore[arg-type]
    orders = ConfigResource("topic", "orders")

    async def change(value: str, op: str = "SET") -> None:
        await admin.incremental_alter_configs(
            {orders: [AlterConfigOp("cleanup.policy", value, op)]}
        )

    await change("compact")
    assert cluster.took == [2]  # connected: first
    cluster.connected = {2: asyncio.get_running_loop().time() - 60}  # stalled: last
    await change("delete")
    assert cluster.took == [2, 1]
    cluster.connected = {2: None}
    cluster.dropped = {2}  # picked, then gone from the metadata before the change
    with caplog.at_level(logging.WARNING, logger="headwater.client.admin"):
        await admin.incremental_alter_configs(
            {orders: [AlterConfigOp("cleanup.policy", "compact", "APPEND")]}
        )
    assert cluster.took == [2, 1, -2, 1] and cluster.own[1] == {"cleanup.policy": "compact"}
    assert caplog.text.count("broker 2, picked to take it, could not") == 1
    cluster.dropped, cluster.gone = set(), {2}  # connected, its connection lost with it
    await change("delete")
    assert cluster.took[4:] == [1] and cluster.own[1] == {"cleanup.policy": "delete"}
    assert caplog.text.count("could not, and another did") == 2


# --- client quotas ---------------------------------------------------------------------------


class _QuotaCluster:
    """Brokers 1-3, each with its copy of the quotas (entity -> {key: value}); a change
    reaches broker 1 at once and broker 3 once it has been asked ``lag`` more times. An
    entity is named as a broker names it (an ip in one spelling)."""

    def __init__(self, lag: int) -> None:
        self.held: dict[int, dict[frozenset[Any], dict[str, float]]] = {1: {}, 2: {}, 3: {}}
        self.lag = lag
        self.asked = {1: 0, 2: 0, 3: 0}
        self._coming: list[tuple[int, dict[frozenset[Any], dict[str, float]]]] = []

    async def fetch_metadata(self, _topics: Any, **_: Any) -> ClusterMetadata:
        return ClusterMetadata(brokers=MappingProxyType(dict.fromkeys(self.held)))  # type: ignore[arg-type]

    async def send_any(self, api_key: ApiKey, request: Any, **_: Any) -> Any:
        assert api_key == ApiKey.ALTER_CLIENT_QUOTAS
        quotas = {e: dict(v) for e, v in self.held[1].items()}
        for entry in request.entries:
            entity = frozenset(broker_entity(entry.entity))  # (the broker's own naming)
            values = quotas.setdefault(entity, {})
            for op in entry.ops:
                if op.remove:
                    values.pop(op.key, None)
                else:
                    ip = op.key == "connection_creation_rate"
                    values[op.key] = float(round(op.value)) if ip else op.value
            if not values:
                del quotas[entity]
        self.held[1] = self.held[2] = quotas
        self._coming.append((self.asked[3] + self.lag, quotas))
        return AlterClientQuotasResponse(
            entries=[AlterClientQuotasResult(entity=e.entity) for e in request.entries]
        )

    async def send(self, node: int, api_key: ApiKey, request: Any, **_: Any) -> Any:
        assert api_key == ApiKey.DESCRIBE_CLIENT_QUOTAS
        assert not request.components and not request.strict  # every entity
        self.asked[node] += 1
        if node == 3:
            while self._coming and self._coming[0][0] <= self.asked[3]:
                self.held[3] = self._coming.pop(0)[1]
        return DescribeClientQuotasResponse(
            entries=[
                DescribeClientQuotasEntry(
                    entity=[QuotaEntityPart(entity_type=t, entity_name=n) for t, n in sorted(e)],
                    values=[QuotaValue(key=k, value=v) for k, v in values.items()],
                )
                for e, values in self.held[node].items()
            ]
        )


async def test_client_quotas_changed_are_in_force_on_every_broker_when_the_call_returns() -> None:
    cluster = _QuotaCluster(lag=3)
    admin = _admin(cluster)  # type: ignore[arg-type]
    await admin.alter_client_quotas(
        {
            (("user", "alice"), ("client-id", "app")): {"producer_byte_rate": 1024},
            (("ip", " 0:0::1"),): {"connection_creation_rate": 10},  # kept at ::1
        }
    )
    assert cluster.held[3] == {
        frozenset({("user", "alice"), ("client-id", "app")}): {"producer_byte_rate": 1024.0},
        frozenset({("ip", "::1")}): {"connection_creation_rate": 10.0},
    }
    assert cluster.asked[3] == 3
    await admin.alter_client_quotas({(("ip", "::1"),): {"connection_creation_rate": None}})
    assert frozenset({("ip", "::1")}) not in cluster.held[3]  # removed everywhere


async def test_a_quota_check_only_waits_for_nothing() -> None:
    cluster = _QuotaCluster(lag=1_000_000)
    await _admin(cluster, timeout_ms=100).alter_client_quotas(  # type: ignore[arg-type]
        {(("user", "alice"),): {"producer_byte_rate": 1024}}, validate_only=True
    )
    assert cluster.asked == {1: 0, 2: 0, 3: 0}
