"""Update compression: which values of a client's update are sent, and how they are encoded."""
