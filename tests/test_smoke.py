from tests.conftest import ECHO, SENTIMENT


def test_register_and_call(server, client, fake):
    created = server.admin.post("/admin/v1/prompts", json=SENTIMENT)
    assert created.status_code == 201, created.text
    fake.default.content = '{"label": "positive", "score": 0.9}'
    answer = client.post("/v1/prompts/sentiment", json={"text": "great"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == {"label": "positive", "score": 0.9}
    assert server.admin.post("/admin/v1/prompts", json=ECHO).status_code == 201
