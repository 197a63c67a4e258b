"""What wires a process together: its services, workers, leader election and clock."""
