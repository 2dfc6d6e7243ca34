"""The worker: runs tasks handed out through RabbitMQ."""
