"""RabbitMQ: how work is handed out. PostgreSQL, not the broker, is the source of truth."""
