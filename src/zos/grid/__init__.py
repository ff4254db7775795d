"""A whole grid on one machine: NATS, the registry, a hub and nodes (`zos grid up`)."""
