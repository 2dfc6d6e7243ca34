"""An uploads service's own task code, run by Conveyor's workers (see ../README.md)."""
