"""Running as a service: the composition root, systemd notify, metrics, webhooks, logging."""
