"""Drive agentgate with the real quantcdn-client (4.8.0, the version on PyPI).

Usage: python quant_e2e.py http://127.0.0.1:PORT
The gateway must serve the scripted agent "echo" (see tests/api/helpers.rs).
"""
import sys

import quantcdn
from quantcdn.exceptions import NotFoundException
from quantcdn.models.chat_with_ai_agent_request import ChatWithAIAgentRequest
from quantcdn.models.create_ai_session_request import CreateAISessionRequest

base_url = sys.argv[1]
cfg = quantcdn.Configuration(host=base_url, access_token="dummy-token")
with quantcdn.ApiClient(cfg) as api:
    agents = quantcdn.AIAgentsApi(api)
    sessions = quantcdn.AISessionsApi(api)

    r1 = agents.chat_with_ai_agent("acme", "echo", ChatWithAIAgentRequest(message="Hello", user_id="u1"))
    assert r1.session_id, r1
    assert r1.response.text == "You said: Hello [1 messages seen]", r1.response.text
    assert r1.response.stop_reason == "end_turn"
    assert r1.response.usage.input_tokens > 0 and r1.response.usage.output_tokens > 0

    r2 = agents.chat_with_ai_agent(
        "acme", "echo", ChatWithAIAgentRequest(message="And again", session_id=r1.session_id, user_id="u1")
    )
    assert r2.session_id == r1.session_id
    assert r2.response.text == "You said: And again [3 messages seen]", r2.response.text

    got = sessions.get_ai_session("acme", r1.session_id)
    assert got.id == r1.session_id
    assert got.title == "Hello", got.title
    assert got.model == "scripted-1"
    assert [m["role"] for m in got.messages] == ["user", "assistant", "user", "assistant"], got.messages
    assert got.messages[2]["content"] == "And again"
    assert got.created_at is not None

    listed = sessions.list_ai_sessions("acme", user_id="u1", limit=10)
    assert [s.id for s in listed] == [r1.session_id], listed
    assert listed[0].updated_at >= listed[0].created_at
    assert sessions.list_ai_sessions("acme", user_id="somebody-else") == []

    created = sessions.create_ai_session(
        "acme", CreateAISessionRequest(user_id="u2", initial_messages=[{"role": "user", "content": "Seeded"}])
    )
    assert created.session_id and created.status == "active"
    r3 = agents.chat_with_ai_agent(
        "acme", "echo", ChatWithAIAgentRequest(message="Go on", session_id=created.session_id, user_id="u2")
    )
    assert r3.response.text == "You said: Go on [2 messages seen]", r3.response.text

    try:
        agents.chat_with_ai_agent(
            "acme", "echo", ChatWithAIAgentRequest(message="Hijack", session_id=created.session_id, user_id="u1")
        )
        raise AssertionError("expected NotFoundException")
    except NotFoundException as e:
        assert e.status == 404
        assert "session_not_found" in e.body, e.body

print("ALL OK")
