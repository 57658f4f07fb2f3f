"""Where the service keeps things: the SQL tables (events, inquiries, users, history) and the Redis queue."""
