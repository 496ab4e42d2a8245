"""The fake Messages API server, driven by the real `anthropic` SDK over HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from tests.fakes.anthropic_server import FakeAnthropic, Fault, Turn, text, tool_use

MODEL = "claude-sonnet-5-5"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


def make_client(fake: FakeAnthropic, max_retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=max_retries)


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with make_client(fake) as sdk_client:
        yield sdk_client


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def stream_final(client: anthropic.Anthropic, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    with client.messages.stream(model=MODEL, max_tokens=1024, messages=messages, **kwargs) as stream:
        return stream.get_final_message()


def test_streaming_text_turn_parses_content_stop_reason_and_usage(fake, client):
    usage = {
        "input_tokens": 12,
        "output_tokens": 34,
        "cache_creation_input_tokens": 56,
        "cache_read_input_tokens": 78,
        "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 6},
    }
    fake.script("Say hello", [Turn([text("Hello, world! How are you today?")], usage=usage)])

    message = stream_final(client, [user("Say hello please")])

    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert [(b.type, b.text) for b in message.content] == [("text", "Hello, world! How are you today?")]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 12
    assert message.usage.output_tokens == 34
    assert message.usage.cache_creation_input_tokens == 56
    assert message.usage.cache_read_input_tokens == 78
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 50
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 6
    [request] = fake.requests
    assert (request.script, request.turn_index, request.attempt, request.status) == ("Say hello", 0, 1, 200)
    assert request.headers["authorization"] == "Bearer test"
    assert request.body["stream"] is True
    assert fake.violations == []


def test_stream_sends_the_documented_event_sequence(fake):
    fake.script("events", [Turn([text("abcdef"), tool_use("bash", {"cmd": "ls"})])])
    body = {"model": MODEL, "max_tokens": 5, "stream": True, "messages": [user("events")]}
    request = urllib.request.Request(
        f"{fake.base_url}/v1/messages", data=json.dumps(body).encode(), headers={"x-api-key": "k"}
    )

    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        frames = response.read().decode().split("\n\n")

    events = [frame.split("\n") for frame in frames if frame]
    names = [event_line.removeprefix("event: ") for event_line, _ in events]
    assert [json.loads(data_line.removeprefix("data: "))["type"] for _, data_line in events] == names
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    assert names.count("content_block_delta") >= 4


def test_non_streaming_turn_returns_the_whole_message(fake, client):
    fake.script("Plain", [Turn([text("Just text.")], usage={"input_tokens": 7, "output_tokens": 3})])

    message = client.messages.create(model=MODEL, max_tokens=100, messages=[user("Plain request")])

    assert message.content[0].text == "Just text."
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    assert message.usage.cache_read_input_tokens == 0
    assert fake.requests[0].headers["content-type"].startswith("application/json")


def test_tool_use_round_trip_replays_turns_by_conversation_history(fake, client):
    tool_input = {"command": "ls -la", "options": {"depth": 2, "paths": ["a", "b ü"], "dry": False}}

    def echo_tool_result(body: dict[str, Any]) -> Turn:
        result = body["messages"][-1]["content"][0]
        return Turn([text(f"{result['tool_use_id']} said {result['content']}")])

    fake.script("List files", [Turn([text("Let me look."), tool_use("bash", tool_input)]), echo_tool_result])
    messages = [user([{"type": "text", "text": "List files in the repo"}])]

    first = stream_final(client, messages)
    assert first.stop_reason == "tool_use"
    call = first.content[1]
    assert call.type == "tool_use"
    assert call.id.startswith("toolu_")
    assert (call.name, call.input) == ("bash", tool_input)

    messages += [
        {"role": "assistant", "content": first.content},
        user([{"type": "tool_result", "tool_use_id": call.id, "content": "README.md"}]),
    ]
    second = stream_final(client, messages)

    assert second.stop_reason == "end_turn"
    assert second.content[0].text == f"{call.id} said README.md"
    assert [r.turn_index for r in fake.requests_for("List files")] == [0, 1]
    assert fake.violations == []


def test_missing_tool_result_is_refused_and_recorded(fake, client):
    fake.script("Forgetful", [Turn([tool_use("bash", {"cmd": "pwd"}, id="toolu_1")]), Turn([text("x")])])
    call = {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {}}
    messages = [user("Forgetful client"), {"role": "assistant", "content": [call]}, user("I never ran it")]

    with pytest.raises(anthropic.BadRequestError) as excinfo:
        client.messages.create(model=MODEL, max_tokens=100, messages=messages)

    assert excinfo.value.type == "invalid_request_error"
    assert "messages.1: `tool_use` ids were found without `tool_result` blocks" in str(excinfo.value)
    assert len(fake.violations) == 1
    assert "toolu_1" in fake.violations[0]
    assert fake.requests[0].status == 400


def test_tool_result_without_tool_use_is_refused(fake, client):
    fake.script("Stray", [Turn([text("x")])])
    messages = [user([{"type": "text", "text": "Stray"}, {"type": "tool_result", "tool_use_id": "toolu_9"}])]

    with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
        client.messages.create(model=MODEL, max_tokens=100, messages=messages)

    assert len(fake.violations) == 1


def test_consecutive_same_role_messages_are_merged_like_the_api(fake, client):
    fake.script("Merged", [Turn([text("a")]), Turn([text("b")]), Turn([text("c")])])
    messages = [
        user("Merged"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "t", "input": {}}]},
        {"role": "assistant", "content": "thinking aloud"},
        user([{"type": "tool_result", "tool_use_id": "toolu_2", "content": "ok"}]),
        user("and one more thing"),
    ]

    message = client.messages.create(model=MODEL, max_tokens=100, messages=messages)

    assert message.content[0].text == "c"  # the turn index counts assistant messages
    assert fake.violations == []


def test_overloaded_twice_then_success_with_sdk_retries(fake):
    faults = [Fault(529, retry_after=0.01), Fault(529, retry_after=0.01)]
    fake.script("Busy", [Turn([text("Finally.")], faults=faults)])

    with make_client(fake, max_retries=2) as client:
        message = stream_final(client, [user("Busy day")])

    assert message.content[0].text == "Finally."
    log = fake.requests_for("Busy")
    assert [(r.attempt, r.status) for r in log] == [(1, 529), (2, 529), (3, 200)]
    assert [r.headers["x-stainless-retry-count"] for r in log] == ["0", "1", "2"]
    assert fake.violations == []


def test_overloaded_beyond_max_retries_raises_overloaded_error(fake):
    fake.script("Swamped", [Turn([text("never")], faults=[Fault(529, retry_after=0.01)] * 2)])

    with make_client(fake, max_retries=1) as client, pytest.raises(anthropic.OverloadedError) as excinfo:
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("Swamped")])

    assert excinfo.value.type == "overloaded_error"
    assert excinfo.value.request_id.startswith("req_")


def test_rate_limit_retry_after_is_honoured(fake):
    fake.script("Throttled", [Turn([text("ok")], faults=[Fault(429, retry_after=0.1, message="slow down")])])

    with make_client(fake, max_retries=1) as client:
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("Throttled")])

    refused, served = fake.requests_for("Throttled")
    assert (refused.status, served.status) == (429, 200)
    # The SDK's own first backoff would be 0.375-0.5 s; waiting about 0.1 s shows it used the header.
    assert 0.1 <= served.received_at - refused.received_at < 0.35


def test_error_event_mid_stream_raises_api_status_error(fake, client):
    fake.script("Flaky", [Turn([text("Recovered.")], faults=[Fault("error_event")])])

    with pytest.raises(anthropic.APIStatusError) as excinfo:
        stream_final(client, [user("Flaky stream")])

    error = excinfo.value
    assert type(error) is anthropic.APIStatusError  # the SDK does not map it to OverloadedError
    assert (error.status_code, error.type) == (200, "overloaded_error")
    # The stream had started, so the SDK did not retry; the next attempt gets the real turn.
    assert stream_final(client, [user("Flaky stream")]).content[0].text == "Recovered."
    assert [r.attempt for r in fake.requests_for("Flaky")] == [1, 2]


def test_dropped_stream_raises_remote_protocol_error(fake):
    fake.script("Cut", [Turn([text("Second try.")], faults=[Fault("drop")])])

    with make_client(fake, max_retries=2) as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            stream_final(client, [user("Cut off")])
        assert stream_final(client, [user("Cut off")]).content[0].text == "Second try."

    assert [r.attempt for r in fake.requests_for("Cut")] == [1, 2]


def test_dropped_non_streaming_reply_is_retried_by_the_sdk(fake):
    fake.script("Halved", [Turn([text("Whole.")], faults=[Fault("drop")])])

    with make_client(fake, max_retries=1) as client:
        message = client.messages.create(model=MODEL, max_tokens=10, messages=[user("Halved")])

    assert message.content[0].text == "Whole."
    assert [(r.attempt, r.status) for r in fake.requests_for("Halved")] == [(1, 200), (2, 200)]


def test_request_without_script_is_refused(fake, client):
    fake.script("Known", [Turn([text("x")])])

    with pytest.raises(anthropic.BadRequestError, match="no script matches"):
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("Unknown prompt")])

    assert fake.requests[0].script is None
    assert fake.violations == ["fake Anthropic: no script matches the first user message: 'Unknown prompt'"]


def test_turn_past_the_script_end_is_refused(fake, client):
    fake.script("Short", [Turn([text("only turn")])])
    messages = [user("Short"), {"role": "assistant", "content": "only turn"}, user("again")]

    with pytest.raises(anthropic.BadRequestError, match="has no turn 1"):
        client.messages.create(model=MODEL, max_tokens=10, messages=messages)

    assert len(fake.violations) == 1


def test_longest_matching_script_wins(fake, client):
    fake.script("Fix", [Turn([text("short match")])])
    fake.script("Fix the bug", [Turn([text("long match")])])

    message = client.messages.create(model=MODEL, max_tokens=10, messages=[user("Fix the bug in foo.py")])

    assert message.content[0].text == "long match"


def test_invalid_body_is_refused_like_the_api(fake, client):
    fake.script("Bad", [Turn([text("x")])])

    with pytest.raises(anthropic.BadRequestError, match="max_tokens: Input should be greater than"):
        client.messages.create(model=MODEL, max_tokens=0, messages=[user("Bad")])
    with pytest.raises(anthropic.BadRequestError, match='first message must use the "user" role'):
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "assistant", "content": "Bad"}])

    assert len(fake.violations) == 2


def test_outage_answers_every_request_until_cleared(fake, client):
    fake.script("During", [Turn([text("back")])])
    fake.set_outage(529)

    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("During outage")])
    with pytest.raises(anthropic.OverloadedError):
        client.messages.count_tokens(model=MODEL, messages=[user("During outage")])
    fake.set_outage(None)

    message = client.messages.create(model=MODEL, max_tokens=10, messages=[user("During")])
    assert message.content[0].text == "back"
    assert [r.status for r in fake.requests] == [529, 529, 200]
    assert fake.violations == []


def test_count_tokens_estimates_from_the_body_size(fake, client):
    result = client.messages.count_tokens(model=MODEL, system="Be brief.", messages=[user("x" * 400)])

    assert 100 <= result.input_tokens <= 130


def test_request_without_credentials_gets_401(fake):
    body = json.dumps({"model": MODEL, "max_tokens": 5, "messages": [user("hi")]}).encode()
    request = urllib.request.Request(f"{fake.base_url}/v1/messages", data=body, method="POST")

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)

    error = json.loads(excinfo.value.read())
    assert excinfo.value.code == 401
    assert error["error"]["type"] == "authentication_error"
    assert excinfo.value.headers["request-id"].startswith("req_")


def test_x_api_key_and_beta_query_are_accepted(fake):
    fake.script("Legacy", [Turn([text("fine")])])
    body = json.dumps({"model": MODEL, "max_tokens": 5, "messages": [user("Legacy client")]}).encode()
    request = urllib.request.Request(
        f"{fake.base_url}/v1/messages?beta=true", data=body, method="POST", headers={"x-api-key": "k"}
    )

    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["content"] == [{"type": "text", "text": "fine"}]

    assert (fake.requests[0].path, fake.requests[0].query) == ("/v1/messages", "beta=true")


def test_reset_forgets_scripts_requests_violations_and_attempts(fake, client):
    fake.script("Again", [Turn([text("ok")], faults=[Fault(500)])])
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("Again")])

    fake.reset()
    assert (fake.requests, fake.violations) == ([], [])
    with pytest.raises(anthropic.BadRequestError, match="no script"):
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("Again")])
    fake.reset()
    fake.script("Again", [Turn([text("ok")], faults=[Fault(500)])])
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("Again")])


def test_stop_is_prompt_while_a_stream_hangs(fake, client):
    fake.script("Hang", [Turn([text("never")], faults=[Fault("drop", hang_s=30)])])
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            stream_final(client, [user("Hang forever")])
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    while not fake.requests:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    reader.join(timeout=5)

    assert time.monotonic() - started < 1
    assert not reader.is_alive()
    assert isinstance(errors[0], httpx2.RemoteProtocolError)
