"""Drive agentgate with the official cognite-sdk (which gzips request bodies).

Usage: python cognite_e2e.py http://127.0.0.1:PORT
The gateway must serve the scripted agent "echo" (see tests/api/helpers.rs).
"""
import sys

from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import Token
from cognite.client.data_classes.agents import Message
from cognite.client.data_classes.agents.chat import ClientToolAction, ClientToolCall, ClientToolResult
from cognite.client.exceptions import CogniteAPIError, CogniteNotFoundError

global_config.disable_pypi_version_check = True
global_config.silence_feature_preview_warnings = True
global_config.max_retries = 0

base_url = sys.argv[1]
client = CogniteClient(
    ClientConfig(
        client_name="agentgate-e2e",
        project="sdk-proj",
        credentials=Token("dummy-token"),
        base_url=base_url,
    )
)

first = client.agents.chat(agent_external_id="echo", messages=Message("hello from the sdk"))
assert first.text == "You said: hello from the sdk [1 messages seen]", first.text
assert first.cursor and first.cursor.startswith("cv1."), first.cursor
assert first.agent_external_id == "echo"

second = client.agents.chat(
    agent_external_id="echo", messages=Message("second turn"), cursor=first.cursor
)
assert second.text == "You said: second turn [3 messages seen]", second.text
assert second.cursor != first.cursor

try:
    client.agents.chat(agent_external_id="no-such-agent", messages=Message("hi"))
    raise AssertionError("expected CogniteNotFoundError")
except CogniteNotFoundError as e:
    assert e.code == 404, e.code
    assert e.not_found == [{"externalId": "no-such-agent"}], e.not_found
    assert e.x_request_id, "the SDK read our X-Request-Id"

try:
    client.agents.chat(agent_external_id="echo", messages=Message("hi"), cursor="cv1.k1.forged")
    raise AssertionError("expected CogniteAPIError")
except CogniteAPIError as e:
    assert e.code == 400, e.code
    assert "cursor" in e.message, e.message
    assert e.extra.get("type") == "invalid_cursor", e.extra

# A client tool round trip: the agent asks the client to run `add`.
add = ClientToolAction(
    name="add",
    description="Add two numbers",
    parameters={"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
)
asked = client.agents.chat(agent_external_id="gpt", messages=Message("What is 1 + 2?"), actions=[add])
assert asked.action_calls and len(asked.action_calls) == 1, asked.dump()
call = asked.action_calls[0]
assert isinstance(call, ClientToolCall), call
assert call.name == "add" and call.arguments == {"a": 1, "b": 2}, call
answered = client.agents.chat(
    agent_external_id="gpt",
    messages=ClientToolResult(action_id=call.action_id, content=str(call.arguments["a"] + call.arguments["b"])),
    cursor=asked.cursor,
    actions=[add],
)
assert answered.text == "tools said: 3", answered.text
assert not answered.action_calls

print("ALL OK")
