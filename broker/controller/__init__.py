"""The controller: election, broker liveness, leader election, topic lifecycle."""
