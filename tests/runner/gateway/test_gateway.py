"""The model gateway between the official SDKs and the scripted model server: real HTTP,
real SSE, the upstream requiring the real key the client never has."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from app.llm.config import ModelConfig
from app.llm.types import Usage
from runner.gateway import OAUTH_BETA, Budget, Upstream
from tests.runner.gateway.conftest import DUMMY_KEY, REAL_KEY, Serve, StartGateway

USAGE = {"input": 1000, "cached": 2000, "cache_write": 400, "output": 300}
ANTHROPIC_COST = Decimal("0.0032")  # (1000*1 + 2000*0.1 + 400*1.25 + 300*5) / 1M
OPENAI_COST = Decimal("0.0031")  # OpenAI reports no cache writes: 1400 uncached
TURN: dict[str, Any] = {"text": "hello through the gateway", "usage": USAGE}
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def claude(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=DUMMY_KEY, base_url=url, max_retries=0)


def oai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=DUMMY_KEY, base_url=url + "/v1", max_retries=0)


async def raw_request(url: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are (absolute-form targets, CONNECT) and read one reply."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


# --- pass-through and metering, all three protocols ---------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_through_the_gateway(
    serve: Serve, start_gateway: StartGateway, stream: bool
) -> None:
    server = serve([{"turns": [TURN] * 2}])
    gateway, url = await start_gateway("anthropic")
    async with claude(url) as client:
        if stream:
            async with client.messages.stream(
                model="priced-model", max_tokens=50, messages=MESSAGES
            ) as events:
                reply = await events.get_final_message()
        else:
            reply = await client.messages.create(
                model="priced-model", max_tokens=50, messages=MESSAGES
            )
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "hello through the gateway"
    assert reply.usage.cache_read_input_tokens == 2000
    [seen] = server.requests
    assert seen.status == 200 and seen.stream is stream
    assert seen.headers["x-api-key"] == REAL_KEY and "authorization" not in seen.headers
    tally = gateway.tally
    assert (tally.calls, tally.errors, tally.refused) == (1, 0, 0)
    assert tally.usage == Usage(uncached_input=1000, cache_read=2000, cache_write=400, output=300)
    assert tally.cost_usd == ANTHROPIC_COST and gateway.stop_reason is None


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_through_the_gateway(
    serve: Serve, start_gateway: StartGateway, stream: bool
) -> None:
    server = serve(
        [{"turns": [{**TURN, "reasoning": "think", "usage": {**USAGE, "reasoning": 50}}]}]
    )
    gateway, url = await start_gateway("openai-responses")
    async with oai(url) as client:
        if stream:
            async with client.responses.stream(model="priced-model", input="hi") as events:
                reply = await events.get_final_response()
        else:
            reply = await client.responses.create(model="priced-model", input="hi")
    assert reply.output_text == "hello through the gateway"
    assert server.requests[0].headers["authorization"] == f"Bearer {REAL_KEY}"
    tally = gateway.tally
    assert tally.calls == 1
    assert tally.usage == Usage(uncached_input=1400, cache_read=2000, output=300, reasoning=50)
    assert tally.cost_usd == OPENAI_COST


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_through_the_gateway(
    serve: Serve, start_gateway: StartGateway, stream: bool
) -> None:
    server = serve([{"turns": [TURN]}])
    gateway, url = await start_gateway("openai-chat")
    async with oai(url) as client:
        if stream:
            # No stream_options: the gateway asks for the usage chunk itself.
            chunks = await client.chat.completions.create(
                model="priced-model", messages=MESSAGES, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        else:
            reply = await client.chat.completions.create(model="priced-model", messages=MESSAGES)
            text = reply.choices[0].message.content or ""
    assert text == "hello through the gateway"
    if stream:
        assert server.requests[0].body["stream_options"] == {"include_usage": True}
    assert gateway.tally.usage == Usage(uncached_input=1400, cache_read=2000, output=300)
    assert gateway.tally.cost_usd == OPENAI_COST


async def test_unknown_price_stays_unknown(serve: Serve, start_gateway: StartGateway) -> None:
    serve([{"turns": [TURN, TURN]}])
    gateway, url = await start_gateway("anthropic")
    async with claude(url) as client:
        await client.messages.create(model="unpriced-model", max_tokens=5, messages=MESSAGES)
    tally = gateway.tally
    assert tally.cost_usd is None and tally.known_cost_usd == 0 and tally.unpriced == 1
    assert tally.usage.output == 300


async def test_count_tokens_and_models_pass_but_are_not_rounds(
    serve: Serve, start_gateway: StartGateway
) -> None:
    server = serve({"rules": [], "models": ["priced-model"]})
    gateway, url = await start_gateway("anthropic", Budget(max_rounds=1))
    async with claude(url) as client:
        counted = await client.messages.count_tokens(model="priced-model", messages=MESSAGES)
        listed = [m.id async for m in client.models.list()]
        assert (await client.models.retrieve("priced-model")).id == "priced-model"
    assert counted.input_tokens > 0 and listed == ["priced-model"]
    assert [r.path for r in server.requests] == [
        "/v1/messages/count_tokens",
        "/v1/models",
        "/v1/models/priced-model",
    ]
    assert gateway.tally.calls == 0 and gateway.stop_reason is None


# --- credentials ----------------------------------------------------------------------------


async def test_subscription_token_goes_as_bearer_with_the_oauth_beta(
    serve: Serve, start_gateway: StartGateway
) -> None:
    server = serve({"rules": [{"turns": [TURN]}], "api_key": "sk-ant-oat01-subscription"})
    _, url = await start_gateway("anthropic", oauth_token="sk-ant-oat01-subscription")
    async with claude(url) as client:
        await client.messages.create(
            model="m",
            max_tokens=5,
            messages=MESSAGES,
            extra_headers={"anthropic-beta": "claude-code-20250219"},
        )
    headers = server.requests[0].headers
    assert headers["authorization"] == "Bearer sk-ant-oat01-subscription"
    assert "x-api-key" not in headers
    assert headers["anthropic-beta"] == f"claude-code-20250219,{OAUTH_BETA}"


async def test_the_upstream_error_text_never_carries_the_key(
    serve: Serve, start_gateway: StartGateway
) -> None:
    fault = {"kind": "rate_limit", "retry_after": 3, "message": f"slow down, {REAL_KEY}!"}
    serve([{"turns": [{"text": "x", "fault": fault}]}])
    gateway, url = await start_gateway("openai-chat")
    async with oai(url) as client:
        with pytest.raises(openai.RateLimitError) as err:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert err.value.status_code == 429
    assert err.value.response.headers["retry-after"] == "3"
    assert REAL_KEY not in err.value.response.text
    assert "slow down, [redacted]!" in err.value.message
    assert gateway.tally.errors == 1 and gateway.tally.calls == 0


# --- refusals ----------------------------------------------------------------------------


async def test_other_paths_hosts_and_connect_are_refused(
    serve: Serve, start_gateway: StartGateway
) -> None:
    server = serve([{"turns": [TURN]}])
    gateway, url = await start_gateway("anthropic")
    async with httpx.AsyncClient(base_url=url) as http:
        other_protocol = await http.post("/v1/chat/completions", json={})
        files = await http.get("/v1/files")
        wrong_method = await http.get("/v1/messages")
        probe = await http.head("/")
        traversal = await http.post("/v1/messages/../../admin", json={})
    assert other_protocol.status_code == 404
    error = other_protocol.json()["error"]
    assert error["type"] == "not_found_error"
    assert "not an allowed anthropic path" in error["message"]
    assert "/v1/messages" in error["message"]
    assert files.status_code == 404 and wrong_method.status_code == 405
    assert probe.status_code == 404 and probe.content == b""
    assert traversal.status_code == 404

    status, body = await raw_request(
        url,
        b"POST http://api.evil.example/v1/messages HTTP/1.1\r\nHost: api.evil.example\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    )
    assert status == 403 and "api.evil.example" in body["error"]["message"]
    assert body["error"]["type"] == "permission_error"
    status, body = await raw_request(
        url, b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n"
    )
    assert status == 405 and "CONNECT" in body["error"]["message"]
    assert server.requests == []
    assert gateway.tally.refused == 7

    # Absolute-form naming loopback is just this gateway: forwarded.
    payload = json.dumps({"model": "m", "max_tokens": 5, "messages": MESSAGES}).encode()
    status, body = await raw_request(
        url,
        b"POST " + url.encode() + b"/v1/messages HTTP/1.1\r\nHost: x\r\n"
        b"anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload,
    )
    assert status == 200 and body["content"][0]["text"] == "hello through the gateway"


async def test_a_pinned_model_refuses_others(serve: Serve, start_gateway: StartGateway) -> None:
    server = serve([{"turns": [TURN]}])
    _, url = await start_gateway("openai-responses", model="priced-model")
    async with oai(url) as client:
        with pytest.raises(openai.BadRequestError) as err:
            await client.responses.create(model="expensive-model", input="hi")
        assert "may only use model 'priced-model'" in err.value.message
        await client.responses.create(model="priced-model", input="hi")
    assert [r.model for r in server.requests] == ["priced-model"]


# --- budgets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "named"),
    [
        (Budget(max_rounds=2), "budget: max_rounds 2"),
        (Budget(max_tokens=5000), "budget: max_tokens 5,000"),
        (Budget(max_cost_usd=Decimal("0.005")), "budget: max_cost_usd $0.005"),
    ],
)
async def test_a_budget_ends_the_attempt(
    serve: Serve, start_gateway: StartGateway, budget: Budget, named: str
) -> None:
    server = serve([{"turns": [TURN] * 4}])
    stops: list[str] = []
    gateway, url = await start_gateway("anthropic", budget, on_stop=stops.append)
    replies = []
    async with claude(url) as client:
        for _ in range(2):  # 3700 tokens, $0.0032 each: both budgets are crossed by the 2nd
            replies.append(
                await client.messages.create(model="priced-model", max_tokens=5, messages=MESSAGES)
            )
        with pytest.raises(anthropic.APIStatusError) as err:
            await client.messages.create(model="priced-model", max_tokens=5, messages=MESSAGES)
    assert len(replies) == 2 and len(server.requests) == 2  # the crossing call completed
    assert err.value.status_code == 402 and named in err.value.message
    assert gateway.stop_reason is not None and gateway.stop_reason.startswith(named)
    assert gateway.stopped.is_set() and stops == [gateway.stop_reason]
    assert gateway.tally.calls == 2 and gateway.tally.refused == 1


# --- broken upstreams --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["malformed", "stream_cut"])
async def test_a_broken_stream_ends_in_a_provider_error(
    serve: Serve, start_gateway: StartGateway, kind: str
) -> None:
    serve([{"turns": [{**TURN, "fault": {"kind": kind, "after": 3, "times": 1}}]}])
    gateway, url = await start_gateway("anthropic")
    async with claude(url) as client:
        with pytest.raises(anthropic.APIStatusError) as err:
            async with client.messages.stream(
                model="priced-model", max_tokens=5, messages=MESSAGES
            ) as events:
                await events.get_final_message()
        assert "baro gateway: upstream" in str(err.value.body)
        again = await client.messages.create(model="priced-model", max_tokens=5, messages=MESSAGES)
    assert again.content[0].type == "text"
    tally = gateway.tally
    assert (tally.calls, tally.errors) == (1, 1)
    # message_start's input counts were seen before the break and are billed.
    assert tally.usage.uncached_input == 2000


@pytest.mark.parametrize("protocol", ["openai-responses", "openai-chat"])
async def test_openai_streams_cut_short(
    serve: Serve, start_gateway: StartGateway, protocol: Any
) -> None:
    serve([{"turns": [{**TURN, "fault": {"kind": "malformed", "after": 2}}]}])
    gateway, url = await start_gateway(protocol)
    path = "/v1/responses" if protocol == "openai-responses" else "/v1/chat/completions"
    body = {"model": "m", "stream": True, "input": "hi", "messages": MESSAGES}
    async with httpx.AsyncClient(base_url=url) as http:
        reply = await http.post(path, json=body, headers={"authorization": f"Bearer {DUMMY_KEY}"})
    frames = [f for f in reply.text.split("\n\n") if f]
    assert len(frames) == 3
    last = json.loads(frames[-1].split("data: ", 1)[1])
    message = (last.get("response") or last)["error"]["message"]
    assert message.startswith("baro gateway: upstream malformed stream")
    assert gateway.tally.errors == 1


async def test_upstream_stream_error_event_is_passed_and_counted(
    serve: Serve, start_gateway: StartGateway
) -> None:
    serve([{"turns": [{**TURN, "fault": {"kind": "stream_error", "after": 2}}]}])
    gateway, url = await start_gateway("anthropic")
    async with claude(url) as client:
        with pytest.raises(anthropic.APIStatusError) as err:
            async with client.messages.stream(
                model="priced-model", max_tokens=5, messages=MESSAGES
            ) as events:
                await events.get_final_message()
    assert "overloaded_error" in str(err.value.body)
    assert gateway.tally.errors == 1 and gateway.tally.calls == 0


async def test_an_unreachable_upstream_is_a_502(start_gateway: StartGateway) -> None:
    gateway, url = await start_gateway("openai-chat", base_url="http://127.0.0.1:9")
    async with oai(url) as client:
        for _ in range(2):  # and the gateway keeps serving
            with pytest.raises(openai.InternalServerError) as err:
                await client.chat.completions.create(model="m", messages=MESSAGES)
            assert err.value.status_code == 502
            assert "the model endpoint failed" in err.value.message
    assert gateway.tally.errors == 2


async def test_unix_socket(serve: Serve, start_gateway: StartGateway, tmp_path: Path) -> None:
    serve([{"turns": [TURN]}])
    gateway, _ = await start_gateway("anthropic")
    socket_path = tmp_path / "gw.sock"
    await gateway.start_unix(socket_path)
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:1") as http:
        reply = await http.post(
            "/v1/messages",
            json={"model": "priced-model", "max_tokens": 5, "messages": MESSAGES},
            headers={"x-api-key": DUMMY_KEY, "anthropic-version": "2023-06-01"},
        )
    assert reply.status_code == 200 and gateway.tally.calls == 1


async def test_parallel_calls_cannot_overshoot_the_rounds_budget(
    serve: Serve, start_gateway: StartGateway
) -> None:
    server = serve([{"turns": [{**TURN, "latency": 2.0}]}])
    gateway, url = await start_gateway("openai-chat", Budget(max_rounds=1))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def call() -> httpx.Response:
            return await http.post(
                "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
            )

        first, second = await asyncio.gather(call(), call())
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 429]  # the second waited for the first's round: retry
        assert gateway.stop_reason is None
        third = await call()
    assert third.status_code == 402 and "max_rounds 1" in third.json()["error"]["message"]
    assert len(server.requests) == 1 and gateway.stop_reason is not None


async def test_a_client_leaving_mid_stream_is_still_billed(
    serve: Serve, start_gateway: StartGateway
) -> None:
    serve([{"turns": [{"text": "word " * 20_000, "usage": USAGE}] * 2}])
    gateway, url = await start_gateway("anthropic")
    body = {"model": "priced-model", "max_tokens": 5, "stream": True, "messages": MESSAGES}
    headers = {"x-api-key": DUMMY_KEY, "anthropic-version": "2023-06-01"}
    async with (
        httpx.AsyncClient(base_url=url) as http,
        http.stream("POST", "/v1/messages", json=body, headers=headers) as reply,
    ):
        async for _ in reply.aiter_raw():
            break  # leave after the first bytes
    async with claude(url) as client:
        done = await client.messages.create(model="priced-model", max_tokens=5, messages=MESSAGES)
    assert done.content[0].type == "text"
    for _ in range(100):  # the abandoned exchange is accounted when its relay notices
        if gateway.tally.calls + gateway.tally.errors == 2:
            break
        await asyncio.sleep(0.05)
    assert gateway.tally.calls + gateway.tally.errors == 2
    assert gateway.tally.usage.uncached_input == 2000


def test_upstream_for_a_configured_model() -> None:
    config = ModelConfig(
        name="sonnet",
        protocol="anthropic",
        base_url="https://api.anthropic.com",
        model_id="claude-sonnet-5-5-20261101",
        price_key="claude-sonnet-5-5",
        api_key_env="ANTHROPIC_API_KEY",
    )
    upstream = Upstream.for_model(config, "sk-ant-oat01-x", subscription=True)
    assert upstream.model == "claude-sonnet-5-5-20261101"
    assert upstream.price_key == "claude-sonnet-5-5"
    assert upstream.url("/v1/messages", "beta=true") == (
        "https://api.anthropic.com/v1/messages?beta=true"
    )
    assert upstream.credential_headers(None)["anthropic-beta"] == OAUTH_BETA
    openai_up = Upstream("openai-chat", "https://api.openai.com/v1/", api_key="k")
    assert openai_up.url("/v1/chat/completions", "") == "https://api.openai.com/v1/chat/completions"
    with pytest.raises(ValueError, match="subscription"):
        Upstream("openai-chat", "https://x", oauth_token="t")


def test_the_secret_is_not_in_the_upstreams_repr() -> None:
    assert REAL_KEY not in repr(Upstream("anthropic", "https://x", api_key=REAL_KEY))
