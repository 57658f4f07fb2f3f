"""RQ job entry points and the pure logic they apply."""
