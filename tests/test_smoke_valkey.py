async def test_valkey_fixture_answers_ping(redis_client):
    assert await redis_client.ping() is True
