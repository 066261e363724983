"""Drive agentgate with the official cognite-sdk (which gzips request bodies).

Usage: python cognite_e2e.py http://127.0.0.1:PORT
The gateway must serve the scripted agent "echo" (see tests/api/helpers.rs).
"""
import sys

from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import Token
from cognite.client.data_classes.agents import Message
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

print("ALL OK")
