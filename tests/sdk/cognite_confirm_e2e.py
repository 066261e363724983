"""Tool confirmations with the official cognite-sdk: ALLOW runs the tool, DENY refuses it.

Usage: python cognite_confirm_e2e.py http://127.0.0.1:PORT
The gateway serves agent "tooly" whose model asks for the confirm-only tool lookup_order.
"""
import sys

from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import Token
from cognite.client.data_classes.agents import Message
from cognite.client.data_classes.agents.chat import ToolConfirmationCall, ToolConfirmationResult

global_config.disable_pypi_version_check = True
global_config.silence_feature_preview_warnings = True
global_config.max_retries = 0

client = CogniteClient(
    ClientConfig(client_name="agentgate-e2e", project="p", credentials=Token("t"), base_url=sys.argv[1])
)

for status, expected in [("ALLOW", "tools said: order at /orders/7"), ("DENY", "tools said: the user refused to run this tool")]:
    asked = client.agents.chat(agent_external_id="tooly", messages=Message("Where is order 7?"))
    assert asked.action_calls and len(asked.action_calls) == 1, asked.dump()
    call = asked.action_calls[0]
    assert isinstance(call, ToolConfirmationCall), call
    assert call.tool_name == "lookup_order" and call.tool_arguments == {"order_id": "7"}, call
    assert call.tool_type == "callRestApi"
    done = client.agents.chat(
        agent_external_id="tooly",
        messages=ToolConfirmationResult(action_id=call.action_id, status=status),
        cursor=asked.cursor,
    )
    assert done.text == expected, (status, done.text)

print("ALL OK")
