"""Cosmos-only behaviour: containers, ttl on stored items, request shapes on the hot path,
throttling, Entra ID auth. Runs against the protocol server (through a proxy where it must see
or disturb the traffic)."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from app import JsonLogFormatter
from config import Settings
from storage.base import StoreError, StoreThrottled
from storage.cosmos import CONTAINER_SPECS, CosmosConfig, CosmosStore
from storage.models import Role, SummaryQuery
from tests.cosmos_server import CosmosServer
from tests.storage.edge import CosmosEdge
from tests.storage.support import cosmos_config, delta, message

pytestmark = pytest.mark.cosmos

ALL_CONTAINERS = ["messages", "conversations", "botstate", "usage", "audit"]


@pytest.fixture
async def raw_client(cosmos_server: CosmosServer) -> AsyncIterator[CosmosClient]:
    """The SDK itself, to look at what the store wrote."""
    async with CosmosClient(
        cosmos_server.endpoint, cosmos_server.key, connection_verify=False
    ) as client:
        yield client


async def _open(config: CosmosConfig, credential: Any = None) -> CosmosStore:
    store = CosmosStore(config, credential)
    await store.open()
    return store


async def _container_properties(client: CosmosClient, database: str, name: str) -> dict[str, Any]:
    return dict(await client.get_database_client(database).get_container_client(name).read())


# --- containers


async def test_missing_containers_are_named_when_creation_is_off(
    cosmos_server: CosmosServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = cosmos_config(cosmos_server, create_containers=False)
    with (
        caplog.at_level(logging.ERROR, logger="storage.cosmos"),
        pytest.raises(StoreError) as raised,
    ):
        await _open(config)
    message_text = str(raised.value)
    for name in ALL_CONTAINERS:
        assert name in message_text
    assert config.database in message_text
    assert "COSMOS_CREATE_CONTAINERS" in message_text
    assert message_text in caplog.text


async def test_only_the_missing_containers_are_named(
    cosmos_server: CosmosServer, raw_client: CosmosClient
) -> None:
    config = cosmos_config(cosmos_server, create_containers=False, audit_container="audit-log")
    database = await raw_client.create_database_if_not_exists(config.database)
    await database.create_container("messages", PartitionKey("/conversationId"))
    await database.create_container("conversations", PartitionKey("/userId"))
    with pytest.raises(StoreError) as raised:
        await _open(config)
    named = str(raised.value).split("container(s) ")[1].split(" (")[0]
    assert named == "botstate, usage, audit-log"


async def test_precreated_containers_are_used_without_creating(
    cosmos_server: CosmosServer,
) -> None:
    creator = await _open(cosmos_config(cosmos_server))
    await creator.add_message(message("conv-1", 1))
    await creator.close()
    config = cosmos_config(cosmos_server, database=creator._config.database)
    reader = await _open(CosmosConfig(**{**config.__dict__, "create_containers": False}))
    try:
        assert len(await reader.conversation_messages("conv-1")) == 1
        await reader.ping()
    finally:
        await reader.close()


async def test_a_container_with_the_wrong_partition_key_is_refused(
    cosmos_server: CosmosServer, raw_client: CosmosClient
) -> None:
    config = cosmos_config(cosmos_server)
    database = await raw_client.create_database_if_not_exists(config.database)
    await database.create_container("messages", PartitionKey("/id"))
    with pytest.raises(StoreError, match=r"messages.*partitioned by"):
        await _open(config)


async def test_infrastructure_drift_is_logged(
    cosmos_server: CosmosServer, raw_client: CosmosClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Containers as an older Bicep made them: right keys, no TTL, no composite indexes.
    config = cosmos_config(cosmos_server, create_containers=False, retention_days=30)
    database = await raw_client.create_database_if_not_exists(config.database)
    for spec in CONTAINER_SPECS:
        await database.create_container(spec.role, PartitionKey(spec.partition_key))
    with caplog.at_level(logging.WARNING, logger="storage.cosmos"):
        store = await _open(config)
    await store.close()
    assert "messages has TTL off" in caplog.text
    assert "usage has TTL off" in caplog.text
    assert "botstate has TTL off" in caplog.text
    assert "conversations lacks the composite index /lastActivityAt descending" in caplog.text
    assert "audit lacks the composite index /at descending" in caplog.text


async def test_created_containers_carry_keys_ttl_and_indexes(
    cosmos_server: CosmosServer, raw_client: CosmosClient
) -> None:
    config = cosmos_config(cosmos_server, retention_days=30)
    store = await _open(config)
    await store.close()
    expected_ttl = {
        "messages": 30 * 86400,
        "conversations": 30 * 86400,
        "usage": -1,
        "botstate": -1,
        "audit": None,
    }
    for spec in CONTAINER_SPECS:
        properties = await _container_properties(raw_client, config.database, spec.role)
        assert properties["partitionKey"]["paths"] == [spec.partition_key]
        assert properties.get("defaultTtl") == expected_ttl[spec.role], spec.role
    conversations = await _container_properties(raw_client, config.database, "conversations")
    assert conversations["indexingPolicy"]["compositeIndexes"] == [
        [
            {"path": "/lastActivityAt", "order": "descending"},
            {"path": "/id", "order": "descending"},
        ]
    ]


# --- what is stored


async def test_stored_items_carry_ttl_and_cosmos_safe_ids(
    cosmos_server: CosmosServer, raw_client: CosmosClient
) -> None:
    config = cosmos_config(cosmos_server, retention_days=7)
    store = await _open(config)
    conversation = "a:1Xk" + "x" * 300 + ";messageid=1234@thread.tacv2/odd\\id?#"
    try:
        await store.add_message(message(conversation, 1, id=conversation))
        await store.apply_summary_delta(delta(conversation, messages=1))
        await store.add_to_counter("user:u1", "2025-03-01", 3, 10, 3600)
        await store.write_state("waiting", {"text": "hi"}, None, owner="user-1", expires=True)
        await store.write_state("consent", {"version": "1"}, None, owner="user-1")
    finally:
        await store.close()
    database = raw_client.get_database_client(config.database)

    async def items(container: str, key: str, value: str) -> list[dict[str, Any]]:
        return [
            item
            async for item in database.get_container_client(container).query_items(
                f"SELECT * FROM c WHERE c.{key} = @v",  # noqa: S608 - constant field names
                parameters=[{"name": "@v", "value": value}],
                partition_key=value,
            )
        ]

    stored_message = await items("messages", "conversationId", conversation)
    summaries = await items("conversations", "userId", "user-1")
    counters = await items("usage", "scope", "user:u1")
    waiting = (await items("botstate", "id", "waiting"))[0]
    consent = (await items("botstate", "id", "consent"))[0]
    assert (waiting["owner"], waiting["ttl"]) == ("user-1", 7 * 86400)
    assert consent["owner"] == "user-1"
    assert "ttl" not in consent  # never expires: the container's default is -1
    for item in (stored_message[0], summaries[0]):
        assert "ttl" not in item  # the containers' defaultTtl expires them
        assert len(item["id"]) <= 255
        assert not set("/\\?#") & set(item["id"])
        assert item["rawId"] == conversation
    assert stored_message[0]["conversationId"] == conversation
    assert summaries[0]["type"] == "conversation"
    assert counters[0]["ttl"] == 3600
    assert counters[0]["total"] == 3
    assert summaries[0]["lastActivityAt"].endswith("Z")
    assert len(summaries[0]["lastActivityAt"]) == len("2025-03-01T09:00:00.000000Z")


# --- request shapes and charges


async def test_turn_hot_path_is_point_operations_and_one_single_partition_query(
    cosmos_server: CosmosServer, edge: CosmosEdge
) -> None:
    store = await _open(cosmos_config(cosmos_server, endpoint=edge.endpoint))
    try:
        await store.add_message(message("conv-1", 1))  # warm the container cache
        edge.clear()

        await store.add_message(message("conv-1", 2, role=Role.ASSISTANT))
        assert [(s.method, s.status) for s in edge.document_requests()] == [("POST", 201)]
        edge.clear()

        window = await store.recent_messages("conv-1", 10)
        assert [m.seq for m in window] == [1, 2]
        queries = edge.document_requests()
        assert len(queries) == 1
        assert queries[0].headers["x-ms-documentdb-isquery"].lower() == "true"
        assert queries[0].headers["x-ms-documentdb-partitionkey"] == '["conv-1"]'
        assert "x-ms-documentdb-query-enablecrosspartition" not in queries[0].headers
        edge.clear()

        await store.apply_summary_delta(delta("conv-1", messages=2))
        await store.apply_summary_delta(delta("conv-1", messages=2))
        await store.add_to_counter("user:user-1", "day", 50, 1000, 86400)
        for seen in edge.document_requests():
            assert "x-ms-documentdb-query-enablecrosspartition" not in seen.headers
            assert "x-ms-documentdb-partitionkey" in seen.headers or seen.method == "POST"
        # Summary: read + write each time (404 + create, then read + conditional replace).
        methods = [s.method for s in edge.document_requests()]
        assert methods[:4] == ["GET", "POST", "GET", "PUT"]
        conditional = edge.document_requests()[3]
        assert conditional.headers.get("if-match")
    finally:
        await store.close()


async def test_the_next_page_of_a_persons_list_does_not_read_all_their_messages_again(
    cosmos_server: CosmosServer, edge: CosmosEdge
) -> None:
    """Their shared conversations are found from every message of theirs, across partitions:
    a text search reads page after page with the same filter (admin.queries), and each page
    asking again would cost those request units again."""
    store = await _open(cosmos_config(cosmos_server, endpoint=edge.endpoint))
    try:
        for index in range(3):
            conversation = f"conv-{index}"
            await store.add_message(message(conversation, 1, user_id="alice"))
            await store.apply_summary_delta(delta(conversation, "alice", messages=1))
        await store.add_message(message("conv-shared", 1, user_id="alice"))
        await store.apply_summary_delta(delta("conv-shared", "bob", messages=1))
        query = SummaryQuery(user_ids=["alice"], with_shared=True)

        def messages_read_across_partitions() -> int:
            return sum(
                "/colls/messages/docs" in seen.path
                and "x-ms-documentdb-partitionkey" not in seen.headers
                for seen in edge.requests
            )

        edge.clear()
        first = await store.list_summaries(query, 2)
        assert messages_read_across_partitions() > 0
        edge.clear()
        second = await store.list_summaries(query, 2, first.continuation)

        assert messages_read_across_partitions() == 0
        listed = {s.conversation_id for s in first.items + second.items}
        assert listed == {"conv-0", "conv-1", "conv-2", "conv-shared"}
    finally:
        await store.close()


async def test_the_services_error_message_never_reaches_the_log_not_even_as_a_cause(
    cosmos_server: CosmosServer, edge: CosmosEdge, caplog: pytest.LogCaptureFixture
) -> None:
    """An error body may quote a document, a query or an item's address: the store's error is
    its own, and a traceback logged with it (log.exception, as callers do) prints no chain to
    the SDK's. Support gets the status and the service's activity id."""
    store = await _open(cosmos_config(cosmos_server, endpoint=edge.endpoint))
    caplog.set_level(logging.INFO)
    try:
        edge.refuse_documents, edge.refusal_message = 400, "the item says CANARY-62b1"
        with pytest.raises(StoreError) as raised:
            await store.add_message(message("conv-1", 1))
    finally:
        edge.refuse_documents = 0
        await store.close()

    assert raised.value.failure == "http"
    assert "CANARY" not in "".join(traceback.format_exception(raised.value))
    logging.getLogger("test").error("as a caller logs it", exc_info=raised.value)
    logged = JsonLogFormatter().format(caplog.records[-1])
    assert "HTTP 400" in logged and "CANARY" not in logged
    assert all("CANARY" not in JsonLogFormatter().format(r) for r in caplog.records)
    [warning] = [r for r in caplog.records if r.getMessage().startswith("cosmos add_message")]
    assert getattr(warning, "cosmos_activity_id", "") == "5f0c1a2b-0000-4000-8000-000000000001"


async def test_admin_queries_are_parameterized(
    cosmos_server: CosmosServer, edge: CosmosEdge
) -> None:
    store = await _open(cosmos_config(cosmos_server, endpoint=edge.endpoint))
    try:
        await store.apply_summary_delta(delta("conv-1", title="x", tenant_id="t' OR 1=1 --"))
        page = await store.list_summaries(SummaryQuery(tenant_id="t' OR 1=1 --"), 5)
        assert [s.conversation_id for s in page.items] == ["conv-1"]
    finally:
        await store.close()


async def test_request_charges_are_summed_per_operation(cosmos_server: CosmosServer) -> None:
    store = await _open(cosmos_config(cosmos_server))
    try:
        await store.add_message(message("conv-1", 1))
        await store.add_message(message("conv-1", 1))  # 409 costs RU too
        await store.recent_messages("conv-1", 5)
        assert store.request_charges["add_message"] > 0
        # The create, the 409, and the read that tells a redelivery from the 409's own write.
        assert store.request_counts["add_message"] == 3
        assert store.request_charges["recent_messages"] > 0
    finally:
        await store.close()


# --- failures


async def test_throttling_surfaces_as_store_throttled_after_sdk_retries(
    cosmos_server: CosmosServer, edge: CosmosEdge
) -> None:
    config = cosmos_config(
        cosmos_server, endpoint=edge.endpoint, throttle_retries=3, throttle_max_wait_seconds=5
    )
    store = await _open(config)
    try:
        await store.add_message(message("conv-1", 1))
        edge.clear()
        edge.throttle_documents = True
        started = time.monotonic()
        with pytest.raises(StoreThrottled) as raised:
            await store.add_message(message("conv-1", 2, text="CONFIDENTIAL PAYLOAD"))
        assert time.monotonic() - started < 5
        # The SDK retried what the service asked for, then gave up.
        assert len(edge.document_requests()) == 1 + 3
        assert "CONFIDENTIAL" not in str(raised.value)
        assert "429" in str(raised.value)
        with pytest.raises(StoreThrottled):
            await store.recent_messages("conv-1", 5)
        edge.throttle_documents = False
        assert [m.seq for m in await store.recent_messages("conv-1", 5)] == [1]
    finally:
        await store.close()


async def test_an_unreachable_endpoint_is_a_store_error(cosmos_server: CosmosServer) -> None:
    config = cosmos_config(
        cosmos_server,
        endpoint="https://127.0.0.1:9/",
        connection_retries=0,
        connection_timeout_seconds=1,
    )
    with pytest.raises(StoreError) as raised:
        await _open(config)
    assert not isinstance(raised.value, StoreThrottled)


async def test_a_store_without_key_or_credential_refuses_to_open() -> None:
    with pytest.raises(StoreError, match="credential"):
        await CosmosStore(CosmosConfig(endpoint="https://127.0.0.1:9/")).open()


# --- auth and settings


class FakeCredential:
    """An Entra ID credential as the app would pass in (the edge: no network)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("fake-entra-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


async def test_entra_id_credential_is_used_when_no_key_is_given(
    cosmos_server: CosmosServer, edge: CosmosEdge
) -> None:
    # Containers exist (the infrastructure's job); the app only uses them.
    creator = await _open(cosmos_config(cosmos_server))
    await creator.close()
    credential = FakeCredential()
    config = cosmos_config(
        cosmos_server,
        endpoint=edge.endpoint,
        database=creator._config.database,
        key="",
        create_containers=False,
    )
    store = await _open(config, credential)
    try:
        await store.add_message(message("conv-1", 1))
    finally:
        await store.close()
    assert credential.scopes
    authorizations = {s.headers.get("authorization", "") for s in edge.document_requests()}
    assert authorizations == {"type=aad&ver=1.0&sig=fake-entra-token"}


def test_config_from_settings() -> None:
    settings = Settings(
        COSMOS_ENDPOINT="https://acct.documents.azure.com:443/",
        COSMOS_DATABASE="prod",
        COSMOS_AUDIT_CONTAINER="audit-log",
        RETENTION_DAYS=90,
    )
    config = CosmosConfig.from_settings(settings)
    assert config.endpoint == "https://acct.documents.azure.com:443"  # settings drop the "/"
    assert (config.database, config.audit_container) == ("prod", "audit-log")
    assert config.key == ""
    assert config.create_containers is False  # Entra ID: the infrastructure creates them
    assert config.verify_tls is True
    assert config.retention_seconds == 90 * 86400
    emulator = CosmosConfig.from_settings(
        Settings(COSMOS_ENDPOINT="https://127.0.0.1:8081", COSMOS_KEY="k", COSMOS_VERIFY_TLS=False)
    )
    assert (emulator.key, emulator.create_containers, emulator.verify_tls) == ("k", True, False)
    assert "k" not in repr(emulator)
