"""The node agent: registration, heartbeat, the provision engine and its bus API."""
